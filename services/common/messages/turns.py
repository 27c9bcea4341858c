"""A turn's submission and the control around its reply: playback reports and interrupts."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field

from .base import Message, now_ms


class TurnSubmit(Message):
    type: Literal["turn.submit"] = "turn.submit"
    session_id: str
    turn_id: str
    # the user's words; for `agent`, the agent's own words to speak as they are (a greeting, a
    # nudge): no language model, and only the reply enters history
    text: str
    source: Literal["voice", "text", "agent"]
    voice: bool  # a WebRTC track is connected: answer in voice too
    speech_end_ms: float | None = None  # end of speech (voice) or text received (text)
    end_of_turn_ms: float | None = None
    asr_ms: float | None = None
    asr_wait_ms: float | None = None
    # Submitted early in the end-of-turn silence: the session produces the reply but holds its
    # events and its history until `turn.confirmed`; an `Interrupt {reason: retracted}` drops it.
    speculative: bool = False
    # One submission: asked again with the same id (and `attempt` 2, 3...) when the first
    # request's answer never came (a NATS server died with it in flight), so a replica that
    # got it anyway and a replica that gets the retry run it once between them.
    submission: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    attempt: int = Field(1, ge=1)


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


class PlaybackStarted(Message):
    type: Literal["playback.started"] = "playback.started"
    reply_id: str
    at_ms: float


class PlaybackDone(Message):
    type: Literal["playback.done"] = "playback.done"
    reply_id: str
    spoken_text: str
    interrupted: bool = False
    # How long the reply's audio was held paused while it played (speech over it, until judged
    # a backchannel, noise or its own echo): in all, the longest pause, and how many.
    paused_ms: float = 0.0
    longest_pause_ms: float = 0.0
    pauses: int = 0


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
