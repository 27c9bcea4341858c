"""Microphone audio in: 16 kHz mono PCM16 from any source, handed to turn-taking.

`Mic.feed(pcm)` takes audio from any source (a WebSocket client protocol, a test), dropping a
piece that is oversized or faster than real time allows (`limits.py`), and takes the reply's
echo out of it (`echo.py`). `Mic.consume(track)`
reads a WebRTC track: decodes and resamples each frame to 16 kHz and feeds it. A browser on
Opus DTX sends almost nothing while its microphone is silent, so inside a turn's trailing
silence a gap of `mic_gap_ms` without a frame is fed to the sink as silence (the time since the
last frame, on the wall clock): the end of turn does not wait for the next DTX packet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .audio import MicResampler
from .echo import EchoCanceller
from .limits import Limits
from .settings import GatewaySettings
from .vad import FRAME_MS

BYTES_PER_MS = 32  # 16 kHz PCM16


class PcmSink(Protocol):
    """Where microphone audio goes (turn-taking: `turns.Turns`)."""

    @property
    def trailing_silence(self) -> bool: ...
    async def audio(self, pcm: bytes) -> None: ...
    async def fill(self, pcm: bytes) -> None: ...


class Mic:
    def __init__(
        self,
        session_id: str,
        settings: GatewaySettings,
        limits: Limits,
        sink: PcmSink,
        heard: Callable[[], None],
        echo: EchoCanceller | None = None,
    ) -> None:
        self.sid = session_id
        self.cfg = settings
        self.limits = limits
        self.sink = sink
        self._heard = heard  # told of every piece of audio that arrives
        self.echo = echo

    async def feed(self, pcm: bytes) -> bool:
        """A piece of 16 kHz mono PCM16; False when it was dropped (oversized, or faster than
        real time allows)."""
        self._heard()
        if len(pcm) > self.cfg.max_audio_bytes_per_frame or not await self.limits.audio(
            self.sid, len(pcm) // BYTES_PER_MS
        ):
            return False
        if self.echo is not None:
            pcm = self.echo.clean(pcm)
        await self.sink.audio(pcm)
        return True

    async def consume(self, track: Any, connected: Callable[[], None] | None = None) -> None:
        """Read a WebRTC audio track until it ends; `connected` is told when its first frame
        arrives."""
        resample = MicResampler()
        gap_s = self.cfg.mic_gap_ms / 1000.0
        pending: asyncio.Future[Any] | None = None
        last_frame = time.monotonic()
        filled_ms = 0.0  # silence fed since the last frame (a DTX gap)
        while True:
            try:
                if self.sink.trailing_silence or pending is not None:
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
            last_frame = time.monotonic()
            filled_ms = 0.0
            if connected is not None:
                connected()
                connected = None
            await self.feed(resample(frame))
        if pending is not None:
            pending.cancel()

    async def _fill_gap(self, last_frame: float, filled_ms: float) -> float:
        """No frame for a while inside a turn's trailing silence: feed the time since the last
        frame as silence. Returns the silence fed since then."""
        missing_ms = (time.monotonic() - last_frame) * 1000.0 - filled_ms
        if missing_ms < FRAME_MS:
            return filled_ms
        ms = int(missing_ms // FRAME_MS) * FRAME_MS
        await self.sink.fill(bytes(ms * BYTES_PER_MS))
        return filled_ms + ms
