"""A fake TTS engine for bus and transport benchmarks and unit tests: no model, no CPU cost.

It returns at once a real signal (a voiced-sounding tone with a syllable-rate envelope plus a
little noise, not silence, so level meters and VADs downstream see "speech") whose length is
proportional to the text: `ms_per_char` per character, about a speaking rate. The signal is
computed once, when the engine is made (`LOOP_S` of it); a text's audio is that loop read from a
point that its text picks, so a chunk costs a slice, not the third of a millisecond of numpy
work that computing it took, which the bus benchmark counted as the TTS hop's own time. It
yields ~100 ms chunks and gives the event loop a turn between chunks, so a cancel lands at once.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator

import numpy as np

from services.tts.engine import TTSEngine

LOOP_S = 4.0  # seconds of signal computed once; longer texts go round it


def _signal(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    pitch = 140.0 + 30.0 * np.sin(2 * np.pi * 0.5 * t)  # slowly gliding f0, whole cycles
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = 0.6 * np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
    envelope = 0.5 + 0.5 * np.abs(np.sin(np.pi * 4.0 * t))  # ~4 syllables per second
    noise = 0.02 * np.random.default_rng(0).standard_normal(len(t))
    signal = 0.5 * envelope * voiced + noise
    return (np.clip(signal, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


class FakeTTSEngine(TTSEngine):
    """Instant synthetic audio: `len(text) * ms_per_char` ms at `sample_rate`, PCM16 mono."""

    name = "fake"

    def __init__(
        self, sample_rate: int = 16000, ms_per_char: float = 60.0, *, chunk_ms: int = 100
    ) -> None:
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self._loop = _signal(sample_rate, LOOP_S)

    def render(self, text: str) -> bytes:
        """The whole signal for `text` (deterministic: the same text gives the same bytes)."""
        return b"".join(self._chunks(text))

    def _chunks(self, text: str) -> Iterator[bytes]:
        """The text's audio in chunks, each cut from the loop as it is asked for."""
        loop = self._loop
        n = 2 * int(self.sample_rate * len(text) * self.ms_per_char / 1000.0)
        step = 2 * max(1, self.sample_rate * self.chunk_ms // 1000)
        at = 2 * (zlib.crc32(text.encode("utf-8")) % (len(loop) // 2))
        for start in range(0, n, step):
            size = min(step, n - start)
            chunk = loop[at : at + size]
            while len(chunk) < size:  # round the end of the loop
                chunk += loop[: size - len(chunk)]
            at = (at + size) % len(loop)
            yield chunk

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = text.strip()
        if not text:
            return
        for i, chunk in enumerate(self._chunks(text)):
            if i:
                await asyncio.sleep(0)  # a cancellation point between chunks
            yield chunk
