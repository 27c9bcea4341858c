"""Reply audio from the TTS to a sink, and the playback reports to the session.

`ReplyOut` takes the TTS's output for the session (`va.tts.out.{sid}.*`: segments, audio chunks
and done, in the order they were sent) and plays each reply on its sink: today the WebRTC track
(`playback.ReplyAudioTrack`); any object with the `ReplySink` methods will do. It publishes
`PlaybackStarted` as a reply's first frame goes out and `PlaybackDone` with the text actually
heard, and how long it was paused, when the reply has played, was stopped, or had nobody to
hear it. It remembers the
replies stopped here (their late audio is dropped) and holds the audio of a speculative turn
until the turn is released.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.messages import (
    AudioChunkHeader,
    BadMessage,
    Interrupt,
    PlaybackDone,
    PlaybackStarted,
    TTSDone,
    TTSOut,
    TTSSegment,
    decode,
    now_ms,
)
from services.common.metrics import STAGE_SECONDS

from .playback import PauseLog, ReplyPlayback
from .turntrace import TurnTraces

log = logging.getLogger(__name__)


class ReplySink(Protocol):
    """Where reply audio goes: it plays one reply at a time, paced, and counts what it played.
    It calls back `on_started(reply)` as a reply's first frame goes out and `on_finished(reply)`
    when its last one has."""

    reply: ReplyPlayback | None
    paused: bool

    def begin(self, reply_id: str, turn_id: str, held: bool = False) -> ReplyPlayback: ...
    def release(self, turn_id: str) -> None: ...
    def segment(self, reply_id: str, index: int, text: str) -> None: ...
    def push(self, reply_id: str, index: int, pcm: bytes, rate: int) -> None: ...
    def tts_done(self, reply_id: str) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop_reply(self) -> ReplyPlayback | None: ...


S = TypeVar("S", bound=ReplySink)
OnStarted = Callable[[ReplyPlayback], Awaitable[None]]
OnFinished = Callable[[ReplyPlayback], None]


class ReplyOut(Generic[S]):
    def __init__(
        self,
        nc: NATS,
        session_id: str,
        traces: TurnTraces,
        make_sink: Callable[[OnStarted, OnFinished], S],
        listening: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
    ) -> None:
        self.nc = nc
        self.sid = session_id
        self.traces = traces
        self._make_sink = make_sink
        self._listening = listening  # someone hears the sink (a peer is connected)
        self._spawn = spawn
        self._stopped: set[str] = set()  # stopped or retracted: their audio is dropped
        self._held: set[str] = set()  # speculative turns not yet confirmed: their audio waits
        self.sink: S = make_sink(self._started, self._finished)

    def new_sink(self) -> S:
        """A fresh sink (a new peer connection's track); the reply being played moves to it."""
        old = self.sink
        self.sink = self._make_sink(self._started, self._finished)
        self.sink.reply, self.sink.paused = old.reply, old.paused
        old.reply = None
        return self.sink

    # -- what plays ------------------------------------------------------------------------------
    @property
    def playing(self) -> ReplyPlayback | None:
        """The reply on the sink (playing, paused or held), if any."""
        return self.sink.reply

    @property
    def paused(self) -> bool:
        return self.sink.paused

    @property
    def audio_due(self) -> bool:
        """A reply has audio queued to play, or all of it is here: it is alive."""
        pb = self.sink.reply
        return pb is not None and bool(pb.buffer or pb.received or pb.all_received)

    def pause(self) -> None:
        self.sink.pause()

    def resume(self) -> None:
        self.sink.resume()

    def hold(self, turn_id: str) -> None:
        """The replies of `turn_id` wait, silent, until `release` (a speculative turn)."""
        self._held.add(turn_id)

    def unhold(self, turn_id: str) -> None:
        """Replies of `turn_id` arriving from now on play at once."""
        self._held.discard(turn_id)

    def release(self, turn_id: str) -> None:
        """Let the held reply of `turn_id` play."""
        self.sink.release(turn_id)

    def drop(self, reply_id: str) -> None:
        """Whatever comes of `reply_id` is dropped."""
        self._stopped.add(reply_id)

    def stop(self, drop_later: bool = True) -> ReplyPlayback | None:
        """Stop the reply playing at once; returns it (with what was played). With
        `drop_later`, what else comes of it is dropped."""
        pb = self.sink.stop_reply()
        if pb is not None and drop_later:
            self._stopped.add(pb.reply_id)
        return pb

    async def finish(self, interrupted: bool) -> ReplyPlayback | None:
        """Stop the reply playing and report what of it was heard."""
        pb = self.stop()
        if pb is not None:
            await self._done(pb.reply_id, pb.spoken_text(), interrupted, pb)
        return pb

    async def _done(
        self, reply_id: str, spoken: str, interrupted: bool, pb: ReplyPlayback | None = None
    ) -> None:
        pauses = pb.pauses if pb is not None else PauseLog()  # none played: no pause
        await bus.publish(
            self.nc,
            subjects.playback(self.sid),
            PlaybackDone(
                reply_id=reply_id,
                spoken_text=spoken,
                interrupted=interrupted,
                paused_ms=round(pauses.total_ms, 1),
                longest_pause_ms=round(pauses.longest_ms, 1),
                pauses=pauses.count,
            ),
        )

    # -- from the bus ----------------------------------------------------------------------------
    async def on_tts(self, msg: Msg) -> None:
        if AudioChunkHeader.is_audio(msg.headers):
            try:
                chunk = AudioChunkHeader.decode(msg.headers)
            except BadMessage as exc:
                log.warning("session %s: audio chunk dropped: %s", self.sid, exc)
                return
            self.sink.push(chunk.reply_id, chunk.segment, msg.data, chunk.sample_rate)
            return
        try:
            item = decode(TTSOut, msg.data)
        except BadMessage:
            return
        if item.reply_id in self._stopped:
            return
        if not self._listening():
            # Nobody is listening (the peer went away): the reply is not played at all.
            if isinstance(item, TTSDone):
                await self._done(item.reply_id, "", True)
            return
        if isinstance(item, TTSSegment):
            current = self.sink.reply
            if current is None or current.reply_id != item.reply_id:
                if current is not None:
                    await self.finish(interrupted=True)
                self.sink.begin(item.reply_id, item.turn_id, held=item.turn_id in self._held)
            self.sink.segment(item.reply_id, item.index, item.text)
        elif isinstance(item, TTSDone):
            current = self.sink.reply
            if current is None or current.reply_id != item.reply_id:
                # Nothing of it is playing (no audio, or already played): report it done.
                await self._done(item.reply_id, "", item.cancelled)
            else:
                self.sink.tts_done(item.reply_id)

    async def on_interrupt(self, msg: Msg) -> None:
        """An interrupt raised elsewhere (a failed stage, the session ended): stop the audio."""
        try:
            intr = decode(Interrupt, msg.data)
        except BadMessage:
            return
        if intr.reason in ("failure", "session_end"):
            current = self.sink.reply
            if current is not None and intr.reply_id in (None, current.reply_id):
                await self.finish(interrupted=True)

    # -- from the sink ---------------------------------------------------------------------------
    async def _started(self, pb: ReplyPlayback) -> None:
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

    def _finished(self, pb: ReplyPlayback) -> None:
        self._spawn(self._done(pb.reply_id, pb.spoken_text(), False, pb), "pb-done")
