"""A session as one gateway replica holds it: the wiring of its parts, its event sockets, the
turn in flight, interrupts, typed turns and the turn watchdog.

The parts, each owning its state:
- `mic.Mic`: microphone audio in (a WebRTC track, or any 16 kHz PCM source), DTX gaps filled;
- `turns.Turns`: the turn detector and the turn-taking policy (`turn_policy.py`) carried out;
- `asr_link.AsrLink`: the ASR protocol for each utterance (claim, frames, peek, end);
- `speculation.Speculation`: speculative turns (submit early, confirm or retract) and prefills;
- `reply_out.ReplyOut`: reply audio from the TTS to a sink (the WebRTC track) and the playback
  reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import WebSocket
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.messages import (
    WAITING_EVERY_S,
    AgentConfig,
    AgentState,
    BadMessage,
    ClientEvent,
    ErrorCode,
    ErrorEvent,
    Interrupt,
    InterruptReason,
    Message,
    ReplyDelta,
    ReplyDone,
    SessionEnded,
    TranscriptFinal,
    TranscriptPartial,
    TurnAccepted,
    TurnSubmit,
    TurnWaiting,
    decode,
    now_ms,
)

from .asr_link import AsrLink
from .echo import echo_canceller
from .initiative import Initiative
from .limits import Limits
from .mic import Mic
from .playback import ReplyAudioTrack
from .reply_out import OnFinished, OnStarted, ReplyOut
from .settings import GatewaySettings
from .speculation import Speculation
from .turns import Turns
from .turntrace import TurnTraces
from .vad import SileroVADStream

log = logging.getLogger(__name__)


class LiveSession:
    def __init__(
        self,
        nc: NATS,
        settings: GatewaySettings,
        session_id: str,
        agent: AgentConfig,
        limits: Limits,
        vad: SileroVADStream | None = None,
        messages: int = 0,
    ) -> None:
        """`messages`: in the session's history so far (an empty conversation is greeted)."""
        self.limits = limits
        self.nc = nc
        self.cfg = settings
        self.sid = session_id
        self.agent = agent
        self.sockets: set[WebSocket] = set()
        self.pc: Any = None
        self.active_turn: str | None = None  # a turn in flight (submitted, not yet done)
        self.active_reply: str | None = None
        self.mic_ended = False  # the peer's microphone track ended (it went away)
        self.last_state = AgentState(state="listening").model_dump_json()  # for a new socket
        self.turn_activity = time.monotonic()  # last sign of life of the turn in flight
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.traces = TurnTraces(session_id)
        self.last_seen = time.monotonic()
        self.closed = False
        # the reply taken out of the microphone (clients without echo cancellation)
        self.echo = echo_canceller() if settings.echo_cancellation else None
        self.out = ReplyOut(
            nc, session_id, self.traces, self._make_track, lambda: self.has_voice, self.spawn
        )
        self.asr = AsrLink(nc, session_id, settings, agent)
        self.speculation = Speculation(nc, session_id, settings, self.asr, self.out, self)
        self.turns = Turns(
            session_id,
            settings,
            agent,
            self.traces,
            self.asr,
            self.speculation,
            self.out,
            self,
            vad,
        )
        self.mic = Mic(session_id, settings, limits, self.turns, self._heard, self.echo)
        self.initiative = Initiative(agent, self, empty=messages == 0)

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        self._subs.append(await self.nc.subscribe(subjects.events(self.sid), cb=self._on_event))
        self._subs.append(await self.nc.subscribe(subjects.tts_out_all(self.sid), cb=self._on_tts))
        self._subs.append(
            await self.nc.subscribe(subjects.interrupt(self.sid), cb=self.out.on_interrupt)
        )
        self.spawn(self._watch_turns(), "turn-watchdog")
        self.spawn(self.initiative.run(), "nudges")

    async def _watch_turns(self) -> None:
        """A turn whose session replica vanished would wait forever: when a turn in flight has
        shown no sign of life (events, reply audio) for `turn_stall_timeout_s`, the client
        gets `turn_failed` for it and the session is free for the next turn."""
        while True:
            await asyncio.sleep(1.0)
            turn = self.active_turn
            # Reply audio still queued to play is a sign of life; a reply whose audio ran out
            # while more was due (its tts not done) is not.
            if turn is None or self.out.audio_due:
                self.turn_activity = time.monotonic()
                continue
            if time.monotonic() - self.turn_activity > self.cfg.turn_stall_timeout_s:
                log.warning("turn %s: no sign of life: failing it", turn)
                reply = self.out.playing
                if reply is not None and reply.turn_id == turn:
                    self.out.stop(drop_later=False)  # nothing more will come for it
                self.active_turn = self.active_reply = None
                await self.emit(
                    ErrorEvent(
                        code=ErrorCode.TURN_FAILED,
                        turn_id=turn,
                        message="the turn stopped responding",
                    )
                )

    async def close(self) -> None:
        self.closed = True
        await self.out.finish(interrupted=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for t in list(self._tasks):
            t.cancel()
        self.traces.close_all()

    def _make_track(self, on_started: OnStarted, on_finished: OnFinished) -> ReplyAudioTrack:
        return ReplyAudioTrack(
            on_started,
            on_finished,
            suppress_silence=self.cfg.suppress_silence,
            on_sent=self._reply_sent,
        )

    def cancel_echo(self, on: bool) -> None:
        """Take the reply's echo out of the microphone from now on, or stop doing so."""
        if on and self.echo is None:
            self.echo = echo_canceller()
        elif not on:
            self.echo = None
        self.mic.echo = self.echo

    def _reply_sent(self, pcm48: bytes, pts: int) -> None:
        if self.echo is not None:
            self.echo.played(pcm48, pts)

    def new_track(self) -> ReplyAudioTrack:
        """A fresh outgoing track for a new peer connection (aiortc stops a track when its
        sender ends, so tracks are never shared); the reply being played moves over to it."""
        return self.out.new_sink()

    async def media_gone(self, pc: Any) -> None:
        """The peer connection failed or closed: stop the reply it was hearing."""
        if self.pc is pc:
            self.pc = None
            await self.out.finish(interrupted=True)

    @property
    def has_voice(self) -> bool:
        return (
            self.pc is not None
            and not self.mic_ended
            and self.pc.connectionState not in ("closed", "failed")
        )

    def idle(self) -> bool:
        """No turn in flight and no reply on the output."""
        return self.active_turn is None and self.out.playing is None

    def quiet(self) -> bool:
        """Idle, and nobody speaking."""
        return self.idle() and self.turns.utt is None and not self.turns.detector.in_speech

    async def say(self, text: str) -> None:
        """The agent's own words (a greeting, a nudge), spoken as they are."""
        turn_id = bus.new_id()
        submit = TurnSubmit(
            session_id=self.sid, turn_id=turn_id, text=text, source="agent", voice=self.has_voice
        )
        await self.submit(submit, self.traces.start(turn_id, "agent"))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(self, event: Message) -> None:
        await bus.publish(self.nc, subjects.events(self.sid), event)

    # -- voice in and out ------------------------------------------------------------------------
    async def consume_track(self, track: Any, pc: Any) -> None:
        """Read the peer's microphone track until it ends (its first audio may be greeted)."""
        await self.mic.consume(
            track, lambda: self.spawn(self.initiative.audio_connected(), "greeting")
        )
        if self.pc is pc:  # the client went away (not replaced): what it was hearing stops here
            self.mic_ended = True
            await self.out.finish(interrupted=True)

    def _heard(self) -> None:
        self.last_seen = time.monotonic()

    async def _on_tts(self, msg: Msg) -> None:
        self.turn_activity = time.monotonic()
        await self.out.on_tts(msg)

    # -- events to the client ------------------------------------------------------------------
    async def _on_event(self, msg: Msg) -> None:
        self.turn_activity = time.monotonic()
        try:
            event: ClientEvent = decode(ClientEvent, msg.data)
        except BadMessage as exc:
            log.warning("session %s: bad client event dropped: %s", self.sid, exc)
            return
        text = msg.data.decode()  # forwarded exactly as sent
        failed = isinstance(event, ErrorEvent) and event.code == ErrorCode.TURN_FAILED
        if isinstance(event, TranscriptPartial) and self.idle():
            await self.speculation.prefill(event.text)
        elif isinstance(event, AgentState):
            self.last_state = text
        elif isinstance(event, ReplyDelta):
            self.active_reply = event.reply_id
        elif isinstance(event, ReplyDone):
            cut = event.interrupted
            self.traces.end(
                event.turn_id, "interrupted" if cut else "done", {tm.ATTR_INTERRUPTED: cut}
            )
        elif isinstance(event, ErrorEvent) and failed:
            self.traces.end(event.turn_id, "failed")
        if (
            isinstance(event, ReplyDone | ErrorEvent)
            and (failed or isinstance(event, ReplyDone))
            and event.turn_id == self.active_turn
        ):
            self.active_turn = None
            self.active_reply = None
        for ws in list(self.sockets):
            try:
                await ws.send_text(text)
            except Exception:
                self.sockets.discard(ws)
        if isinstance(event, SessionEnded):
            await self._hang_up()

    async def _hang_up(self) -> None:
        """The session ended (the agent said goodbye): the call and the event sockets close."""
        log.info("session %s ended: hanging up", self.sid)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1000, reason="the session has ended")
        self.sockets.clear()

    # -- the turn in flight ----------------------------------------------------------------------
    def set_in_flight(self, turn_id: str, reply_id: str | None) -> None:
        """A confirmed speculative turn is the turn in flight now."""
        self.active_turn, self.active_reply = turn_id, reply_id

    def reply_accepted(self, turn_id: str, reply_id: str) -> None:
        """The session accepted `turn_id` with `reply_id`: the reply in flight if it still is."""
        if self.active_turn == turn_id:
            self.active_reply = reply_id

    async def interrupt(self, reason: InterruptReason) -> None:
        """Stop whatever reply is in flight and tell every stage, with what was played."""
        if self.active_turn is None and self.out.playing is None:
            return
        pb = self.out.stop()
        spoken: str | None = None
        reply_id = self.active_reply
        if pb is not None:
            spoken = pb.spoken_text()
            reply_id = pb.reply_id
        elif self.has_voice:
            spoken = ""  # nothing of it was heard yet
        started = now_ms()
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(
                session_id=self.sid,
                reply_id=reply_id,
                turn_id=self.active_turn,
                reason=reason,
                spoken_text=spoken,
            ),
            ctx=self.traces.ctx(self.active_turn),
        )
        self.traces.stage(
            self.active_turn,
            "interrupt",
            started,
            {tm.ATTR_REASON: reason, tm.ATTR_REPLY: reply_id},
        )
        self.active_turn = None
        self.active_reply = None

    async def submit_text(self, text: str) -> None:
        turn_id = bus.new_id()
        if self.active_turn is not None:
            await self.interrupt("new_turn")
        ctx = self.traces.start(turn_id, "text")
        self.traces.speech_end_ms[turn_id] = now_ms()
        await self.emit(TranscriptFinal(turn_id=turn_id, text=text, source="text"))
        await self.submit(
            TurnSubmit(
                session_id=self.sid,
                turn_id=turn_id,
                text=text,
                source="text",
                voice=self.has_voice,
                speech_end_ms=now_ms(),
            ),
            ctx,
        )

    def _session_waiting(self, turn_id: str) -> Callable[[float, str], Awaitable[None]]:
        """Tells the client a turn waits for a session replica, after the first second (a
        NATS reconnection is over sooner) and every WAITING_EVERY_S."""
        since = time.monotonic()
        told: float | None = None

        async def waiting(left: float, why: str) -> None:
            nonlocal told
            now = time.monotonic()
            if now - since < 1.0 or (told is not None and now - told < WAITING_EVERY_S):
                return
            if told is None:
                log.warning(
                    "turn %s: waiting %.0f s more for a session replica: %s", turn_id, left, why
                )
            told = now
            event = TurnWaiting(turn_id=turn_id, stage="session", deadline_s=round(left, 1))
            await self.emit(event)

        return waiting

    async def _ask_session(self, submit: TurnSubmit, ctx: Any) -> TurnAccepted:
        """A session replica's acceptance of `submit`, waiting up to `session_wait_s` for one.
        A request nobody heard is sent again as it is; one whose answer never came (its NATS
        server died with it in flight) is sent again as a repeat (`attempt` 2, 3...), which the
        session accepts once for the submission, however many replicas each got a copy."""
        waiting = self._session_waiting(submit.turn_id)
        deadline = time.monotonic() + self.cfg.session_wait_s
        while True:
            try:
                return await bus.request_patiently(
                    self.nc,
                    subjects.SESSION_TURN,
                    submit,
                    TurnAccepted,
                    timeout=self.cfg.claim_timeout_s,
                    wait_s=max(deadline - time.monotonic(), 0.0),
                    again=lambda exc: isinstance(exc, bus.NoResponders),
                    waiting=waiting,
                    ctx=ctx,
                )
            except bus.NoAnswer as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("turn %s: asking again: %s", submit.turn_id, exc)
                submit = submit.model_copy(update={"attempt": submit.attempt + 1})

    async def submit(self, submit: TurnSubmit, ctx: Any) -> None:
        """Submit a turn to a session replica; it is the turn in flight from now on."""
        if submit.source != "agent":
            self.initiative.user_spoke()
        self.active_turn = submit.turn_id
        self.active_reply = None
        self.turn_activity = time.monotonic()
        try:
            accepted = await self._ask_session(submit, ctx)
            self.reply_accepted(submit.turn_id, accepted.reply_id)
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            latest = self.active_turn == submit.turn_id
            if latest:
                self.active_turn = None
            await self.emit(
                ErrorEvent(
                    code=ErrorCode.TURN_FAILED,
                    turn_id=submit.turn_id,
                    message=f"the turn could not start: {exc}",
                )
            )
            if latest:  # a session replica may have said "thinking" before it gave the turn up
                await self.emit(AgentState(state="listening", turn_id=submit.turn_id))
