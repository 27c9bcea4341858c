"""A fake ASR engine for transport benchmarks and unit tests: fixed text, no model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.asr.engine import ASREngine


class FakeASREngine(ASREngine):
    """Returns `text` for audio that is not silent, "" for silence.

    "Silent" means an RMS below `silence_rms` (float32 scale, default about -50 dBFS), so digital
    silence and faint hiss give "" the way a real recogniser would."""

    def __init__(self, text: str = "hello", silence_rms: float = 0.003) -> None:
        self.text = text
        self.silence_rms = silence_rms

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        if audio.size == 0:
            return ""
        rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float32)))))
        return self.text if rms >= self.silence_rms else ""
