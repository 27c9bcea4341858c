"""A fake TTS engine for bus and transport benchmarks and unit tests: no model, no CPU cost.

It returns at once a real signal (a voiced-sounding tone with a syllable-rate envelope plus a
little noise, not silence, so level meters and VADs downstream see "speech") whose length is
proportional to the text: `ms_per_char` per character, about a speaking rate. It computes and
yields ~100 ms chunks one at a time, and gives the event loop a turn between chunks, so a cancel
lands at once.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator

import numpy as np

from services.tts.engine import TTSEngine


class FakeTTSEngine(TTSEngine):
    """Instant synthetic audio: `len(text) * ms_per_char` ms at `sample_rate`, PCM16 mono."""

    name = "fake"

    def __init__(
        self, sample_rate: int = 16000, ms_per_char: float = 60.0, *, chunk_ms: int = 100
    ) -> None:
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms

    def render(self, text: str) -> bytes:
        """The whole signal for `text` (deterministic: the same text gives the same bytes)."""
        return b"".join(self._chunks(text))

    def _chunks(self, text: str) -> Iterator[bytes]:
        """The signal, computed one chunk at a time as it is asked for, like a streaming voice:
        the first chunk costs what a chunk costs, whatever the length of the text."""
        rate = self.sample_rate
        n = int(rate * len(text) * self.ms_per_char / 1000.0)
        step = max(1, rate * self.chunk_ms // 1000)
        rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
        phase0 = 0.0
        for start in range(0, n, step):
            t = np.arange(start, min(n, start + step), dtype=np.float64) / rate
            pitch = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)  # slowly gliding f0
            phase = phase0 + 2 * np.pi * np.cumsum(pitch) / rate
            phase0 = float(phase[-1])
            voiced = 0.6 * np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
            envelope = 0.5 + 0.5 * np.abs(np.sin(np.pi * 4.0 * t))  # ~4 syllables per second
            signal = 0.5 * envelope * voiced + 0.02 * rng.standard_normal(len(t))
            yield (np.clip(signal, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = text.strip()
        if not text:
            return
        for i, chunk in enumerate(self._chunks(text)):
            if i:
                await asyncio.sleep(0)  # a cancellation point between chunks
            yield chunk
