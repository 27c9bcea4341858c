"""The ASR engine interface. Engines are blocking; the service calls them in a thread."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class ASREngine(ABC):
    sample_rate: int = 16000
    takes_hot_words: bool = False  # whether `transcribe` uses `hot_words`

    @abstractmethod
    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        """Transcribe mono float32 audio in [-1, 1] at `sample_rate`. Blocking.

        `hot_words`: words and names to favour, where the engine can (`takes_hot_words`).
        Returns the text (stripped; "" for silence or noise)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
