"""Every message that travels on the bus, typed and versioned.

Each message carries `type` (its name) and `v` (its schema version). Following NATS ADR-2, a
version only ever adds optional fields; a consumer ignores fields it does not know. Decoding goes
through `decode()`, which raises `BadMessage` (never a pydantic or JSON error) so a handler can
answer or drop one bad message and keep running.

Two families live here:
- client events (`ClientEvent`): exactly what the gateway forwards on the event WebSocket;
- internal messages: claims, streams and control between the services.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

SCHEMA_VERSION = 1


def now_ms() -> float:
    """Wall-clock milliseconds, comparable across processes on one machine (or NTP-synced hosts)."""
    return time.time() * 1000.0


class BadMessage(ValueError):
    """A payload that is not a valid message of the expected kind."""


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


# ============================================================================================
# Client events (server -> client on the WebSocket; also published on va.events.{sid})
# ============================================================================================
AgentStateName = Literal["listening", "thinking", "speaking"]


class AgentState(Message):
    type: Literal["agent.state"] = "agent.state"
    state: AgentStateName
    turn_id: str | None = None


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


class TurnMetrics(Message):
    """Milliseconds per stage, as far as known. Absent keys were not measured for this turn."""

    type: Literal["turn.metrics"] = "turn.metrics"
    turn_id: str
    reply_id: str | None = None
    source: Literal["voice", "text"] | None = None
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


class ErrorEvent(Message):
    type: Literal["error"] = "error"
    code: str
    message: str
    turn_id: str | None = None


ClientEvent = Annotated[
    AgentState
    | TranscriptPartial
    | TranscriptFinal
    | ReplyDelta
    | ReplyDone
    | TurnMetrics
    | ErrorEvent,
    Field(discriminator="type"),
]

# Client -> server on the WebSocket.
MAX_TEXT_CHARS = 4000


class UserText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["user.text"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class UserInterrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["interrupt"]


ClientCommand = Annotated[UserText | UserInterrupt, Field(discriminator="type")]


# ============================================================================================
# Internal messages
# ============================================================================================
class ClaimAck(Message):
    """Reply to any claim request: the worker that took the job."""

    type: Literal["claim.ack"] = "claim.ack"
    worker_id: str
    kind: str


class WorkClaimed(Message):
    """Published for observability (and the fault tests) when a replica takes a job."""

    type: Literal["work.claimed"] = "work.claimed"
    kind: Literal["asr", "llm", "tts", "session"]
    worker_id: str
    session_id: str
    turn_id: str
    reply_id: str | None = None


class RpcError(Message):
    type: Literal["rpc.error"] = "rpc.error"
    code: str
    message: str
    status: int = 400
    details: list[dict[str, Any]] | None = None


# -- ASR --------------------------------------------------------------------------------------
# An agent's hot words: Whisper takes them as its prompt, which holds ~220 tokens.
MAX_HOT_WORDS = 50
MAX_HOT_WORDS_CHARS = 600
HotWord = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


def _fits_prompt(words: list[str]) -> list[str]:
    if len(", ".join(words)) > MAX_HOT_WORDS_CHARS:
        raise ValueError(f"hot words take at most {MAX_HOT_WORDS_CHARS} characters in all")
    return words


class AsrClaim(Message):
    type: Literal["asr.claim"] = "asr.claim"
    session_id: str
    turn_id: str
    sample_rate: int = 16000
    language: str | None = None
    partials: bool = True
    hot_words: list[str] = Field(default_factory=list, max_length=MAX_HOT_WORDS)


class AsrEnd(Message):
    """Sent as a request on the utterance subject after the last frame: end of turn."""

    type: Literal["asr.end"] = "asr.end"
    speech_end_ms: float  # wall clock of the last voiced frame
    # The speculative pass started at the last `peek` saw all the speech: reuse its text.
    reuse_speculative: bool = False


class AsrResult(Message):
    type: Literal["asr.result"] = "asr.result"
    turn_id: str
    text: str
    asr_ms: float
    audio_ms: float
    worker_id: str


# -- Turns ------------------------------------------------------------------------------------
class TurnSubmit(Message):
    type: Literal["turn.submit"] = "turn.submit"
    session_id: str
    turn_id: str
    text: str
    source: Literal["voice", "text"]
    voice: bool  # a WebRTC track is connected: answer in voice too
    speech_end_ms: float | None = None  # end of speech (voice) or text received (text)
    end_of_turn_ms: float | None = None
    asr_ms: float | None = None
    asr_wait_ms: float | None = None
    # Submitted early in the end-of-turn silence: the session produces the reply but holds its
    # events and its history until `turn.confirmed`; an `Interrupt {reason: retracted}` drops it.
    speculative: bool = False


class TurnPrefill(Message):
    """The user is speaking (`text`: what the partial transcript says so far, "" at speech
    onset): the session may have an idle llm replica evaluate the coming turn's prompt, so the
    turn itself finds most of it cached. A hint: dropped when nothing is idle."""

    type: Literal["turn.prefill"] = "turn.prefill"
    session_id: str
    text: str = ""


class TurnAccepted(Message):
    type: Literal["turn.accepted"] = "turn.accepted"
    turn_id: str
    reply_id: str
    worker_id: str


# -- LLM --------------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(96, ge=1, le=4096)


class LLMRequest(Message):
    type: Literal["llm.request"] = "llm.request"
    session_id: str
    turn_id: str
    reply_id: str
    messages: list[ChatMessage]
    params: LLMParams = Field(default_factory=LLMParams)
    stream_id: str | None = None  # subject token for the output; default reply_id (retries differ)
    # reply: a turn's answer. summary / prefill: background work of the session's memory
    # (services/session/memory.py): a replica takes it only when idle, and a reply claimed
    # meanwhile cancels it. A prefill evaluates the prompt into the cache and says nothing.
    purpose: Literal["reply", "summary", "prefill"] = "reply"


class LLMDelta(Message):
    type: Literal["llm.delta"] = "llm.delta"
    reply_id: str
    seq: int
    text: str


class LLMDone(Message):
    type: Literal["llm.done"] = "llm.done"
    reply_id: str
    text: str
    tokens: int
    first_token_ms: float | None
    tokens_per_s: float | None
    cancelled: bool = False
    stopped: str | None = None  # why generation was cut short (a reply repeating itself)


class LLMError(Message):
    type: Literal["llm.error"] = "llm.error"
    reply_id: str
    code: str
    message: str


LLMOut = Annotated[LLMDelta | LLMDone | LLMError, Field(discriminator="type")]


# -- TTS --------------------------------------------------------------------------------------
class TTSRequest(Message):
    type: Literal["tts.request"] = "tts.request"
    session_id: str
    turn_id: str
    reply_id: str
    voice: str | None = None


class TTSText(Message):
    """Text for one reply, in order; `final` marks the end of the reply's text."""

    type: Literal["tts.text"] = "tts.text"
    reply_id: str
    seq: int
    text: str
    final: bool = False


