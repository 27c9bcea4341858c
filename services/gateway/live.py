"""A session as one gateway replica holds it: event sockets, the WebRTC peer, turn detection,
barge-in and reply playback.

Voice in: the browser's Opus track is decoded, resampled to 16 kHz mono PCM16 and fed to the
turn detector (Silero VAD). At speech onset an ASR replica is claimed and the utterance's frames
are streamed to it; at end of turn the final transcript is fetched and the turn is submitted to
the session service.

Barge-in: speech onset over a reply pauses the outgoing audio at once. When the speech has lasted
the agent's minimum interruption time the interrupt is confirmed and broadcast, with the text
actually played; if it stops sooner, playback resumes where it paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import WebSocket
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.messages import (
    AgentConfig,
    AgentState,
    AsrClaim,
    AsrEnd,
    AsrResult,
    BadMessage,
    ClaimAck,
    ErrorEvent,
    Interrupt,
    InterruptReason,
    Message,
    PlaybackDone,
    PlaybackStarted,
    TranscriptFinal,
    TTSDone,
    TTSOut,
    TTSSegment,
    TurnAccepted,
    TurnConfirmed,
    TurnPrefill,
    TurnSubmit,
    decode,
    now_ms,
)
from services.common.metrics import STAGE_SECONDS

from .limits import Limits
from .playback import ReplyAudioTrack, ReplyPlayback
from .settings import GatewaySettings
from .turntrace import TurnTraces
from .vad import (
    FRAME_MS,
    SileroVADStream,
    SpeechEnd,
    SpeechFrame,
    SpeechPause,
    SpeechResume,
    SpeechStart,
    TurnDetector,
    shared_model,
)

log = logging.getLogger(__name__)

BUSY_RETRY_S = 0.1  # an ASR claim refused for capacity is asked again after this


class Utterance:
    """Audio of one user utterance on its way to an ASR replica."""

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self.audio = bytearray()  # everything, kept for a retry on another replica
        self.claimed = asyncio.Event()
        self.failed = False
        self.sent = 0  # bytes of `audio` already published
        self.ctx: Any = None  # the turn's trace context
        self.speculative = False  # a speculative final pass covers all the speech so far
        self.pauses = 0  # pauses and resumes so far: tells a stale speculative result
        self.spec_text: str | None = None  # a speculative turn was submitted with this text
        self.spec_asr_ms: float | None = None
        self.spec_reply: str | None = None
        self.confirmed = False
        self.ended = False
        self.accepted = asyncio.Event()  # the session answered the speculative submit


class LiveSession:
    def __init__(
        self,
        nc: NATS,
        settings: GatewaySettings,
        session_id: str,
        agent: AgentConfig,
        limits: Limits,
    ) -> None:
        self.limits = limits
        self.nc = nc
        self.cfg = settings
        self.sid = session_id
        self.agent = agent
        self.sockets: set[WebSocket] = set()
        self.track = self._make_track()
        self.pc: Any = None
        self.detector = TurnDetector(
            SileroVADStream(shared_model()),
            end_of_turn_silence_ms=agent.end_of_turn_silence_ms,
            pause_ms=min(settings.speculative_pause_ms, agent.end_of_turn_silence_ms),
        )
        self.utt: Utterance | None = None
        self.active_turn: str | None = None  # a turn in flight (submitted, not yet done)
        self.active_reply: str | None = None
        self.stopped_replies: set[str] = set()  # stopped or retracted: their audio is dropped
        self.held_turns: set[str] = set()  # speculative turns not yet confirmed: audio waits
        self.mic_ended = False  # the peer's microphone track ended (it went away)
        self.last_state = AgentState(state="listening").model_dump_json()  # for a new socket
        self.barge_pending = False
        self.tentative = False  # reply paused on one speech-like frame, not yet confirmed
        self.turn_activity = time.monotonic()  # last sign of life of the turn in flight
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.traces = TurnTraces(session_id)
        self.last_seen = time.monotonic()
        self.closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        self._subs.append(await self.nc.subscribe(subjects.events(self.sid), cb=self._on_event))
        self._subs.append(await self.nc.subscribe(subjects.tts_out(self.sid), cb=self._on_tts))
        self._subs.append(await self.nc.subscribe(subjects.interrupt(self.sid), cb=self._on_intr))
        self.spawn(self._watch_turns(), "turn-watchdog")

    async def _watch_turns(self) -> None:
        """A turn whose session replica vanished would wait forever: when a turn in flight has
        shown no sign of life (events, reply audio) for `turn_stall_timeout_s`, the client
        gets `turn_failed` for it and the session is free for the next turn."""
        while True:
            await asyncio.sleep(1.0)
            turn = self.active_turn
            reply = self.track.reply
            # Reply audio still queued to play is a sign of life; a reply whose audio ran out
            # while more was due (its tts not done) is not.
            if turn is None or (
                reply is not None and (reply.buffer or reply.received or reply.all_received)
            ):
                self.turn_activity = time.monotonic()
                continue
            if time.monotonic() - self.turn_activity > self.cfg.turn_stall_timeout_s:
                log.warning("turn %s: no sign of life: failing it", turn)
                if reply is not None and reply.turn_id == turn:
                    self.track.stop_reply()  # nothing more will come for it
                self.active_turn = self.active_reply = None
                await self.emit(
                    ErrorEvent(
                        code="turn_failed", turn_id=turn, message="the turn stopped responding"
                    )
                )

    async def close(self) -> None:
        self.closed = True
        await self._finish_reply(interrupted=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for t in list(self._tasks):
            t.cancel()
        self.traces.close_all()

    def _make_track(self) -> ReplyAudioTrack:
        return ReplyAudioTrack(
            self._on_playback_started,
            self._on_playback_finished,
            suppress_silence=self.cfg.suppress_silence,
        )

    def new_track(self) -> ReplyAudioTrack:
        """A fresh outgoing track for a new peer connection (aiortc stops a track when its
        sender ends, so tracks are never shared); the reply being played moves over to it."""
        old = self.track
        self.track = self._make_track()
        self.track.reply, self.track.paused = old.reply, old.paused
        old.reply = None
        return self.track

    async def media_gone(self, pc: Any) -> None:
        """The peer connection failed or closed: stop the reply it was hearing."""
        if self.pc is pc:
            self.pc = None
            await self._finish_reply(interrupted=True)

    @property
    def has_voice(self) -> bool:
        return (
            self.pc is not None
            and not self.mic_ended
            and self.pc.connectionState not in ("closed", "failed")
        )

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(self, event: Message) -> None:
        await bus.publish(self.nc, subjects.events(self.sid), event)

    # -- events to the client ------------------------------------------------------------------
    async def _on_event(self, msg: Msg) -> None:
        self.turn_activity = time.monotonic()
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        etype = event.get("type")
        if etype == "transcript.partial" and self._idle():
            await self._prefill(str(event.get("text") or ""))
        if etype == "reply.done":
            cut = bool(event.get("interrupted"))
            self.traces.end(
                event.get("turn_id"), "interrupted" if cut else "done", {tm.ATTR_INTERRUPTED: cut}
            )
        elif etype == "error" and event.get("code") == "turn_failed":
            self.traces.end(event.get("turn_id"), "failed")
        if etype == "agent.state":
            self.last_state = msg.data.decode()
        if etype == "reply.delta":
            self.active_reply = event.get("reply_id")
        elif etype in ("reply.done", "error") and event.get("turn_id") == self.active_turn:
            if etype == "reply.done" or event.get("code") == "turn_failed":
                self.active_turn = None
                self.active_reply = None
        text = msg.data.decode()
        for ws in list(self.sockets):
            try:
                await ws.send_text(text)
            except Exception:
                self.sockets.discard(ws)

    # -- reply audio from TTS ------------------------------------------------------------------
    async def _on_tts(self, msg: Msg) -> None:
        self.turn_activity = time.monotonic()
        headers = msg.headers or {}
        if headers.get(bus.H_TYPE) == "audio":
            self.track.push(
                headers.get(bus.H_REPLY, ""),
                int(headers.get(bus.H_SEGMENT, "0")),
                msg.data,
                int(headers.get(bus.H_RATE, "22050")),
            )
            return
        try:
            item = decode(TTSOut, msg.data)
        except BadMessage:
            return
        if item.reply_id in self.stopped_replies:
            return
        if not self.has_voice:
            # Nobody is listening (the peer went away): the reply is not played at all.
            if isinstance(item, TTSDone):
                await bus.publish(
                    self.nc,
                    subjects.playback(self.sid),
                    PlaybackDone(reply_id=item.reply_id, spoken_text="", interrupted=True),
                )
            return
        if isinstance(item, TTSSegment):
            current = self.track.reply
            if current is None or current.reply_id != item.reply_id:
                if current is not None:
                    await self._finish_reply(interrupted=True)
                self.track.begin(item.reply_id, item.turn_id, held=item.turn_id in self.held_turns)
            self.track.segment(item.reply_id, item.index, item.text)
        elif isinstance(item, TTSDone):
            current = self.track.reply
            if current is None or current.reply_id != item.reply_id:
                # Nothing of it is playing (no audio, or already played): report it done.
                await bus.publish(
                    self.nc,
                    subjects.playback(self.sid),
                    PlaybackDone(
                        reply_id=item.reply_id, spoken_text="", interrupted=item.cancelled
                    ),
                )
            else:
                self.track.tts_done(item.reply_id)

    async def _on_playback_started(self, pb: ReplyPlayback) -> None:
        end_of_speech = self.traces.speech_end_ms.get(pb.turn_id)
        if end_of_speech is not None:
            first_audio = now_ms() - end_of_speech
            STAGE_SECONDS.labels("gateway", "first_audio").observe(first_audio / 1000)
            self.traces.stage(
                pb.turn_id,
                "first_audio",
                end_of_speech,
                {tm.ATTR_FIRST_AUDIO_MS: round(first_audio, 1)},
            )
        try:
            await bus.publish(
                self.nc,
                subjects.playback(self.sid),
                PlaybackStarted(reply_id=pb.reply_id, at_ms=now_ms()),
            )
        except Exception as exc:  # a bus outage must not stop the audio
            log.warning("session %s: playback.started not published: %s", self.sid, exc)

    def _on_playback_finished(self, pb: ReplyPlayback) -> None:
        self.spawn(
            bus.publish(
                self.nc,
                subjects.playback(self.sid),
                PlaybackDone(reply_id=pb.reply_id, spoken_text=pb.spoken_text()),
            ),
            "pb-done",
        )

    async def _finish_reply(self, interrupted: bool) -> ReplyPlayback | None:
        pb = self.track.stop_reply()
        if pb is not None:
            self.stopped_replies.add(pb.reply_id)
            await bus.publish(
                self.nc,
                subjects.playback(self.sid),
                PlaybackDone(
                    reply_id=pb.reply_id, spoken_text=pb.spoken_text(), interrupted=interrupted
                ),
            )
        return pb

    async def _on_intr(self, msg: Msg) -> None:
        """An interrupt raised elsewhere (a failed stage, the session ended): stop the audio."""
        try:
            intr = decode(Interrupt, msg.data)
        except BadMessage:
            return
        if intr.reason in ("failure", "session_end"):
            current = self.track.reply
            if current is not None and intr.reply_id in (None, current.reply_id):
                await self._finish_reply(interrupted=True)

    # -- interrupts from here ------------------------------------------------------------------
    async def interrupt(self, reason: InterruptReason) -> None:
        """Stop whatever reply is in flight and tell every stage, with what was played."""
        if self.active_turn is None and self.track.reply is None:
            return
        pb = self.track.stop_reply()
        spoken: str | None = None
        reply_id = self.active_reply
        if pb is not None:
            self.stopped_replies.add(pb.reply_id)
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

    # -- turns ---------------------------------------------------------------------------------
    async def submit_text(self, text: str) -> None:
        turn_id = bus.new_id()
        if self.active_turn is not None:
            await self.interrupt("new_turn")
        ctx = self.traces.start(turn_id, "text")
        self.traces.speech_end_ms[turn_id] = now_ms()
        await self.emit(TranscriptFinal(turn_id=turn_id, text=text, source="text"))
        await self._submit(
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

    async def _submit(self, submit: TurnSubmit, ctx: Any) -> None:
        self.active_turn = submit.turn_id
        self.active_reply = None
        self.turn_activity = time.monotonic()
        try:
            accepted = await bus.request(
                self.nc,
                subjects.SESSION_TURN,
                submit,
                TurnAccepted,
                timeout=self.cfg.claim_timeout_s,
                ctx=ctx,
            )
            if self.active_turn == submit.turn_id:
                self.active_reply = accepted.reply_id
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            latest = self.active_turn == submit.turn_id
            if latest:
                self.active_turn = None
            await self.emit(
                ErrorEvent(
                    code="turn_failed",
                    turn_id=submit.turn_id,
                    message=f"the turn could not start: {exc}",
                )
            )
            if latest:  # a session replica may have said "thinking" before it gave the turn up
                await self.emit(AgentState(state="listening", turn_id=submit.turn_id))

    # -- voice in --------------------------------------------------------------------------------
    async def consume_track(self, track: Any, pc: Any) -> None:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        gap_s = self.cfg.mic_gap_ms / 1000.0
        pending: asyncio.Future[Any] | None = None
        last_frame = time.monotonic()
        filled_ms = 0.0  # silence fed since the last frame (a DTX gap)
        while True:
            try:
                if self.detector.silence_ms > 0 or pending is not None:
                    # A turn's trailing silence: a browser on Opus DTX stops sending here, so
                    # the missing time counts as silence toward the end of the turn.
                    if pending is None:
                        pending = asyncio.ensure_future(track.recv())
                    done, _ = await asyncio.wait({pending}, timeout=gap_s)
                    if not done:
                        filled_ms = await self._fill_gap(last_frame, filled_ms)
                        continue
                    frame, pending = pending.result(), None
                else:
                    frame = await track.recv()
            except Exception:
                break
            last_frame = self.last_seen = time.monotonic()
            filled_ms = 0.0
            pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in resampler.resample(frame))
            if len(pcm) > self.cfg.max_audio_bytes_per_frame or not await self.limits.audio(
                self.sid, len(pcm) // 32
            ):
                continue  # oversized, or faster than real time allows: dropped
            for ev in self.detector.feed(pcm):
                await self._on_turn_event(ev)
            self._tentative_pause()
        if pending is not None:
            pending.cancel()
        if self.pc is pc:  # the client went away (not replaced): what it was hearing stops here
            self.mic_ended = True
            await self._finish_reply(interrupted=True)

    async def _fill_gap(self, last_frame: float, filled_ms: float) -> float:
        """No microphone frame for a while inside a turn's trailing silence: feed the time since
        the last frame to the turn detector as silence. Returns the silence fed since then."""
        missing_ms = (time.monotonic() - last_frame) * 1000.0 - filled_ms
        if missing_ms < FRAME_MS:
            return filled_ms
        ms = int(missing_ms // FRAME_MS) * FRAME_MS
        for ev in self.detector.feed(bytes(ms * 32)):  # 16 kHz PCM16: 32 bytes a millisecond
            await self._on_turn_event(ev)
        return filled_ms + ms

    def _tentative_pause(self) -> None:
        """Pause a playing reply at the first speech-like frame, one frame before the turn
        detector confirms speech; resume at once if it does not."""
        d = self.detector
        if d.in_speech:
            self.tentative = False  # SpeechStart took over (it pauses, and resumes if short)
        elif d.last_prob >= d.threshold:
            if self.track.reply is not None and not self.track.paused and self.agent.interruptions:
                self.track.pause()
                self.tentative = True
        elif self.tentative:
            self.tentative = False
            self.track.resume()

    def _stream_ms_to_wall(self, t_ms: int) -> float:
        return now_ms() - (self.detector.t_ms - t_ms)

    async def _on_turn_event(self, ev: Any) -> None:
        if isinstance(ev, SpeechStart):
            speaking_over = self.track.reply is not None or self.active_turn is not None
            if speaking_over and not self.agent.interruptions:
                return
            if self.track.reply is not None:
                self.track.pause()
            self.barge_pending = speaking_over
            self.utt = Utterance(bus.new_id())
            self.utt.ctx = self.traces.start(
                self.utt.turn_id, "voice", self._stream_ms_to_wall(ev.t_ms)
            )
            self.utt.audio.extend(ev.preroll)
            self.spawn(self._claim_asr(self.utt), "asr-claim")
            if not speaking_over:
                await self._prefill("")
        elif isinstance(ev, SpeechFrame):
            utt = self.utt
            if utt is None:
                return
            if len(utt.audio) < self.cfg.max_utterance_s * 32000:
                utt.audio.extend(ev.pcm)
            if utt.claimed.is_set() and not utt.failed:
                await self._flush_audio(utt)
            if self.barge_pending and self.detector.speech_ms >= self.agent.min_interruption_ms:
                self.barge_pending = False
                await self.interrupt("barge_in")
        elif isinstance(ev, SpeechPause):
            utt = self.utt
            if utt is not None and utt.claimed.is_set() and not utt.failed:
                utt.speculative = True
                utt.pauses += 1
                if self.cfg.speculative_turns and self._idle():
                    speech_end = self._stream_ms_to_wall(self.detector.speech_end_ms)
                    self.spawn(self._speculate(utt, utt.pauses, speech_end), "speculate")
                else:
                    await self._control(utt, "peek")
        elif isinstance(ev, SpeechResume):
            utt = self.utt
            if utt is not None and utt.speculative:
                utt.speculative = False
                utt.pauses += 1
                await self._control(utt, "resume")
                if utt.spec_text is not None:
                    await self._retract(utt)
        elif isinstance(ev, SpeechEnd):
            utt, self.utt = self.utt, None
            if utt is not None:
                utt.ended = True
            if self.barge_pending:  # too short to interrupt: carry on speaking
                self.barge_pending = False
                self.track.resume()
            if utt is not None:
                speech_end = self._stream_ms_to_wall(ev.speech_end_ms)
                eot_ms = ev.t_ms - ev.speech_end_ms
                self.traces.speech_end_ms[utt.turn_id] = speech_end
                self.traces.stage(utt.turn_id, "end_of_turn", speech_end, {tm.ATTR_EOT_MS: eot_ms})
                if utt.spec_text is not None and utt.speculative:
                    self.spawn(self._confirm(utt, speech_end, eot_ms), "confirm")
                else:
                    self.spawn(self._end_utterance(utt, speech_end, eot_ms), "asr-end")

    # -- speculative turns ------------------------------------------------------------------------
    def _idle(self) -> bool:
        return self.active_turn is None and self.track.reply is None

    async def _prefill(self, text: str) -> None:
        """The user is speaking and nothing is in flight: let the session have the coming
        turn's prompt evaluated (a hint; the LLM's first token then waits on less)."""
        if self.cfg.speculative_turns:
            with contextlib.suppress(Exception):
                await bus.publish(
                    self.nc, subjects.SESSION_PREFILL, TurnPrefill(session_id=self.sid, text=text)
                )

    async def _speculate(self, utt: Utterance, pauses: int, speech_end: float) -> None:
        """Early in the end-of-turn silence: transcribe, and when nothing else is in flight,
        submit the turn at once. The session produces the reply but holds it until the end of
        turn is confirmed (`_confirm`); if the user speaks on, it is retracted (`_retract`)."""
        try:
            result: AsrResult = await bus.request(
                self.nc,
                subjects.asr_utterance(self.sid, utt.turn_id),
                AsrEnd(speech_end_ms=speech_end),
                AsrResult,
                timeout=self.cfg.asr_timeout_s,
                headers={bus.H_CTL: "peek"},
                ctx=utt.ctx,
            )
        except (bus.BusUnavailable, bus.RemoteError):
            return  # the end of turn takes the ordinary path
        if utt.ended or utt.pauses != pauses or not result.text.strip() or not self._idle():
            return
        utt.spec_text, utt.spec_asr_ms = result.text, result.asr_ms
        self.held_turns.add(utt.turn_id)
        submit = TurnSubmit(
            session_id=self.sid,
            turn_id=utt.turn_id,
            text=result.text,
            source="voice",
            voice=self.has_voice,
            speech_end_ms=speech_end,
            asr_ms=result.asr_ms,
            speculative=True,
        )
        try:
            accepted: TurnAccepted = await bus.request(
                self.nc,
                subjects.SESSION_TURN,
                submit,
                TurnAccepted,
                timeout=self.cfg.claim_timeout_s,
                ctx=utt.ctx,
            )
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            log.warning("speculative turn not accepted: %s", exc)
            utt.spec_text = None
            self.held_turns.discard(utt.turn_id)
            utt.accepted.set()
            return
        utt.spec_reply = accepted.reply_id
        utt.accepted.set()
        if utt.spec_text is None:  # retracted while the session was accepting it
            await self._retract(utt, accepted.reply_id)
        elif utt.confirmed and self.active_turn == utt.turn_id:
            self.active_reply = accepted.reply_id

    async def _retract(self, utt: Utterance, reply_id: str | None = None) -> None:
        reply_id = reply_id or utt.spec_reply
        log.info(
            "turn %s: the user spoke on; speculative reply %s retracted", utt.turn_id, reply_id
        )
        utt.spec_text, utt.spec_reply = None, None
        self.held_turns.discard(utt.turn_id)
        if reply_id is not None:
            self.stopped_replies.add(reply_id)
        pb = self.track.reply
        if pb is not None and pb.turn_id == utt.turn_id:
            self.stopped_replies.add(pb.reply_id)
            self.track.stop_reply()
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(
                session_id=self.sid, reply_id=reply_id, turn_id=utt.turn_id, reason="retracted"
            ),
            ctx=utt.ctx,
        )

    async def _confirm(self, utt: Utterance, speech_end: float, eot_ms: float) -> None:
        """The end of turn is confirmed: release the speculative reply (text and audio)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.claim_timeout_s):  # not wait_for: no extra task
                await utt.accepted.wait()
        if utt.spec_text is None:  # the session did not take it: the ordinary path
            await self._end_utterance(utt, speech_end, eot_ms)
            return
        utt.confirmed = True
        self.active_turn, self.active_reply = utt.turn_id, utt.spec_reply
        self.held_turns.discard(utt.turn_id)
        await self.emit(TranscriptFinal(turn_id=utt.turn_id, text=utt.spec_text, source="voice"))
        await bus.publish(
            self.nc,
            subjects.playback(self.sid),
            TurnConfirmed(turn_id=utt.turn_id, end_of_turn_ms=eot_ms, speech_end_ms=speech_end),
            ctx=utt.ctx,
        )
        self.track.release(utt.turn_id)
        self.spawn(self._close_utterance(utt), "asr-close")

    async def _close_utterance(self, utt: Utterance) -> None:
        """End the ASR side of a confirmed speculative turn (its pass is reused, nothing new)."""
        with contextlib.suppress(bus.BusUnavailable, bus.RemoteError):
            await bus.request(
                self.nc,
                subjects.asr_utterance(self.sid, utt.turn_id),
                AsrEnd(speech_end_ms=now_ms(), reuse_speculative=True),
                AsrResult,
                timeout=self.cfg.asr_timeout_s,
                headers={bus.H_CTL: "end"},
                ctx=utt.ctx,
            )

    async def _control(self, utt: Utterance, ctl: str) -> None:
        await self.nc.publish(
            subjects.asr_utterance(self.sid, utt.turn_id),
            AsrEnd(speech_end_ms=now_ms()).encode(),
            headers=tm.inject({bus.H_CTL: ctl}, utt.ctx),
        )

    async def _claim_asr(self, utt: Utterance) -> None:
        claim = AsrClaim(
            session_id=self.sid,
            turn_id=utt.turn_id,
            language=self.agent.language,
            hot_words=self.agent.hot_words,
        )
        give_up = time.monotonic() + self.cfg.claim_timeout_s
        while True:
            try:
                await bus.request(
                    self.nc,
                    subjects.ASR_CLAIM,
                    claim,
                    ClaimAck,
                    timeout=self.cfg.claim_timeout_s,
                    ctx=utt.ctx,
                )
                utt.sent = 0
            except (bus.BusUnavailable, bus.RemoteError) as exc:
                # Every replica asked was at capacity: the audio waits in `utt.audio`, so ask
                # again shortly (an utterance ends within a second or two somewhere), also once
                # the user has stopped speaking: the answer comes late rather than not at all.
                busy = isinstance(exc, bus.RemoteError) and exc.error.code == "busy"
                if busy and time.monotonic() < give_up:
                    await asyncio.sleep(BUSY_RETRY_S)
                    continue
                log.warning("asr claim failed: %s", exc)
                utt.failed = True
            break
        utt.claimed.set()
        if not utt.failed:
            await self._flush_audio(utt)

    async def _flush_audio(self, utt: Utterance) -> None:
        subject = subjects.asr_utterance(self.sid, utt.turn_id)
        step = 1024  # 32 ms frames
        while utt.sent < len(utt.audio):
            await self.nc.publish(subject, bytes(utt.audio[utt.sent : utt.sent + step]))
            utt.sent += step

    async def _end_utterance(self, utt: Utterance, speech_end: float, eot_ms: float) -> None:
        eot_at = now_ms()
        await utt.claimed.wait()
        result: AsrResult | None = None
        for attempt in range(2):
            if utt.failed or attempt:
                utt.failed = False
                await self._claim_asr(utt)  # another replica, with the whole utterance again
                if utt.failed:
                    continue
            try:
                result = await bus.request(
                    self.nc,
                    subjects.asr_utterance(self.sid, utt.turn_id),
                    AsrEnd(
                        speech_end_ms=speech_end, reuse_speculative=utt.speculative and not attempt
                    ),
                    AsrResult,
                    timeout=self.cfg.asr_timeout_s,
                    headers={bus.H_CTL: "end"},
                    ctx=utt.ctx,
                )
                break
            except (bus.BusUnavailable, bus.RemoteError) as exc:
                log.warning("asr final failed for %s (attempt %d): %s", utt.turn_id, attempt, exc)
        if result is None:
            self.track.resume()
            self.traces.end(utt.turn_id, "failed")
            await self.emit(
                ErrorEvent(
                    code="turn_failed",
                    turn_id=utt.turn_id,
                    message="speech recognition failed for this turn",
                )
            )
            return
        if not result.text.strip():
            self.track.resume()  # noise or silence: no turn
            self.traces.end(utt.turn_id, "no_speech")
            return
        if self.active_turn is not None:
            await self.interrupt("new_turn")
        await self.emit(TranscriptFinal(turn_id=utt.turn_id, text=result.text, source="voice"))
        await self._submit(
            TurnSubmit(
                session_id=self.sid,
                turn_id=utt.turn_id,
                text=result.text,
                source="voice",
                voice=self.has_voice,
                speech_end_ms=speech_end,
                end_of_turn_ms=eot_ms,
                asr_ms=result.asr_ms,
                asr_wait_ms=round(now_ms() - eot_at, 1),
            ),
            utt.ctx,
        )
