"""What a turn leaves behind: its history, its last client events, its figures.

`TurnState` is what the turn loop learned. `write_history` writes the user message and the reply
into history once (in full, or after an interrupt or failure only what was played), after any
tool calls' entries;
`tell_outcome` then gives the client `reply.done`, `turn.metrics` and `agent.state listening`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.common.messages import (
    AgentState,
    ErrorCode,
    HistoryMessage,
    PlaybackDone,
    ReplyDone,
    TurnMetrics,
    TurnSubmit,
)

from .outbox import Outbox
from .store import Store


@dataclass
class TurnState:
    text: list[str] = field(default_factory=list)  # the reply's deltas so far
    llm_done: bool = False
    tts_done: bool = True
    playback_done: bool = True
    started_speaking: bool = False
    interrupted: bool = False
    failed: str | None = None
    spoken_text: str | None = None  # what the user heard, when the gateway said
    metrics: dict[str, float | None] = field(default_factory=dict)
    # the gateway's account of the reply's audio paused while it played (playback.done)
    paused_ms: float = 0.0
    longest_pause_ms: float = 0.0
    pauses: int = 0

    def played(self, done: PlaybackDone) -> None:
        """The gateway's report of the reply's audio: what was heard, how long it paused."""
        self.spoken_text = done.spoken_text
        self.paused_ms, self.longest_pause_ms = done.paused_ms, done.longest_pause_ms
        self.pauses = done.pauses

    def label(self, *, abandoned: bool, retracted: bool) -> str:
        """The turn's outcome, for its span and the turns counter."""
        if abandoned:
            return "abandoned"
        if retracted:
            return "retracted"
        if self.failed:
            return "failed"
        return "interrupted" if self.interrupted else "done"

    def reply(self, *, voice: bool) -> Reply:
        """The reply as it ends: after a cut, what was played (all of it for a text turn)."""
        full = "".join(self.text).strip()
        cut = self.interrupted or self.failed is not None
        spoken = full
        if cut:
            heard = self.spoken_text if self.spoken_text is not None else ("" if voice else full)
            spoken = heard.strip()
        return Reply(full, spoken, cut)


@dataclass(frozen=True)
class Reply:
    full: str  # everything the LLM wrote
    spoken: str  # what the user got: all of it, or after a cut only what was played
    cut: bool  # interrupted or failed


async def write_history(
    store: Store, session_id: str, turn_id: str, before: list[HistoryMessage], reply: Reply
) -> None:
    """The turn's entries not written yet (`before`: the user message, unless the agent spoke
    first or a tool call wrote it already; calls and their results) and the reply (when there
    is one, or it was cut) enter history."""
    full, spoken, cut = reply.full, reply.spoken, reply.cut
    messages = list(before)
    if full or cut:
        messages.append(
            HistoryMessage(
                role="assistant",
                text=spoken,
                turn_id=turn_id,
                interrupted=cut,
                created_at=time.time(),
            )
        )
    if messages:
        await store.append(session_id, *messages)


async def tell_outcome(
    outbox: Outbox,
    submit: TurnSubmit,
    reply_id: str,
    st: TurnState,
    reply: Reply,
    *,
    total_ms: float,
) -> None:
    """The client's last events of a turn: the error, the reply as it stands, the figures."""
    tid = submit.turn_id
    full, spoken, cut = reply.full, reply.spoken, reply.cut
    if st.failed is not None:
        await outbox.error(ErrorCode.TURN_FAILED, st.failed)
    if full or not st.failed:
        await outbox.emit(
            ReplyDone(
                turn_id=tid,
                reply_id=reply_id,
                text=full,
                spoken_text=spoken,
                interrupted=cut,
                paused_ms=st.paused_ms,
                longest_pause_ms=st.longest_pause_ms,
                pauses=st.pauses,
            )
        )
    m = st.metrics
    await outbox.emit(
        TurnMetrics(
            turn_id=tid,
            reply_id=reply_id,
            source=submit.source,
            end_of_turn_ms=submit.end_of_turn_ms,
            asr_ms=submit.asr_ms,
            asr_wait_ms=submit.asr_wait_ms,
            llm_first_token_ms=m.get("llm_first_token_ms"),
            llm_tokens_per_s=m.get("llm_tokens_per_s"),
            tts_first_audio_ms=m.get("tts_first_audio_ms"),
            first_audio_ms=m.get("first_audio_ms"),
            first_delta_ms=m.get("first_delta_ms"),
            total_ms=total_ms,
        )
    )
    await outbox.emit(AgentState(state="listening", turn_id=tid))
