"""One conversation turn, from the user's text to the reply written into history.

The session replica that claimed the turn runs it:
1. `agent.state thinking`; the user message goes into history; the LLM window is planned.
2. A TTS replica (when the session has a voice track) and an LLM replica are claimed at once.
3. LLM deltas become `reply.delta` events and `tts.text` pieces; the TTS streams audio to the
   gateway, which reports `playback.started` / `playback.done`.
4. The reply is written to history once: in full, or, after an interrupt, only what was played.
A stage that dies is noticed by a stall timeout: the LLM is retried on another replica while
nothing was said yet; otherwise the client gets `error {code: turn_failed}` and the next turn
works as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.aio import get_within
from services.common.messages import (
    AgentConfig,
    AgentState,
    AudioChunkHeader,
    BadMessage,
    ClaimAck,
    ErrorCode,
    ErrorEvent,
    HistoryMessage,
    Interrupt,
    LLMDelta,
    LLMDone,
    LLMError,
    LLMOut,
    LLMRequest,
    Message,
    PlaybackDone,
    PlaybackEvent,
    PlaybackStarted,
    ReplyDelta,
    ReplyDone,
    TTSDone,
    TTSOut,
    TTSRequest,
    TTSSegment,
    TTSText,
    TurnConfirmed,
    TurnMetrics,
    TurnSubmit,
    decode,
    now_ms,
)
from services.common.metrics import ERRORS, IN_FLIGHT, STAGE_SECONDS, TURNS

from .settings import SessionSettings
from .store import Store
from .window import plan_window, to_chat

log = logging.getLogger(__name__)


class SessionGone(Exception):
    """The session ended (on any replica) after this replica accepted the turn."""

    reason = "the session has ended"


@dataclass
class TurnState:
    text: list[str] = field(default_factory=list)
    llm_done: bool = False
    tts_done: bool = True
    playback_done: bool = True
    started_speaking: bool = False
    interrupted: bool = False
    failed: str | None = None
    spoken_text: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    tts_seq: int = 0
    llm_attempts: int = 0


class Turn:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        settings: SessionSettings,
        submit: TurnSubmit,
        reply_id: str,
        agent: AgentConfig,
    ) -> None:
        self.nc = nc
        self.store = store
        self.cfg = settings
        self.submit = submit
        self.sid = submit.session_id
        self.tid = submit.turn_id
        self.rid = reply_id
        self.agent = agent
        self.voice = submit.voice
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.st = TurnState()
        self.t_start = now_ms()
        # A speculative turn's client events wait here until the gateway confirms the end of
        # turn; a retracted one never shows and never enters history.
        self.confirmed = not submit.speculative
        self.retracted = False
        self._held: list[Message] = []
        self._subs: list[Any] = []
        self.llm_stream: str | None = None  # the LLM attempt whose output counts
        self.gone = False  # the session had ended when the turn began: nothing to write
        self.abandoned = False  # never accepted (see abandon): as if it never started
        self.written = False  # its messages are in history (the memory may plan a slide)
        self.user_message = HistoryMessage(
            role="user", text=submit.text, turn_id=submit.turn_id, created_at=time.time()
        )

    @property
    def unseen(self) -> bool:
        """Retracted (the user spoke on) or abandoned (never accepted): as if it never started,
        for the client and for history."""
        return self.retracted or self.abandoned

    # -- plumbing ----------------------------------------------------------------------------
    async def emit(self, event: Message) -> None:
        if self.unseen:
            return
        if not self.confirmed:
            self._held.append(event)
            return
        await bus.publish(self.nc, subjects.events(self.sid), event)

    async def error(self, code: ErrorCode, message: str) -> None:
        """Tell the client what went wrong with this turn (an `error` event)."""
        await self.emit(ErrorEvent(code=code, message=message, turn_id=self.tid))

    async def _confirm(self, confirmed: TurnConfirmed) -> None:
        self.confirmed = True
        if confirmed.end_of_turn_ms is not None:
            self.submit.end_of_turn_ms = confirmed.end_of_turn_ms
        if confirmed.speech_end_ms is not None:
            self.submit.speech_end_ms = confirmed.speech_end_ms
        self.submit.asr_wait_ms = 0.0  # its text was there before the end of turn
        held, self._held = self._held, []
        for event in held:
            await self.emit(event)

    def abandon(self) -> None:
        """The turn could not be accepted (its subscriptions failed: NATS went away), so the
        gateway reports an error for it. Its task, already started, is being cancelled: it must
        not say or write anything, only release the in-flight mark it may have taken."""
        self.abandoned = True

    def interrupt(self, intr: Interrupt) -> None:
        self.inbox.put_nowait(intr)

    def _queue_decoded(self, kind: Any, stream: str | None = None) -> Any:
        """A subscription callback queueing decoded messages; those of an LLM attempt are
        tagged with its stream id, so an abandoned attempt's late output is recognised."""

        async def cb(msg: Msg) -> None:
            if AudioChunkHeader.is_audio(msg.headers):
                return
            try:
                value = decode(kind, msg.data)
            except BadMessage as exc:
                log.warning("turn %s: bad message on %s: %s", self.tid, msg.subject, exc)
                return
            self.inbox.put_nowait(value if stream is None else (stream, value))

        return cb

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
                outcome = (
                    "abandoned"
                    if self.abandoned
                    else "retracted"
                    if self.retracted
                    else "failed"
                    if self.st.failed
                    else "interrupted"
                    if self.st.interrupted
                    else "done"
                )
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
        turn is accepted, so a confirmation sent right after acceptance is not missed."""
        self._subs.append(
            await self.nc.subscribe(
                subjects.playback(self.sid), cb=self._queue_decoded(PlaybackEvent)
            )
        )
        if self.voice:
            self._subs.append(
                await self.nc.subscribe(subjects.tts_out(self.sid), cb=self._queue_decoded(TTSOut))
            )

    async def _run(self) -> None:
        subs = self._subs
        try:
            await self.emit(AgentState(state="thinking", turn_id=self.tid))
            messages = await self._prepare()
            await self._claim_stages(messages, subs)
            await self._loop(messages, subs)
        except asyncio.CancelledError:
            self.st.interrupted = True
            raise
        except SessionGone:
            self.st.failed = SessionGone.reason
        except Exception as exc:
            log.exception("turn %s failed", self.tid)
            self.st.failed = self.st.failed or f"the reply could not be produced: {exc}"
        finally:
            await self.release()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish())

    @property
    def holds_subscriptions(self) -> bool:
        return bool(self._subs)

    async def release(self) -> None:
        """Unsubscribe this turn's subscriptions (again: nothing). The worker also calls it when
        the turn's task ends, which covers a task cancelled before it ever ran."""
        subs, self._subs[:] = list(self._subs), []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _prepare(self) -> list[Any]:
        # Let a reply that was interrupted by this turn write its history first.
        deadline = time.monotonic() + 2.0
        while True:
            begun = await self.store.begin_turn(
                self.sid, self.rid, force=time.monotonic() >= deadline
            )
            if begun.state != "busy":
                break
            await asyncio.sleep(0.02)
        if begun.state == "ended":
            self.gone = True
            raise SessionGone(self.sid)
        start = begun.start
        # The user message enters history with the reply, when the turn ends (a speculative
        # turn may still be retracted); the LLM sees it now.
        window = begun.history + [self.user_message]
        advance = plan_window(window, 0, self.agent)
        if advance:
            await self.store.set_window_start(self.sid, start + advance)
        return to_chat(
            self.agent, window[advance:], begun.summary, begun.unsummarized + window[:advance]
        )

    async def _claim_stages(self, messages: list[Any], subs: list[Any]) -> None:
        """Claim a TTS replica and an LLM replica at once. The LLM's first words wait in the
        inbox until both have answered, so none reach the TTS before it has subscribed."""
        if not self.voice:
            await self._claim_llm(messages, subs)
            return
        # Both requests leave in the same write to the bus.
        tts = asyncio.ensure_future(self._claim_tts())
        llm = asyncio.ensure_future(self._claim_llm(messages, subs))
        try:
            await llm
        except BaseException:
            tts.cancel()
            raise
        await tts

    async def _claim_tts(self) -> None:
        try:
            await bus.request(
                self.nc,
                subjects.TTS_CLAIM,
                TTSRequest(
                    session_id=self.sid, turn_id=self.tid, reply_id=self.rid, voice=self.agent.voice
                ),
                ClaimAck,
                timeout=self.cfg.claim_timeout_s,
            )
            self.st.tts_done = False
            self.st.playback_done = False
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            log.warning("turn %s: no tts: %s", self.tid, exc)
            self.voice = False
            await self.error(
                ErrorCode.TTS_UNAVAILABLE, "speech output is unavailable; replying in text"
            )

    async def _claim_llm(self, messages: list[Any], subs: list[Any]) -> None:
        last: Exception | None = None
        while self.st.llm_attempts < self.cfg.llm_attempts:
            self.st.llm_attempts += 1
            stream_id = f"{self.rid}a{self.st.llm_attempts}"
            subs.append(
                await self.nc.subscribe(
                    subjects.llm_out(self.sid, stream_id), cb=self._queue_decoded(LLMOut, stream_id)
                )
            )
            try:
                await bus.request(
                    self.nc,
                    subjects.LLM_CLAIM,
                    LLMRequest(
                        session_id=self.sid,
                        turn_id=self.tid,
                        reply_id=self.rid,
                        stream_id=stream_id,
                        messages=messages,
                        params=self.agent.llm,
                    ),
                    ClaimAck,
                    timeout=self.cfg.claim_timeout_s,
                )
                self.llm_stream = stream_id
                return
            except (bus.BusUnavailable, bus.RemoteError) as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"no language model available ({last})")

    async def _loop(self, messages: list[Any], subs: list[Any]) -> None:
        st = self.st
        while not (st.llm_done and st.playback_done and self.confirmed):
            timeout = self._timeout()
            try:
                item = await get_within(self.inbox, timeout)
            except TimeoutError:
                if not st.llm_done:
                    if not st.text and st.llm_attempts < self.cfg.llm_attempts:
                        log.warning("turn %s: no answer from the llm, trying another", self.tid)
                        await self._cancel_llm()
                        await self._claim_llm(messages, subs)
                    else:
                        await self._apologize("the language model did not answer in time")
                    continue
                st.failed = "the speech output stopped responding"
                if self.voice and st.started_speaking:
                    await self._stop_playback()
                return
            if isinstance(item, Interrupt):
                await self._on_interrupt(item)
                return
            if not await self._handle(item):
                return

    async def _cancel_llm(self) -> None:
        """Stop the current generation (only it: the TTS keeps what it has) and ignore it."""
        stream, self.llm_stream = self.llm_stream, None
        if stream is not None:
            await bus.publish(
                self.nc,
                subjects.interrupt(self.sid),
                Interrupt(session_id=self.sid, reply_id=stream, turn_id=self.tid, reason="failure"),
            )

    async def _apologize(self, reason: str) -> None:
        """The LLM is slow or failing: say so briefly, in text and voice, and carry on."""
        log.warning("turn %s: %s; apologizing", self.tid, reason)
        await self._cancel_llm()
        text = "" if not self.st.text or self.st.text[-1].endswith(" ") else " "
        text += self.cfg.apology_text
        self.st.text.append(text)
        self.st.llm_done = True
        await self.error(ErrorCode.LLM_UNAVAILABLE, reason)
        if len(self.st.text) == 1 and not self.voice:
            await self.emit(AgentState(state="speaking", turn_id=self.tid))
        await self.emit(ReplyDelta(turn_id=self.tid, reply_id=self.rid, text=text))
        if self.voice:
            await self._tts_text(text, final=True)

    def _timeout(self) -> float:
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
            if stream != self.llm_stream:
                return True  # an abandoned attempt (replaced, or apologized for)
        if isinstance(item, LLMDelta):
            if not st.text:
                st.metrics["first_delta_ms"] = self._since_end()
                if not self.voice:
                    await self.emit(AgentState(state="speaking", turn_id=self.tid))
            st.text.append(item.text)
            await self.emit(ReplyDelta(turn_id=self.tid, reply_id=self.rid, text=item.text))
            if self.voice:
                await self._tts_text(item.text, final=False)
        elif isinstance(item, LLMDone):
            st.llm_done = True
            st.metrics["llm_first_token_ms"] = item.first_token_ms
            st.metrics["llm_tokens_per_s"] = item.tokens_per_s
            if self.voice:
                await self._tts_text("", final=True)
        elif isinstance(item, LLMError):
            await self._apologize(f"the language model failed: {item.message}")
        elif isinstance(item, TTSSegment) and item.reply_id == self.rid:
            if item.index == 0:
                st.metrics["tts_first_audio_ms"] = item.first_audio_ms
        elif isinstance(item, TTSDone) and item.reply_id == self.rid:
            st.tts_done = True
            if item.error and not item.cancelled:
                await self.error(ErrorCode.TTS_FAILED, item.error)
        elif isinstance(item, TurnConfirmed) and item.turn_id == self.tid:
            await self._confirm(item)
        elif isinstance(item, PlaybackStarted) and item.reply_id == self.rid:
            st.started_speaking = True
            if self.submit.speech_end_ms is not None:
                st.metrics["first_audio_ms"] = round(item.at_ms - self.submit.speech_end_ms, 1)
            await self.emit(AgentState(state="speaking", turn_id=self.tid))
        elif isinstance(item, PlaybackDone) and item.reply_id == self.rid:
            st.playback_done = True
            st.spoken_text = item.spoken_text
            if item.interrupted:
                st.interrupted = True
                st.llm_done = True
                return False
        return True

    async def _tts_text(self, text: str, final: bool) -> None:
        self.st.tts_seq += 1
        await bus.publish(
            self.nc,
            subjects.tts_in(self.sid, self.rid),
            TTSText(reply_id=self.rid, seq=self.st.tts_seq, text=text, final=final),
        )

    async def _on_interrupt(self, intr: Interrupt) -> None:
        self.st.interrupted = True
        if intr.reason == "retracted":
            self.retracted = True
            return
        if intr.spoken_text is not None:
            self.st.spoken_text = intr.spoken_text
        elif self.voice:
            await self._await_playback_done(1.0)

    async def _stop_playback(self) -> None:
        """A stage failed mid-reply: stop the audio and learn what was played."""
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(session_id=self.sid, reply_id=self.rid, turn_id=self.tid, reason="failure"),
        )
        await self._await_playback_done(1.0)

    async def _await_playback_done(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                item = await get_within(self.inbox, left)
            except TimeoutError:
                return
            if isinstance(item, PlaybackDone) and item.reply_id == self.rid:
                self.st.spoken_text = item.spoken_text
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
            await self.error(ErrorCode.TURN_FAILED, st.failed or SessionGone.reason)
            await self.emit(AgentState(state="listening", turn_id=self.tid))
            return
        if not self.confirmed:  # the gateway vanished before confirming: release what we have
            self.confirmed = True
            held, self._held = self._held, []
            for event in held:
                await self.emit(event)
        full = "".join(st.text).strip()
        cut = st.interrupted or st.failed is not None
        if cut:
            spoken = (
                st.spoken_text if st.spoken_text is not None else ("" if self.voice else full)
            ).strip()
        else:
            spoken = full
        messages = [self.user_message]
        if full or cut:
            messages.append(
                HistoryMessage(
                    role="assistant",
                    text=spoken,
                    turn_id=self.tid,
                    interrupted=cut,
                    created_at=time.time(),
                )
            )
        await self.store.append(self.sid, *messages)
        self.written = True
        await self.store.clear_inflight(self.sid, self.rid)
        if st.failed is not None:
            await self.error(ErrorCode.TURN_FAILED, st.failed)
        if full or not st.failed:
            await self.emit(
                ReplyDone(
                    turn_id=self.tid,
                    reply_id=self.rid,
                    text=full,
                    spoken_text=spoken,
                    interrupted=cut,
                )
            )
        m = st.metrics
        await self.emit(
            TurnMetrics(
                turn_id=self.tid,
                reply_id=self.rid,
                source=self.submit.source,
                end_of_turn_ms=self.submit.end_of_turn_ms,
                asr_ms=self.submit.asr_ms,
                asr_wait_ms=self.submit.asr_wait_ms,
                llm_first_token_ms=m.get("llm_first_token_ms"),
                llm_tokens_per_s=m.get("llm_tokens_per_s"),
                tts_first_audio_ms=m.get("tts_first_audio_ms"),
                first_audio_ms=m.get("first_audio_ms"),
                first_delta_ms=m.get("first_delta_ms"),
                total_ms=self._since_end(),
            )
        )
        await self.emit(AgentState(state="listening", turn_id=self.tid))