class TTSSegment(Message):
    """Announces a synthesized segment (one clause or sentence) before its audio chunks."""

    type: Literal["tts.segment"] = "tts.segment"
    reply_id: str
    turn_id: str
    index: int
    text: str
    sample_rate: int
    first_audio_ms: float | None = None  # clause handed to the engine -> its first audio


class TTSDone(Message):
    type: Literal["tts.done"] = "tts.done"
    reply_id: str
    turn_id: str
    segments: int
    cancelled: bool = False
    error: str | None = None


# Audio chunks on va.tts.out.{sid} are raw PCM16 mono with headers (see bus.AUDIO_HEADERS).
TTSOut = Annotated[TTSSegment | TTSDone, Field(discriminator="type")]


# -- Playback and interrupts --------------------------------------------------------------------
class PlaybackStarted(Message):
    type: Literal["playback.started"] = "playback.started"
    reply_id: str
    at_ms: float


class PlaybackDone(Message):
    type: Literal["playback.done"] = "playback.done"
    reply_id: str
    spoken_text: str
    interrupted: bool = False


class TurnConfirmed(Message):
    """The end of turn of a speculative turn was confirmed: its reply may be released."""

    type: Literal["turn.confirmed"] = "turn.confirmed"
    turn_id: str
    end_of_turn_ms: float | None = None
    # Wall ms of the end of speech as the end of turn measured it (the last speech frame); the
    # speculative submit's estimate, taken earlier, may differ by a VAD frame or a late packet.
    speech_end_ms: float | None = None


PlaybackEvent = Annotated[
    PlaybackStarted | PlaybackDone | TurnConfirmed, Field(discriminator="type")
]


