"""A fake LLM engine for bus-overhead benchmarks and unit tests: a fixed reply, no model.

A real engine, not a mock: it streams word by word through the same interface, stops at
`max_tokens` words, and stops at once when the stream is closed or its consumer cancelled.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncGenerator

from services.llm.engine import ChatTurn, GenParams, LLMEngine, LLMEngineError


class FakeLLMEngine(LLMEngine):
    """Streams `reply` one word at a time (each piece keeps its leading space).

    `delay_s` is slept before every piece (0: pieces come as fast as the loop allows, still
    yielding to it between pieces). With `error` set, the stream raises it after
    `error_after` pieces, to test error paths. `requests` keeps the latest 100 message lists
    received."""

    name = "fake"

    def __init__(
        self,
        reply: str = "Hello! This is a fake reply from the test engine.",
        delay_s: float = 0.0,
        *,
        error: LLMEngineError | None = None,
        error_after: int = 0,
    ) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.error = error
        self.error_after = error_after
        self.requests: deque[list[ChatTurn]] = deque(maxlen=100)  # the latest
        self.cancelled = 0  # streams stopped by the consumer before their end

    def pieces(self, max_tokens: int | None = None) -> list[str]:
        words = re.findall(r"\s*\S+", self.reply)
        return words if max_tokens is None else words[:max_tokens]

    async def stream(
        self, messages: list[ChatTurn], params: GenParams, background: bool = False
    ) -> AsyncGenerator[str, None]:
        self.requests.append(list(messages))
        try:
            for i, piece in enumerate(self.pieces(params.max_tokens)):
                if self.error is not None and i >= self.error_after:
                    raise self.error
                await asyncio.sleep(self.delay_s)  # a cancellation point even when 0
                yield piece
            if self.error is not None:
                raise self.error
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise

    def count_tokens(self, text: str) -> int:
        return len(text.split())
