"""The LLM engine interface: stream the reply's text pieces for a list of chat messages.

`stream()` is an async generator. Closing it (or cancelling the task that iterates it) stops
generation: the embedded llama.cpp engine aborts prompt processing and decoding within ~50 ms.

Engines take their own small types, `ChatTurn` and `GenParams` (as LiveKit's engines take a
`ChatContext`), never the bus's messages: the llm worker converts an `LLMRequest` into them, so
an engine neither knows nor changes with the wire format.
"""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: its name, what it does, its parameters' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: `arguments` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str


def new_call_id() -> str:
    return "call_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the prompt: who says it and what; an assistant's tool calls, or (role
    "tool") the result of the call `tool_call_id`."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def wire(self, arguments_as_text: bool) -> dict[str, Any]:
        """The OpenAI chat format of this message (`arguments_as_text`: a call's arguments as
        the JSON text, as the API has them; else parsed, as chat templates render them)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": c.arguments if arguments_as_text else _loads(c.arguments),
                    },
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def tool_wire(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Tools in the OpenAI chat format (llama-cpp-python renders them into the template)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


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

    supports_tools: bool = False  # the model can be offered tools
    parallel: int = 1  # generations it runs at once (more wait for their turn)

    @abstractmethod
    def stream(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> AsyncIterator[str | ToolCall]:
        """Yield text pieces of the reply as they are generated, and the tool calls a server
        parsed itself (a call written as text comes as text: services/llm/tool_calls.py).
        `background`: work off the reply path (a summary) that must not evict the conversation
        from the engine's prompt cache; engines without such a cache ignore it. `tools`: what
        the model may call (only where `supports_tools`)."""

    def count_tokens(self, text: str) -> int:
        """Approximate token count, for the history window's budget."""
        return max(1, len(text) // 4)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the model or client."""
