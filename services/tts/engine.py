"""The TTS engine interface: synthesize one clause or sentence, streaming PCM16 chunks.

`synthesize()` is an async generator of PCM16 mono little-endian bytes at `sample_rate`. Closing
it (or cancelling the task that iterates it) stops synthesis within 100 ms and nothing more is
yielded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator


class TTSEngine(ABC):
    name: str = "tts"
    sample_rate: int = 22050

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load the voice (called once at start)."""

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks of `text` spoken."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the voice."""