InterruptReason = Literal["barge_in", "client", "new_turn", "session_end", "failure", "retracted"]


class Interrupt(Message):
    """Cancel a reply. Broadcast: every LLM, TTS and session replica sees it."""

    type: Literal["interrupt"] = "interrupt"
    session_id: str
    reply_id: str | None = None  # None: whatever is in flight for the session
    turn_id: str | None = None
    reason: InterruptReason = "client"
    spoken_text: str | None = None  # what the user heard of it, when the gateway knows
    at_ms: float = Field(default_factory=now_ms)


# ============================================================================================
# Decoding
# ============================================================================================
_adapters: dict[Any, TypeAdapter[Any]] = {}


def decode(kind: Any, data: bytes | str) -> Any:
    """Decode `data` as `kind` (a model class or an annotated union). Raises BadMessage."""
    adapter = _adapters.get(kind)
    if adapter is None:
        adapter = _adapters[kind] = TypeAdapter(kind)
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        raise BadMessage(_summarize(exc)) from exc


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "message"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]


# ============================================================================================
# Agents and sessions (session service RPC, also the HTTP API's bodies)
# ============================================================================================
# Replies are spoken: short, plain words, the user's own language (tuned on the quality
# benchmark's tune split only: bench/quality.py).
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Everything you write is spoken aloud, so answer in "
    "one or two short sentences of plain speech: no lists, markdown, code or emoji. Answer the "
    "question directly and correctly. Always reply in the same language as the user's last "
    "message. If you are not sure, say so."
)


class AgentConfig(BaseModel):
    """A registered agent: serves any number of sessions."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("assistant", min_length=1, max_length=100)
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        min_length=1,
        max_length=8000,
    )
    llm: LLMParams = Field(default_factory=LLMParams)
    voice: str | None = Field(None, max_length=200, description="TTS voice name; None: default")
    language: str | None = Field(None, max_length=10, description="ASR language; None: default")
    hot_words: Annotated[list[HotWord], AfterValidator(_fits_prompt)] = Field(
        default_factory=list,
        max_length=MAX_HOT_WORDS,
        description="words and names speech recognition should favour (Whisper's prompt)",
    )
    end_of_turn_silence_ms: int = Field(500, ge=100, le=5000)
    interruptions: bool = True
    min_interruption_ms: int = Field(150, ge=0, le=3000)
    history_max_turns: int = Field(24, ge=1, le=500)
    history_token_budget: int = Field(1024, ge=64, le=32000)


class CreateAgent(Message):
    type: Literal["rpc.create_agent"] = "rpc.create_agent"
    config: AgentConfig


class AgentRecord(Message):
    type: Literal["agent"] = "agent"
    agent_id: str
    config: AgentConfig
    created_at: float


class GetAgent(Message):
    type: Literal["rpc.get_agent"] = "rpc.get_agent"
    agent_id: str


class CreateSession(Message):
    type: Literal["rpc.create_session"] = "rpc.create_session"
    agent_id: str | None = None


class ResumeSession(Message):
    type: Literal["rpc.resume_session"] = "rpc.resume_session"
    session_id: str
    token: str


class SessionGrant(Message):
    type: Literal["session.grant"] = "session.grant"
    session_id: str
    token: str
    expires_at: float  # unix seconds
    agent_id: str


class Authorize(Message):
    type: Literal["rpc.authorize"] = "rpc.authorize"
    session_id: str
    token: str


class SessionInfo(Message):
    type: Literal["session.info"] = "session.info"
    session_id: str
    agent_id: str
    agent: AgentConfig


class EndSession(Message):
    type: Literal["rpc.end_session"] = "rpc.end_session"
    session_id: str
    token: str


class GetMessages(Message):
    type: Literal["rpc.get_messages"] = "rpc.get_messages"
    session_id: str
    token: str


class HistoryMessage(BaseModel):
    role: Literal["user", "assistant"]
    text: str
    turn_id: str
    interrupted: bool = False
    created_at: float


class Summary(BaseModel):
    """What slid out of a session's LLM window, summarized (services/session/memory.py):
    history entries [0, upto) are in `text`."""

    text: str
    upto: int
    created_at: float


class MessageList(Message):
    type: Literal["messages"] = "messages"
    messages: list[HistoryMessage]


class Ok(Message):
    type: Literal["ok"] = "ok"
