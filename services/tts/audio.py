"""Small PCM helpers for synthesized speech."""

from __future__ import annotations

import numpy as np


def trim_leading_silence(pcm: bytes, rate: int, threshold: int = 300, keep_ms: int = 5) -> bytes:
    """Drop the near-silent start of PCM16 audio (voices begin with 30-50 ms of it), keeping
    `keep_ms` before the first sample above `threshold`. All-silent input gives b""."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return b""
    start = max(0, int(loud[0]) - rate * keep_ms // 1000)
    return samples[start:].tobytes()
