"""Any OpenAI-compatible chat server (llama_cpp.server, vLLM, Ollama, a hosted API).

Streams chat completions with the official `openai` client. Closing the stream (or cancelling its
consumer) closes the HTTP response, which tells the server to stop. Errors are translated into
`LLMEngineError` where they enter: retryable only while no text of the reply was produced and the
failure may be transient (connection, timeout, 408/409/429/5xx). Roles are sent as
system/user/assistant/tool only (llama_cpp.server answers "developer" with HTTP 500, FINDINGS.md).
Tools go as the API's `tools`; the calls a server parses stream as `tool_calls` deltas, put
together here and yielded at the end of the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import openai

from services.llm.engine import (
    ChatTurn,
    GenParams,
    LLMEngine,
    LLMEngineError,
    Tool,
    ToolCall,
    new_call_id,
    tool_wire,
)

_RETRYABLE_STATUS = {408, 409, 429}
_CLOSE_TIMEOUT_S = 1.0  # closing a response is local; never let it hold a cancel up


def _translate(exc: Exception, produced: bool) -> LLMEngineError:
    """One third-party error -> LLMEngineError, with a message fit for logs and users."""
    if isinstance(exc, openai.APITimeoutError):
        message, transient = "LLM server timed out", True
    elif isinstance(exc, openai.APIConnectionError):
        message, transient = f"cannot reach the LLM server: {exc}", True
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"LLM server answered HTTP {status}: {exc.message}"
        transient = status >= 500 or status in _RETRYABLE_STATUS
    else:
        message, transient = f"LLM server error: {exc}", True
    return LLMEngineError(message, retryable=transient and not produced)


class OpenAICompatEngine(LLMEngine):
    """Streams from `{base_url}/chat/completions` (base_url like "http://127.0.0.1:8080/v1").

    `api_key=None` sends a placeholder (local servers ignore it; the client never reads the
    environment). `timeout_s` bounds connecting and every wait for the next piece. No automatic
    retries: the caller decides, guided by `LLMEngineError.retryable`."""

    name = "openai_compat"
    supports_tools = True  # the server parses calls (or writes them as text, read as ours)
    parallel = 16  # the server schedules its own requests

    def __init__(
        self, base_url: str, api_key: str | None, model: str, timeout_s: float = 30.0
    ) -> None:
        self.model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "no-key",
            timeout=timeout_s,
            max_retries=0,
        )

    async def load(self) -> None:
        """Check that the server answers (GET /models). Raises LLMEngineError(retryable=True)."""
        try:
            await self._client.models.list()
        except openai.OpenAIError as exc:
            raise _translate(exc, produced=False) from exc

    async def stream(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> AsyncGenerator[str | ToolCall, None]:
        produced = False
        # Never "developer" (see module doc): ChatTurn has no such role.
        wire: Any = [m.wire(arguments_as_text=True) for m in messages]
        extra: dict[str, Any] = {"tools": tool_wire(tools)} if tools else {}
        try:
            response: Any = await self._client.chat.completions.create(
                model=self.model,
                messages=wire,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stream=True,
                **extra,
            )
        except openai.OpenAIError as exc:
            raise _translate(exc, produced) from exc
        calls: dict[int, dict[str, str]] = {}  # a call's pieces by its index, as they stream
        try:
            async for chunk in response:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                for piece in delta.tool_calls or ():
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    if piece.function is not None:
                        call["name"] += piece.function.name or ""
                        call["arguments"] += piece.function.arguments or ""
                    produced = True
                if delta.content:
                    produced = True
                    yield delta.content
            for _, call in sorted(calls.items()):
                yield ToolCall(
                    id=call["id"] or new_call_id(),
                    name=call["name"],
                    arguments=call["arguments"] or "{}",
                )
        except openai.OpenAIError as exc:
            raise _translate(exc, produced) from exc
        finally:
            # Closing the HTTP response is what stops the server; bounded so that a cancel
            # never waits on the network.
            try:
                await asyncio.wait_for(response.close(), _CLOSE_TIMEOUT_S)
            except Exception:  # closing is best effort (TimeoutError included)
                pass

    async def aclose(self) -> None:
        await self._client.close()
