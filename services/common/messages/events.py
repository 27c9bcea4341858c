"""Client events: exactly what the gateway forwards on the event WebSocket (server -> client),
also published on `va.events.{sid}`; and the client's commands (client -> server).

The gateway decodes the events it forwards with `ClientEvent` too: it tracks the turn in flight
from them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Message
from .tools import ToolCallEvent, ToolResultEvent

AgentStateName = Literal["listening", "thinking", "speaking"]


class AgentState(Message):
    type: Literal["agent.state"] = "agent.state"
    state: AgentStateName
    turn_id: str | None = None


# While a turn waits for a replica, `turn.waiting` is sent this often (the client's notice; the
# gateway's sign that the turn is alive).
WAITING_EVERY_S = 5.0


class TurnWaiting(Message):
    """The turn waits for a replica of `stage` (none is up, or all are busy) for at most
    `deadline_s` more; then it fails with `turn_failed` (session, llm) or goes on in text
    (tts)."""

    type: Literal["turn.waiting"] = "turn.waiting"
    turn_id: str
    stage: Literal["session", "llm", "tts"]
    deadline_s: float


class TranscriptPartial(Message):
    type: Literal["transcript.partial"] = "transcript.partial"
    turn_id: str
    text: str


class TranscriptFinal(Message):
    type: Literal["transcript.final"] = "transcript.final"
    turn_id: str
    text: str
    source: Literal["voice", "text"]


class ReplyDelta(Message):
    type: Literal["reply.delta"] = "reply.delta"
    turn_id: str
    reply_id: str
    text: str


class ReplyDone(Message):
    type: Literal["reply.done"] = "reply.done"
    turn_id: str
    reply_id: str
    text: str
    spoken_text: str
    interrupted: bool = False
    # The reply's audio held paused while it played (gateway's playback.done): in all, the
    # longest pause, how many. 0 for a text-only reply.
    paused_ms: float = 0.0
    longest_pause_ms: float = 0.0
    pauses: int = 0


class TurnMetrics(Message):
    """Milliseconds per stage, as far as known. Absent keys were not measured for this turn."""

    type: Literal["turn.metrics"] = "turn.metrics"
    turn_id: str
    reply_id: str | None = None
    source: Literal["voice", "text", "agent"] | None = None
    end_of_turn_ms: float | None = None  # end of speech -> end of turn confirmed (VAD silence)
    asr_ms: float | None = None  # final ASR pass duration
    # end of turn confirmed -> final text available: what ASR adds to the path (0 when the
    # speculative pass finished inside the end-of-turn silence)
    asr_wait_ms: float | None = None
    llm_first_token_ms: float | None = None  # LLM request -> first token
    llm_tokens_per_s: float | None = None
    tts_first_audio_ms: float | None = None  # first clause sent to TTS -> first audio out
    first_audio_ms: float | None = None  # end of speech (or text received) -> first audio sent
    first_delta_ms: float | None = None  # end of speech (or text received) -> first reply.delta
    total_ms: float | None = None


class SessionEnded(Message):
    """The session has ended (`reason`: the agent ended the conversation, or a client did);
    its tokens no longer work."""

    type: Literal["session.ended"] = "session.ended"
    reason: str


class ErrorEvent(Message):
    type: Literal["error"] = "error"
    code: str  # an ErrorCode
    message: str
    turn_id: str | None = None


ClientEvent = Annotated[
    AgentState
    | TurnWaiting
    | TranscriptPartial
    | TranscriptFinal
    | ReplyDelta
    | ReplyDone
    | TurnMetrics
    | ToolCallEvent
    | ToolResultEvent
    | SessionEnded
    | ErrorEvent,
    Field(discriminator="type"),
]


# Client -> server on the WebSocket.
class UserText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["user.text"]
    # No upper bound here: the gateway's `max_text_chars` setting is the one limit (an over-long
    # text is answered `text_too_long`), and the event socket's message size bounds it too.
    text: str = Field(min_length=1)


class UserInterrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["interrupt"]


ClientCommand = Annotated[UserText | UserInterrupt, Field(discriminator="type")]
