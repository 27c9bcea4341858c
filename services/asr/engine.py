"""The ASR engine interface. Engines are blocking; the service calls them in a thread."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class ASREngine(ABC):
    sample_rate: int = 16000
    takes_hot_words: bool = False  # whether `transcribe` uses `hot_words`
    passes_at_once: int = 2  # `transcribe` calls that run at once (the service's threads)

    @abstractmethod
    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        """Transcribe mono float32 audio in [-1, 1] at `sample_rate`. Blocking.

        `hot_words`: words and names to favour, where the engine can (`takes_hot_words`).
        Returns the text (stripped; "" for silence or noise)."""

    def warm_up(self) -> None:
        """One pass as large as any the engine will make, so its buffers are allocated at
        start (the first pass is slower, and memory then stays flat). Blocking; the service
        runs one on each of its threads."""
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32), "en")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
