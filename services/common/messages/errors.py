"""Error codes, and the error answer to a bus request.

Every `code` the services send lives in `ErrorCode`: in an `RpcError` (a bus answer), an
`ErrorEvent` (to the client), an `LLMError`, and the HTTP API's error bodies. The codes are part
of the public interface: members are only ever added. The `code` fields stay plain strings, so a
consumer still reads a code a newer replica added.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from .base import Message


class ErrorCode(StrEnum):
    # -- any bus request ------------------------------------------------------------------------
    BAD_MESSAGE = "bad_message"  # the request did not decode
    INTERNAL = "internal"  # the handler failed
    BUSY = "busy"  # a replica at capacity refused a claim: ask again (another replica)
    # -- the session service's RPC (and the HTTP API, which passes them on) ----------------------
    UNKNOWN_METHOD = "unknown_method"
    BAD_REQUEST = "bad_request"  # also a client command that is not valid
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_ENDED = "session_ended"
    AGENT_NOT_FOUND = "agent_not_found"
    TOKEN_EXPIRED = "token_expired"
    INVALID_TOKEN = "invalid_token"
    FORBIDDEN = "forbidden"  # a token of another session
    # -- an utterance on its asr replica ----------------------------------------------------------
    SPEECH_RESUMED = "speech_resumed"  # a peek's pass was dropped: the user spoke on
    # -- the LLM's stream -----------------------------------------------------------------------
    LLM_TIMEOUT = "llm_timeout"
    LLM_FAILED = "llm_failed"
    # -- client events (`error`) ----------------------------------------------------------------
    TURN_FAILED = "turn_failed"  # the turn ended without its reply; the next turn works
    LLM_UNAVAILABLE = "llm_unavailable"  # the apology was spoken instead of a reply
    TTS_UNAVAILABLE = "tts_unavailable"  # the reply is text only
    TTS_FAILED = "tts_failed"
    TOOLS_UNSUPPORTED = "tools_unsupported"  # the model cannot call the agent's tools
    RATE_LIMITED = "rate_limited"  # also HTTP 429
    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_JSON = "invalid_json"
    TEXT_TOO_LONG = "text_too_long"
    UNAUTHORIZED = "unauthorized"  # the event socket refused without a code of its own
    # -- the HTTP API ---------------------------------------------------------------------------
    UNAVAILABLE = "unavailable"  # the session service is not answering
    MISSING_TOKEN = "missing_token"
    INVALID_API_KEY = "invalid_api_key"
    BAD_SDP = "bad_sdp"
    SDP_TOO_LARGE = "sdp_too_large"
    ERROR = "error"  # an HTTP error without a code of its own


class RpcError(Message):
    type: Literal["rpc.error"] = "rpc.error"
    code: str  # an ErrorCode
    message: str
    status: int = 400
    details: list[dict[str, Any]] | None = None
