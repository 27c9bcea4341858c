"""Every message that travels on the bus, typed and versioned.

Each message carries `type` (its name) and `v` (its schema version); `decode()` is the one way in
(`base`). The modules, by idea:
- `events`: client events (`ClientEvent`), exactly what the gateway forwards on the event
  WebSocket, and the client's commands;
- `errors`: the error answer to a request (`RpcError`);
- `claims`, `asr`, `turns`, `llm`, `tts`: claims, streams and control between the services;
- `agents`: agents and sessions, the session service's RPC and its records.

Import from here: `from services.common.messages import X`.
"""

from .agents import (
    DEFAULT_SYSTEM_PROMPT,
    AgentConfig,
    AgentRecord,
    Authorize,
    CreateAgent,
    CreateSession,
    EndSession,
    GetAgent,
    GetMessages,
    HistoryMessage,
    MessageList,
    Ok,
    ResumeSession,
    SessionGrant,
    SessionInfo,
    Summary,
)
from .asr import (
    MAX_HOT_WORDS,
    MAX_HOT_WORDS_CHARS,
    AsrClaim,
    AsrEnd,
    AsrResult,
    HotWord,
    fits_prompt,
)
from .base import (
    SCHEMA_VERSION,
    BadMessage,
    Message,
    decode,
    field_errors,
    now_ms,
)
from .claims import (
    ClaimAck,
    WorkClaimed,
)
from .errors import (
    RpcError,
)
from .events import (
    MAX_TEXT_CHARS,
    AgentState,
    AgentStateName,
    ClientCommand,
    ClientEvent,
    ErrorEvent,
    ReplyDelta,
    ReplyDone,
    TranscriptFinal,
    TranscriptPartial,
    TurnMetrics,
    UserInterrupt,
    UserText,
)
from .llm import (
    ChatMessage,
    LLMDelta,
    LLMDone,
    LLMError,
    LLMOut,
    LLMParams,
    LLMRequest,
)
from .tts import (
    TTSDone,
    TTSOut,
    TTSRequest,
    TTSSegment,
    TTSText,
)
from .turns import (
    Interrupt,
    InterruptReason,
    PlaybackDone,
    PlaybackEvent,
    PlaybackStarted,
    TurnAccepted,
    TurnConfirmed,
    TurnPrefill,
    TurnSubmit,
)

__all__ = [
    "SCHEMA_VERSION",
    "now_ms",
    "BadMessage",
    "Message",
    "decode",
    "field_errors",
    "RpcError",
    "AgentStateName",
    "AgentState",
    "TranscriptPartial",
    "TranscriptFinal",
    "ReplyDelta",
    "ReplyDone",
    "TurnMetrics",
    "ErrorEvent",
    "ClientEvent",
    "MAX_TEXT_CHARS",
    "UserText",
    "UserInterrupt",
    "ClientCommand",
    "ClaimAck",
    "WorkClaimed",
    "MAX_HOT_WORDS",
    "MAX_HOT_WORDS_CHARS",
    "HotWord",
    "fits_prompt",
    "AsrClaim",
    "AsrEnd",
    "AsrResult",
    "TurnSubmit",
    "TurnPrefill",
    "TurnAccepted",
    "PlaybackStarted",
    "PlaybackDone",
    "TurnConfirmed",
    "PlaybackEvent",
    "InterruptReason",
    "Interrupt",
    "ChatMessage",
    "LLMParams",
    "LLMRequest",
    "LLMDelta",
    "LLMDone",
    "LLMError",
    "LLMOut",
    "TTSRequest",
    "TTSText",
    "TTSSegment",
    "TTSDone",
    "TTSOut",
    "DEFAULT_SYSTEM_PROMPT",
    "AgentConfig",
    "CreateAgent",
    "AgentRecord",
    "GetAgent",
    "CreateSession",
    "ResumeSession",
    "SessionGrant",
    "Authorize",
    "SessionInfo",
    "EndSession",
    "GetMessages",
    "HistoryMessage",
    "Summary",
    "MessageList",
    "Ok",
]
