"""The ASR engine interface. Engines are blocking; the service calls them in a thread."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class ASREngine(ABC):
    sample_rate: int = 16000

    @abstractmethod
    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Transcribe mono float32 audio in [-1, 1] at `sample_rate`. Blocking.

        Returns the text (stripped; "" for silence or noise)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
