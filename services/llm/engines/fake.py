"""A fake LLM engine for bus-overhead benchmarks and unit tests: a fixed reply, no model.

A real engine, not a mock: it streams word by word through the same interface, stops at
`max_tokens` words, and stops at once when the stream is closed or its consumer cancelled.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from services.llm.engine import ChatTurn, GenParams, LLMEngine, LLMEngineError, Tool, ToolCall


class FakeLLMEngine(LLMEngine):
    """Streams `reply` one word at a time (each piece keeps its leading space).

    `delay_s` is slept before every piece (0: pieces come as fast as the loop allows, still
    yielding to it between pieces). With `error` set, the stream raises it after
    `error_after` pieces, to test error paths. `requests` keeps the latest 100 message lists
    received. `tool_call` (name, arguments): offered tools, it calls that one (writing the
    call as text, as Qwen does), and answers its result with `after_tool`; with `repeats` set, it
    calls again after the result while it is offered tools (as small models do)."""

    name = "fake"
    supports_tools = True
    parallel = 64  # word by word on the event loop: any number at once

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
        self.tool_call: tuple[str, dict[str, Any]] | None = None
        self.after_tool = "Done: {result}"
        self.repeats = False
        self.tools_seen: deque[list[str]] = deque(maxlen=100)  # the tools each request offered

    def pieces(self, max_tokens: int | None = None, reply: str | None = None) -> list[str]:
        words = re.findall(r"\s*\S+", self.reply if reply is None else reply)
        return words if max_tokens is None else words[:max_tokens]

    def _reply_to(self, messages: list[ChatTurn], tools: Sequence[Tool]) -> str:
        """With `tool_call` set and tools offered, the call as Qwen writes it, then after its
        result `after_tool` (with `{result}`); otherwise `reply`."""
        if messages and messages[-1].role == "tool" and not (self.repeats and tools):
            return self.after_tool.format(result=messages[-1].content)
        if self.tool_call is not None and tools:
            name, args = self.tool_call
            return f"<tool_call> {json.dumps({'name': name, 'arguments': args})} </tool_call>"
        return self.reply

    async def stream(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> AsyncGenerator[str | ToolCall, None]:
        self.requests.append(list(messages))
        self.tools_seen.append([t.name for t in tools])
        reply = self._reply_to(messages, tools)
        try:
            for i, piece in enumerate(self.pieces(params.max_tokens, reply)):
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
