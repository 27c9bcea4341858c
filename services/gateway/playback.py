"""Reply audio toward the browser: a paced 48 kHz WebRTC track with pause, resume and stop, and
an account of what was actually played.

TTS audio arrives per segment (a clause, with its text). The track sends 20 ms frames in real
time while a reply plays, silence for `HANGOVER_S` after it, then (with `suppress_silence`) one
frame of silence every `KEEPALIVE_S`; skipped frames still advance the RTP clock, as with Opus
DTX. Audio is converted shortly before it plays, `BATCH_S` at a time whenever fewer than
`LOOKAHEAD_FRAMES` are ready: resampled to 48 kHz and, where Opus was negotiated, encoded here
(`audio.py`), so aiortc sends ready packets. Played samples are counted per segment: after an
interruption `spoken_text()` gives the segments played in full plus the cut segment's words in
proportion to its audio played. Each reply also keeps an account of the pauses it was held in
while it played (`PauseLog`: speech over it pauses it until the speech is judged): how long, the
longest, how many; reported with `playback.done`. Why it converts on the event loop, as it
plays: docs/performance.md ("Why the code does what it does").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .audio import (
    FRAME,
    FRAME_BYTES,
    RATE,
    SILENCE,
    TIME_BASE,
    ReplyCodec,
    opus_encoder,
    pcm_frame,
    silence_packet,
)

HANGOVER_S = 0.2
KEEPALIVE_S = 1.0
LOOKAHEAD_FRAMES = 10  # frames kept converted ahead of playback (200 ms)
BATCH_S = 0.1  # audio converted per batch

log = logging.getLogger(__name__)


@dataclass
class Segment:
    index: int
    text: str
    samples_total: int = 0  # at 48 kHz, as converted so far
    samples_pending: int = 0  # at 48 kHz, estimated, received but not yet converted
    samples_played: int = 0


@dataclass
class PauseLog:
    """How long a reply was paused while it played: every `pause()` between its first frame and
    its end, from that moment to `resume()`, its stop, or its end. Milliseconds of the
    monotonic clock."""

    count: int = 0
    total_ms: float = 0.0
    longest_ms: float = 0.0
    since: float | None = None  # monotonic seconds: the pause under way began then

    def begin(self, now: float) -> None:
        if self.since is None:
            self.since = now
            self.count += 1

    def end(self, now: float) -> None:
        if self.since is not None:
            ms = (now - self.since) * 1000.0
            self.since = None
            self.total_ms += ms
            self.longest_ms = max(self.longest_ms, ms)


@dataclass
class ReplyPlayback:
    reply_id: str
    turn_id: str
    segments: dict[int, Segment] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)  # 48 kHz PCM16 not yet played
    order: deque[tuple[int, int]] = field(default_factory=deque)  # (segment, bytes) in buffer
    tts_done: bool = False
    started: bool = False
    held: bool = False  # a speculative reply: nothing plays until its turn is confirmed
    # With `opus`, `packets[i]` is the Opus packet of the i-th 20 ms frame of `buffer`.
    opus: bool = False
    packets: deque[bytes] = field(default_factory=deque)
    # TTS audio not yet converted: (segment, PCM16 mono, rate, estimated samples at 48 kHz)
    received: deque[tuple[int, bytes, int, int]] = field(default_factory=deque)
    all_received: bool = False  # the TTS is done: the last batch pads the last frame
    refill_soon: bool = False  # a conversion is due at the loop's next turn
    codec: ReplyCodec = field(default_factory=ReplyCodec)  # resamplers and Opus encoder
    pauses: PauseLog = field(default_factory=PauseLog)  # held silent while it played

    @property
    def playable(self) -> bool:
        """A frame is ready: its packet, or (without Opus) its PCM."""
        return bool(self.packets if self.opus else self.buffer)

    def words_playing(self, n: int = 24) -> list[str]:
        """The reply's last `n` words up to the end of the segment playing now (its echo in a
        microphone says some of them)."""
        words: list[str] = []
        for index in sorted(self.segments):
            seg = self.segments[index]
            if not seg.samples_played:
                break
            words += seg.text.split()
        return words[-n:]

    def spoken_text(self) -> str:
        words: list[str] = []
        for index in sorted(self.segments):
            seg = self.segments[index]
            seg_words = seg.text.split()
            total = seg.samples_total + seg.samples_pending
            if total and seg.samples_played >= total:
                words += seg_words
            elif seg.samples_played and total:
                share = seg.samples_played / total
                words += seg_words[: int(len(seg_words) * share)]
                break
            else:
                break
        return " ".join(words)


class ReplyAudioTrack(MediaStreamTrack):
    """The outgoing audio track. `on_started(reply)` is called (and awaited, when it is a
    coroutine function) as a reply's first audio frame goes out, before aiortc sends it;
    `on_finished(reply)` when its last one is (TTS done and buffer empty); `on_sent(pcm, pts)`
    with the 48 kHz PCM16 of each frame sent, silence included, and its pts (the time not sent
    between replies counted)."""

    kind = "audio"

    def __init__(
        self,
        on_started: Callable[[ReplyPlayback], Awaitable[None] | None],
        on_finished: Callable[[ReplyPlayback], None],
        suppress_silence: bool = True,
        opus: bool = False,
        on_sent: Callable[[bytes, int], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_sent = on_sent  # told each 20 ms of PCM that goes out (the echo canceller)
        self.suppress_silence = suppress_silence
        self.opus = opus
        self._encoder: av.AudioCodecContext | None = None
        self._last_sound = 0.0  # monotonic time of the last frame with reply audio
        self._last_sent = 0.0
        self.reply: ReplyPlayback | None = None
        self.paused = False
        self._on_started = on_started
        self._starting: ReplyPlayback | None = None  # a reply whose first frame goes out now
        self._on_finished = on_finished
        self._start: float | None = None
        self._pts = 0
        self._wake = asyncio.Event()  # audio to play may be there: ends an idle wait

    # -- control (event loop) ------------------------------------------------------------------
    def begin(self, reply_id: str, turn_id: str, held: bool = False) -> ReplyPlayback:
        self.reply = ReplyPlayback(reply_id=reply_id, turn_id=turn_id, held=held, opus=self.opus)
        self.paused = False
        return self.reply

    def release(self, turn_id: str) -> None:
        """Let a held (speculative) reply of `turn_id` play."""
        if self.reply is not None and self.reply.turn_id == turn_id:
            self.reply.held = False
            self._wake.set()

    def segment(self, reply_id: str, index: int, text: str) -> None:
        if self.reply is not None and self.reply.reply_id == reply_id:
            self.reply.segments.setdefault(index, Segment(index=index, text=text))

    def push(self, reply_id: str, index: int, pcm: bytes, rate: int) -> None:
        """Queue a chunk of the reply's audio (PCM16 mono at `rate`); it is converted shortly
        before it plays."""
        pb = self.reply
        if pb is None or pb.reply_id != reply_id:
            return  # a stopped or unknown reply: its audio is dropped
        seg = pb.segments.setdefault(index, Segment(index=index, text=""))
        step = max(2, int(rate * BATCH_S) * 2)
        for at in range(0, len(pcm) - len(pcm) % 2, step):
            piece = pcm[at : at + step]
            estimate = len(piece) // 2 * RATE // rate
            seg.samples_pending += estimate
            pb.received.append((index, piece, rate, estimate))
        self._refill(pb)
        self._wake.set()

    def tts_done(self, reply_id: str) -> None:
        """The reply's audio is all here: it ends once all of it has played."""
        pb = self.reply
        if pb is not None and pb.reply_id == reply_id:
            pb.all_received = True
            self._refill(pb)

    def _refill(self, pb: ReplyPlayback) -> None:
        """Convert the next batch where fewer than `LOOKAHEAD_FRAMES` frames are ready."""
        if pb.tts_done:
            return
        ready = len(pb.packets) if pb.opus else len(pb.buffer) // FRAME_BYTES
        if ready >= LOOKAHEAD_FRAMES or not (pb.received or pb.all_received):
            return
        batch: list[tuple[int, bytes, int, int]] = []
        seconds = 0.0
        while pb.received and seconds < BATCH_S:
            batch.append(pb.received.popleft())
            seconds += len(batch[-1][1]) / 2 / batch[-1][2]
        final = pb.all_received and not pb.received
        datas = [pb.codec.to_48k(pcm, rate) for _, pcm, rate, _ in batch]
        packets: list[bytes] = []
        if pb.opus:
            try:
                packets = pb.codec.encode(datas, final)
            except Exception:
                log.exception("reply %s: Opus encoding failed; it goes on as PCM", pb.reply_id)
                pb.opus = False
        for (index, _, _, estimate), data in zip(batch, datas, strict=True):
            seg = pb.segments.setdefault(index, Segment(index=index, text=""))
            seg.samples_pending -= estimate
            seg.samples_total += len(data) // 2
            pb.buffer.extend(data)
            pb.order.append((index, len(data)))
        pb.packets.extend(packets)
        pb.tts_done = final

    def pause(self) -> None:
        self.paused = True
        pb = self.reply
        if pb is not None and pb.started:  # a reply not yet heard has no pause to hear
            pb.pauses.begin(time.monotonic())

    def resume(self) -> None:
        self.paused = False
        if self.reply is not None:
            self.reply.pauses.end(time.monotonic())
        self._wake.set()

    def stop_reply(self) -> ReplyPlayback | None:
        """Stop the current reply at once; returns it (with what was played)."""
        pb, self.reply = self.reply, None
        self.paused = False
        if pb is not None:
            pb.pauses.end(time.monotonic())
        return pb

    # -- media (aiortc pulls frames) -----------------------------------------------------------
    async def recv(self) -> av.AudioFrame | av.Packet:
        packet: bytes | None = None
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._start is None:
                self._start = time.monotonic()
            else:
                wait = self._start + self._pts / RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.2:  # fell far behind (loop stall): re-anchor, do not burst
                    self._start = time.monotonic() - self._pts / RATE
            data, packet = self._next_chunk()
            if self._starting is not None:  # told before the frame leaves, in the same turn
                started, self._starting = self._starting, None
                if inspect.isawaitable(told := self._on_started(started)):
                    await told
            now = time.monotonic()
            if data is not SILENCE:
                self._last_sound = now
            elif (
                self.suppress_silence
                and now - self._last_sound > HANGOVER_S
                and now - self._last_sent < KEEPALIVE_S
            ):
                await self._idle(now)  # this frame's time, and more, passes with nothing sent
                continue
            self._last_sent = now
            break
        pts = self._pts
        if self._on_sent is not None:
            self._on_sent(data, pts)
        self._pts += FRAME
        if not self.opus:
            return pcm_frame(data, pts)
        if packet is None and data is SILENCE:
            packet = silence_packet()
        if packet is None:  # no packets: Opus came after the reply began, or its encoding failed
            return self._encode(pcm_frame(data, pts))
        out = av.Packet(packet)
        out.pts = pts  # the frame's own time: skipped silence still advances the clock
        out.time_base = TIME_BASE
        return out

    async def _idle(self, now: float) -> None:
        """Nothing to send: sleep until the keep-alive is due or audio may be there to play,
        instead of waking every 20 ms; then the clock moves on by the frames that passed (as
        with Opus DTX), and a reply that arrived meanwhile goes out at once, not at the next
        20 ms tick."""
        assert self._start is not None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._last_sent + KEEPALIVE_S - now):
                await self._wake.wait()
        passed = int((time.monotonic() - self._start) * RATE) // FRAME * FRAME
        self._pts = max(self._pts + FRAME, passed)

    def _encode(self, frame: av.AudioFrame) -> av.AudioFrame | av.Packet:
        if self._encoder is None:
            self._encoder = opus_encoder()
        packets = self._encoder.encode(frame)
        if len(packets) != 1:  # libopus gives one packet per 20 ms frame; else let aiortc do it
            return frame
        packet = packets[0]
        packet.pts = frame.pts
        packet.time_base = TIME_BASE
        return packet

    def _next_chunk(self) -> tuple[bytes, bytes | None]:
        """The next 20 ms of PCM to play, and its Opus packet where the reply has them."""
        pb = self.reply
        if pb is None or self.paused or pb.held:
            return SILENCE, None
        if not pb.playable:
            self._refill(pb)  # needed now
        if not pb.playable:
            if pb.tts_done:  # set after its last conversion: all of it has been played
                self.reply = None
                pb.pauses.end(time.monotonic())
                self._on_finished(pb)
            return SILENCE, None
        packet = pb.packets.popleft() if pb.opus else None
        chunk = bytes(pb.buffer[:FRAME_BYTES])
        del pb.buffer[:FRAME_BYTES]
        self._account(pb, len(chunk))
        if not pb.started:
            pb.started = True
            self._starting = pb
        if len(chunk) < FRAME_BYTES:
            chunk += bytes(FRAME_BYTES - len(chunk))
        if not pb.refill_soon:  # after this frame is sent, and what it set going
            pb.refill_soon = True
            asyncio.get_running_loop().call_soon(self._refill_later, pb)
        return chunk, packet

    def _refill_later(self, pb: ReplyPlayback) -> None:
        pb.refill_soon = False
        if pb is self.reply:
            self._refill(pb)

    @staticmethod
    def _account(pb: ReplyPlayback, n: int) -> None:
        while n > 0 and pb.order:
            index, left = pb.order[0]
            take = min(n, left)
            pb.segments[index].samples_played += take // 2
            n -= take
            if take == left:
                pb.order.popleft()
            else:
                pb.order[0] = (index, left - take)
