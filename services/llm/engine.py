"""The LLM engine interface: stream the reply's text pieces for a list of chat messages.

`stream()` is an async generator. Closing it (or cancelling the task that iterates it) stops
generation: the embedded llama.cpp engine aborts prompt processing and decoding within ~50 ms.

Engines take their own small types, `ChatTurn` and `GenParams` (as LiveKit's engines take a
`ChatContext`), never the bus's messages: the llm worker converts an `LLMRequest` into them, so
an engine neither knows nor changes with the wire format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the prompt: who says it and what."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GenParams:
    """How to sample a reply, and its length in tokens at most."""

    temperature: float
    top_p: float
    max_tokens: int


class LLMEngineError(RuntimeError):
    """A failure of the engine (server unreachable, bad response). `retryable` when nothing of the
    reply was produced yet and another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class LLMEngine(ABC):
    name: str = "llm"

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model or check the server (called once at start)."""

    @abstractmethod
    def stream(
        self, messages: list[ChatTurn], params: GenParams, background: bool = False
    ) -> AsyncIterator[str]:
        """Yield text pieces of the reply as they are generated. `background`: work off the
        reply path (a summary) that must not evict the conversation from the engine's prompt
        cache; engines without such a cache ignore it."""

    def count_tokens(self, text: str) -> int:
        """Approximate token count, for the history window's budget."""
        return max(1, len(text) // 4)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the model or client."""
