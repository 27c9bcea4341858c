"""The assistant's own voice taken out of the microphone, before the VAD hears it.

A client without echo cancellation (a phone on speaker, a kiosk, a WebRTC client of its own)
sends the reply back in its microphone, and the gateway would take it for the user speaking
over the reply. The gateway knows exactly what it played: each reply frame that goes out is the
far end of WebRTC's echo canceller AEC3 (`livekit==1.2.0`'s `rtc.AudioProcessingModule`, 10 ms
frames, 48 kHz), and each piece of microphone audio is processed against it before turn-taking
sees it. AEC3 finds the echo path's delay itself (measured here: 34-38 dB less echo at 30-300 ms
of delay, a talker over it kept; ../shared/FINDINGS.md, "Echo"). About 2 % of a core per
session. Only for a client that asks (`echo_cancellation: true` with its WebRTC offer) or all of
them with `VA_ECHO_CANCELLATION=true`: a client that cancels its own echo (every browser) gains
nothing, and a canceller still learning can swallow the user's first words over a reply.

Between replies. AEC3 wants its two streams in step, as a sound card gives them: a reference
that stops while the microphone runs on (the reply track sends nothing between replies but a
keep-alive frame a second) makes it drop the echo's delay it had found, and the next reply's
first second came through while it searched again (the turn-taking benchmark's speakerphone,
bench/turns_speakerphone.py: 14 of its 20 second replies of a session paused > 100 ms or were
interrupted by their own echo, no first reply). So once a reply has sounded, the reference is
kept as the client plays it: a stream's frames one after another (by `pts`), a frame after a
gap when it goes out (a client starts playing it as it comes), silence in between, added as the
microphone comes, two frames at most each time, as a sound card would (`_keep_time`). Filling
the silence in one go when the next frame came, or after a gap, did as badly. After
RESTART_AFTER_S without sound, though, a converged AEC3 still let the next reply's echo through
(its echo moved, we think, by the client's clock drift and jitter buffer, while AEC3 trusts its
old filter), where a fresh one starts cautious: that reply gets a fresh AEC3, as a session's
first does (measured: of 10 replies after 35 s of silence, 6 paused or were interrupted with the
reference kept in step, none with a fresh AEC3). Before a session's first reply AEC3 is left as
it starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MIC_RATE = 16000
MIC_FRAME = MIC_RATE // 100 * 2  # bytes of 10 ms PCM16
REPLY_RATE = 48000
REPLY_FRAME = REPLY_RATE // 100 * 2
REPLY_SAMPLES = REPLY_FRAME // 2
SILENT_REPLY = bytes(REPLY_FRAME)
# After the track's silence, the reference is kept this many 10 ms frames behind the wall clock,
# so that a frame a little late still finds its place free.
BEHIND_FRAMES = 2
MAX_FILL_FRAMES = 25  # more silence owed at once than this: the reference starts again here
# A reply after this long without sound meets a fresh AEC3 (see the module); the benchmark's
# replies came 7-8 s apart within a pair, 35 s apart across one.
RESTART_AFTER_S = 10.0


class EchoCanceller:
    """One session's echo canceller: `played` the reply frames sent, `clean` the microphone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from livekit import rtc

        self._rtc = rtc
        self._apm: Any = rtc.AudioProcessingModule(echo_cancellation=True)
        self._clock = clock
        self._mic = bytearray()
        self._reply = bytearray()
        self.active = False  # reply audio was played: there may be echo to remove
        self._rendered = 0  # 10 ms frames of reference given to AEC3
        self._next_pts: int | None = None  # the pts that continues the track's stream
        self._origin = 0  # the reference frame of the stream's pts 0
        # When the last reply frame went out, the reference frame it began at, and whether it
        # was silence (then the reference goes on as silence until the next one).
        self._sent: tuple[float, int, bool] | None = None
        self._sounded: float | None = None  # when the reply last had sound in it
        # A reply has sounded since AEC3 started: from then on the reference is kept in step.
        self._in_step = False

    def played(self, pcm48: bytes, pts: int | None = None) -> None:
        """Reply audio as it goes out: 48 kHz mono PCM16, any length; `pts`, where it starts
        on the track's clock (48 kHz samples, the silence not sent counted)."""
        self.active = True
        silent = pcm48 == bytes(len(pcm48))
        if not silent:
            now = self._clock()
            if self._sounded is not None and now - self._sounded > RESTART_AFTER_S:
                self._apm = self._rtc.AudioProcessingModule(echo_cancellation=True)
                self._in_step = False
            self._sounded = now
        if pts is not None and not self._reply and not self._place(pts, silent):
            return
        self._sent = (self._clock(), self._rendered, silent)
        self._reply += pcm48
        n = len(self._reply) // REPLY_FRAME * REPLY_FRAME
        for at in range(0, n, REPLY_FRAME):
            self._render(bytes(self._reply[at : at + REPLY_FRAME]))
        del self._reply[:n]
        if pts is not None:
            self._next_pts = pts + len(pcm48) // 2
        self._in_step = self._in_step or not silent

    def _place(self, pts: int, silent: bool) -> bool:
        """Bring the reference to where the frame at `pts` plays: in a stream, right after the
        frame before; after a gap, now. False: the reference is past that already (silence
        was added for a frame that came late) and it is silence itself, so it is left out."""
        if not self._in_step:
            owed = 0  # before the first reply AEC3 is left as it starts: cautious
        elif pts == self._next_pts:
            owed = self._origin + pts // REPLY_SAMPLES - self._rendered
        else:
            owed = self._due() - self._rendered
        if owed < 0 and silent:
            return False
        for _ in range(owed if owed <= MAX_FILL_FRAMES else 0):
            self._render(SILENT_REPLY)
        self._origin = self._rendered - pts // REPLY_SAMPLES
        return True

    def _due(self) -> int:
        """The reference frame playing now, by the wall clock since the last reply frame."""
        assert self._sent is not None
        t, start, _ = self._sent
        return start + int((self._clock() - t) * 100)

    def _render(self, frame: bytes) -> None:
        self._apm.process_reverse_stream(self._rtc.AudioFrame(frame, REPLY_RATE, 1, REPLY_SAMPLES))
        self._rendered += 1

    def _keep_time(self) -> None:
        """After each microphone frame: once the track's last frame was silence, the reference
        goes on as silence, BEHIND_FRAMES behind the wall clock, two frames at most each
        time. (Within a reply the next frame comes in the stream, late or not.)"""
        if not self._in_step or self._sent is None or not self._sent[2]:
            return
        for _ in range(min(2, self._due() - BEHIND_FRAMES - self._rendered)):
            self._render(SILENT_REPLY)

    def clean(self, pcm16: bytes) -> bytes:
        """Microphone audio, 16 kHz mono PCM16, any length: returns it without the echo, in
        whole 10 ms frames (the rest comes out with the next piece). Until a reply has played
        there is nothing to cancel: it comes back as it is."""
        if not self.active:
            return pcm16
        self._mic += pcm16
        n = len(self._mic) // MIC_FRAME * MIC_FRAME
        out = bytearray()
        for at in range(0, n, MIC_FRAME):
            frame = self._rtc.AudioFrame(
                bytearray(self._mic[at : at + MIC_FRAME]), MIC_RATE, 1, MIC_FRAME // 2
            )
            self._apm.process_stream(frame)
            self._keep_time()
            out += frame.data.cast("B")
        del self._mic[:n]
        return bytes(out)


def echo_canceller() -> EchoCanceller | None:
    """A new canceller; None (logged) when the library cannot run here."""
    try:
        return EchoCanceller()
    except Exception:
        log.exception("no echo cancellation: the microphone is heard as it comes")
        return None
