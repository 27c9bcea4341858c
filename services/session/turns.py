"""One conversation turn, from the user's text to the reply written into history.

The session replica that claimed the turn runs it:
1. `agent.state thinking`; the LLM window is planned (the user message enters history with the
   reply, when the turn ends: a speculative turn may still be retracted).
2. A TTS replica (for a voice turn) and an LLM replica are claimed at once (`stages.Stages`).
3. LLM deltas become `reply.delta` events and text for the TTS; the TTS streams audio to the
   gateway, which reports `playback.started` / `playback.done`.
4. The reply is written to history once (`outcome`): in full, or, after an interrupt, only what
   was played. Client events go through the turn's `outbox.Outbox`.
An interrupt reaches the turn on its own path, ahead of any output still queued. A stage that
dies is noticed by a stall timeout: the LLM is retried on another replica while nothing was said
yet; otherwise the client gets `error {code: turn_failed}` and the next turn works as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from opentelemetry import trace

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.aio import get_within
from services.common.messages import (
    AgentConfig,
    AgentState,
    ChatMessage,
    ErrorCode,
    HistoryMessage,
    Interrupt,
    LLMDelta,
    LLMDone,
    LLMError,
    PlaybackDone,
    PlaybackEvent,
    PlaybackStarted,
    ReplyDelta,
    SessionEnded,
    TTSDone,
    TTSOut,
    TTSSegment,
    TurnConfirmed,
    TurnSubmit,
    now_ms,
)
from services.common.metrics import ERRORS, IN_FLIGHT, STAGE_SECONDS, TURNS

from .mcp import McpCatalog
from .outbox import Outbox
from .outcome import TurnState, tell_outcome, write_history
from .settings import SessionSettings
from .stages import Stages, queue_decoded
from .store import Store
from .tool_calls import FILLER, ToolCalls, ToolDone
from .window import plan_window, to_chat

log = logging.getLogger(__name__)

_WAKE = object()  # put in the inbox by `interrupt`, so a loop waiting there looks at it


class SessionGone(Exception):
    """The session ended (on any replica) after this replica accepted the turn."""

    reason = "the session has ended"


class SubmissionTaken(Exception):
    """Another reply runs this submission: the gateway asked again (its first answer lost) and
    another replica, or this one, took the repeat first."""


class Turn:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        settings: SessionSettings,
        submit: TurnSubmit,
        reply_id: str,
        agent: AgentConfig,
        tool_client: httpx.AsyncClient | None = None,
        claim: str = "",
        mcp: McpCatalog | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.cfg = settings
        self.submit = submit
        self.sid = submit.session_id
        self.tid = submit.turn_id
        self.rid = reply_id
        self.claim = claim or reply_id  # its submission's claim (see Store.begin_turn)
        self.agent = agent
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.st = TurnState()
        self.t_start = now_ms()
        self.outbox = Outbox(nc, self.sid, self.tid, held=submit.speculative)
        self.stages = Stages(
            nc,
            settings,
            agent,
            self.sid,
            self.tid,
            reply_id,
            voice=submit.voice,
            inbox=self.inbox,
            outbox=self.outbox,
        )
        self._interrupt: Interrupt | None = None
        self._subs: list[Any] = []
        self.retracted = False  # the user spoke on before the end of turn
        self.gone = False  # the session had ended when the turn began: nothing to write
        self.abandoned = False  # never accepted (see abandon): as if it never started
        self.written = False  # its messages are in history (the memory may plan a slide)
        self.written_entries = 0  # of `unwritten()`'s list: written before the turn ended
        self.user_message = HistoryMessage(
            role="user", text=submit.text, turn_id=submit.turn_id, created_at=time.time()
        )
        self.messages: list[ChatMessage] = []  # the model's prompt, with this turn's calls
        self.mcp = mcp
        self.calls = ToolCalls(self, tool_client) if tool_client and agent.has_tools else None
        self.ends_conversation = False  # the model called end_conversation

    @property
    def voice(self) -> bool:
        return self.stages.voice

    @property
    def unseen(self) -> bool:
        """Retracted (the user spoke on) or abandoned (never accepted): as if it never started,
        for the client and for history."""
        return self.retracted or self.abandoned

    def abandon(self) -> None:
        """The turn could not be accepted (its subscriptions failed: NATS went away), so the
        gateway reports an error for it; or another reply runs its submission. It must not say
        or write anything, only release the in-flight mark it may have taken."""
        self.abandoned = True
        self.outbox.silence()

    def interrupt(self, intr: Interrupt) -> None:
        """Stop the turn: seen before any output still waiting in the inbox."""
        if self._interrupt is None:
            self._interrupt = intr
            self.inbox.put_nowait(_WAKE)

    # -- the turn ------------------------------------------------------------------------------
    async def run(self) -> None:
        attrs = {
            tm.ATTR_SESSION: self.sid,
            tm.ATTR_TURN: self.tid,
            tm.ATTR_REPLY: self.rid,
            tm.ATTR_SOURCE: self.submit.source,
        }
        with tm.tracer.start_as_current_span(
            "session.turn",
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            IN_FLIGHT.labels("session").inc()
            try:
                await self._run()
            finally:
                IN_FLIGHT.labels("session").dec()
                outcome = self.st.label(abandoned=self.abandoned, retracted=self.retracted)
                span.set_attribute(tm.ATTR_OUTCOME, outcome)
                span.set_attribute(tm.ATTR_INTERRUPTED, self.st.interrupted)
                TURNS.labels("session", outcome).inc()
                if self.st.failed:
                    span.set_status(trace.StatusCode.ERROR, ErrorCode.TURN_FAILED)
                    ERRORS.labels("session", ErrorCode.TURN_FAILED).inc()
                for stage, value in self.st.metrics.items():
                    if value is not None and stage.endswith("_ms"):
                        STAGE_SECONDS.labels("session", stage[:-3]).observe(value / 1000)

    async def open(self) -> None:
        """Subscribe to what the gateway and the TTS will say about this turn. Done before the
        turn is accepted, so a confirmation sent right after acceptance is not missed. The TTS's
        audio goes to the gateway only: the turn hears its segments and done markers."""
        what = f"turn {self.tid}"
        self._subs.append(
            await self.nc.subscribe(
                subjects.playback(self.sid), cb=queue_decoded(self.inbox, PlaybackEvent, what)
            )
        )
        if self.voice:
            self._subs.append(
                await self.nc.subscribe(
                    subjects.tts_out(self.sid, subjects.TtsPart.CTL),
                    cb=queue_decoded(self.inbox, TTSOut, what),
                )
            )

    @property
    def agent_speaks(self) -> bool:
        """The agent's own words (a greeting, a nudge): no user message, no language model."""
        return self.submit.source == "agent"

    async def _run(self) -> None:
        try:
            await self.outbox.emit(AgentState(state="thinking", turn_id=self.tid))
            if self.calls is not None:
                await self.calls.resolve()
            self.messages = await self._prepare()
            if self.calls is not None:
                self.stages.tools = self.calls.offer()
            if self.agent_speaks:
                if self.voice:
                    await self.stages.claim_tts()
            else:
                await self.stages.claim(self.messages)
            if self.voice:
                self.st.tts_done = self.st.playback_done = False
            if self.agent_speaks:
                await self._say(self.submit.text)
            await self._loop()
        except asyncio.CancelledError:
            self.st.interrupted = True
            raise
        except SessionGone:
            self.st.failed = SessionGone.reason
        except SubmissionTaken:
            log.info("turn %s: another reply runs its submission", self.tid)
        except Exception as exc:
            log.exception("turn %s failed", self.tid)
            self.st.failed = self.st.failed or f"the reply could not be produced: {exc}"
        finally:
            await self.release()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish())

    @property
    def holds_subscriptions(self) -> bool:
        return bool(self._subs or self.stages.subs)

    async def release(self) -> None:
        """Unsubscribe this turn's subscriptions (again: nothing). The worker also calls it when
        the turn's task ends, which covers a task cancelled before it ever ran."""
        subs = self._subs + self.stages.subs
        self._subs.clear()
        self.stages.subs.clear()
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _prepare(self) -> list[ChatMessage]:
        # Let a reply that was interrupted by this turn write its history first.
        deadline = time.monotonic() + 2.0
        while True:
            begun = await self.store.begin_turn(
                self.sid,
                self.rid,
                force=time.monotonic() >= deadline,
                submission=self.submit.submission,
                claim=self.claim,
            )
            if begun.state != "busy":
                break
            await asyncio.sleep(0.02)
        if begun.state == "taken":
            self.abandon()
            raise SubmissionTaken(self.tid)
        if begun.state == "ended":
            self.gone = True
            raise SessionGone(self.sid)
        if self.agent_speaks:
            return []
        if self.calls is not None:
            self.calls.remember(begun.unsummarized + begun.history)
        window = begun.history + [self.user_message]
        advance = plan_window(window, 0, self.agent)
        if advance:
            await self.store.set_window_start(self.sid, begun.start + advance)
        return to_chat(
            self.agent, window[advance:], begun.summary, begun.unsummarized + window[:advance]
        )

    async def _loop(self) -> None:
        st = self.st
        while not (st.llm_done and st.playback_done and self.outbox.confirmed):
            if self._interrupt is not None:
                await self._on_interrupt(self._interrupt)
                return
            try:
                item = await get_within(self.inbox, self._timeout())
            except TimeoutError:
                if self.calls is not None and self.calls.busy:
                    continue  # each call ends within its own timeout
                if not st.llm_done:
                    if not st.text and self.stages.can_retry_llm:
                        log.warning("turn %s: no answer from the llm, trying another", self.tid)
                        await self.stages.cancel_llm()
                        await self.stages.claim_llm(self.messages)
                    else:
                        await self._apologize("the language model did not answer in time")
                    continue
                st.failed = "the speech output stopped responding"
                if self.voice and st.started_speaking:
                    await self.stages.stop_reply()
                    await self._await_playback_done(1.0)
                return
            if item is not _WAKE and not await self._handle(item):
                return

    async def _apologize(self, reason: str) -> None:
        """The LLM is slow or failing: say so briefly, in text and voice, and carry on."""
        log.warning("turn %s: %s; apologizing", self.tid, reason)
        await self.stages.cancel_llm()
        await self.outbox.error(ErrorCode.LLM_UNAVAILABLE, reason)
        await self._say(self.cfg.apology_text)

    async def _say(self, words: str) -> None:
        """Words of the agent's own, instead of (the rest of) the LLM's: the end of the reply."""
        text = "" if not self.st.text or self.st.text[-1].endswith(" ") else " "
        text += words
        self.st.text.append(text)
        self.st.llm_done = True
        if len(self.st.text) == 1 and not self.voice:
            await self.outbox.emit(AgentState(state="speaking", turn_id=self.tid))
        await self.outbox.emit(ReplyDelta(turn_id=self.tid, reply_id=self.rid, text=text))
        if self.voice:
            await self.stages.speak(text, final=True)

    def _timeout(self) -> float:
        if self.calls is not None and self.calls.busy:
            return self.calls.timeout()
        if not self.st.llm_done:
            if not self.st.text:
                return self.cfg.llm_first_token_timeout_s
            return self.cfg.llm_stall_timeout_s
        if not self.st.tts_done:
            return self.cfg.tts_stall_timeout_s
        return self.cfg.playback_timeout_s

    async def _handle(self, item: Any) -> bool:
        """Apply one message; False ends the loop."""
        st = self.st
        if isinstance(item, tuple):  # (stream id, LLM output)
            stream, item = item
            if stream != self.stages.llm_stream:
                return True  # an abandoned attempt (replaced, or apologized for)
        if isinstance(item, LLMDelta):
            if not st.text:
                st.metrics["first_delta_ms"] = self._since_end()
                if not self.voice:
                    await self.outbox.emit(AgentState(state="speaking", turn_id=self.tid))
            st.text.append(item.text)
            await self.outbox.emit(ReplyDelta(turn_id=self.tid, reply_id=self.rid, text=item.text))
            if self.voice:
                await self.stages.speak(item.text, final=False)
        elif isinstance(item, LLMDone):
            st.metrics.setdefault("llm_first_token_ms", item.first_token_ms)  # the first pass's
            st.metrics["llm_tokens_per_s"] = item.tokens_per_s
            if item.tools_unsupported:
                await self.outbox.error(
                    ErrorCode.TOOLS_UNSUPPORTED,
                    "this language model cannot call tools: answering without them",
                )
            if item.tool_calls and self.calls is not None:
                await self.calls.begin(item)
                return True
            st.llm_done = True
            if self.voice:
                await self.stages.speak("", final=True)
        elif isinstance(item, ToolDone) and self.calls is not None:
            await self.calls.done(item)
        elif item is FILLER:
            await self._filler()
        elif isinstance(item, LLMError):
            await self._apologize(f"the language model failed: {item.message}")
        elif isinstance(item, TTSSegment) and item.reply_id == self.rid:
            if item.index == 0:
                st.metrics["tts_first_audio_ms"] = item.first_audio_ms
        elif isinstance(item, TTSDone) and item.reply_id == self.rid:
            st.tts_done = True
            if item.error and not item.cancelled:
                await self.outbox.error(ErrorCode.TTS_FAILED, item.error)
        elif isinstance(item, TurnConfirmed) and item.turn_id == self.tid:
            await self._confirm(item)
        elif isinstance(item, PlaybackStarted) and item.reply_id == self.rid:
            st.started_speaking = True
            if self.submit.speech_end_ms is not None:
                st.metrics["first_audio_ms"] = round(item.at_ms - self.submit.speech_end_ms, 1)
            await self.outbox.emit(AgentState(state="speaking", turn_id=self.tid))
        elif isinstance(item, PlaybackDone) and item.reply_id == self.rid:
            st.playback_done = True
            st.played(item)
            if item.interrupted:
                st.interrupted = True
                st.llm_done = True
                return False
        return True

    async def _confirm(self, confirmed: TurnConfirmed) -> None:
        if confirmed.end_of_turn_ms is not None:
            self.submit.end_of_turn_ms = confirmed.end_of_turn_ms
        if confirmed.speech_end_ms is not None:
            self.submit.speech_end_ms = confirmed.speech_end_ms
        self.submit.asr_wait_ms = 0.0  # its text was there before the end of turn
        await self.outbox.release()
        if self.calls is not None:
            await self.calls.confirmed()

    async def _filler(self) -> None:
        """The turn called a tool and nothing was said yet: a few words, so the line is not
        dead while the call and the model's second pass take their time (voice turns)."""
        if not self.voice or "".join(self.st.text).strip():
            return
        text = self.cfg.tool_filler_text
        self.st.text.append(text + " ")
        await self.outbox.emit(ReplyDelta(turn_id=self.tid, reply_id=self.rid, text=text + " "))
        await self.stages.speak(text + " ", final=False)

    async def write_entries(self) -> None:
        """This turn's entries so far (the user message, calls and their results) into
        history, before a call's request leaves: a call is never lost from the record."""
        entries = self.unwritten()
        if entries:
            await self.store.append(self.sid, *entries)
            self.written_entries += len(entries)

    def unwritten(self) -> list[HistoryMessage]:
        entries = [] if self.agent_speaks else [self.user_message]
        entries += self.calls.entries if self.calls is not None else []
        return entries[self.written_entries :]

    async def _on_interrupt(self, intr: Interrupt) -> None:
        self.st.interrupted = True
        if self.calls is not None:
            await self.calls.cut(intr.reason)
        if intr.reason == "retracted":
            self.retracted = True
            self.outbox.silence()
            return
        if intr.spoken_text is not None:
            self.st.spoken_text = intr.spoken_text
        elif self.voice:
            await self._await_playback_done(1.0)

    async def _await_playback_done(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                item = await get_within(self.inbox, left)
            except TimeoutError:
                return
            if isinstance(item, PlaybackDone) and item.reply_id == self.rid:
                self.st.played(item)
                return

    def _since_end(self) -> float:
        ref = self.submit.speech_end_ms or self.t_start
        return round(now_ms() - ref, 1)

    async def _finish(self) -> None:
        st = self.st
        if self.unseen:
            await self.store.clear_inflight(self.sid, self.rid)
            return
        if self.gone:  # ended elsewhere before the turn began: no history to write
            await self.outbox.error(ErrorCode.TURN_FAILED, st.failed or SessionGone.reason)
            await self.outbox.emit(AgentState(state="listening", turn_id=self.tid))
            return
        if not self.outbox.confirmed:  # the gateway vanished before confirming: release it
            await self.outbox.release()
        reply = st.reply(voice=self.voice)
        await write_history(self.store, self.sid, self.tid, self.unwritten(), reply)
        self.written = True
        await self.store.clear_inflight(self.sid, self.rid)
        await tell_outcome(
            self.outbox, self.submit, self.rid, st, reply, total_ms=self._since_end()
        )
        if self.ends_conversation and not st.failed:
            await self._end_conversation()

    async def _end_conversation(self) -> None:
        """The model ended the conversation (its goodbye said): the session ends, on every
        replica and at the gateway, which hangs up."""
        await self.store.end_session(self.sid)
        await self.outbox.emit(SessionEnded(reason="the assistant ended the conversation"))
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(session_id=self.sid, reason="session_end"),
        )
