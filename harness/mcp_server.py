"""A real MCP server (streamable HTTP, the official SDK's FastMCP under uvicorn) for tests: its
tools record each call with the request's headers.

- `get_weather(city)`: the weather there (as harness/tool_server.py makes it up); marked
  read-only, so a call has no side effects.
- `start_timer(minutes, label?)`: starts a timer (a side effect; not marked).
- `slow_order(item)`: answers after `slow_s` (a side effect that may have happened).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import ToolAnnotations

from .tool_server import weather


@dataclass
class McpCall:
    tool: str
    arguments: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class McpToolServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.calls: list[McpCall] = []
        self.slow_s = 10.0
        self.lists = 0  # tools/list requests answered
        mcp = FastMCP("test-tools", host=host, stateless_http=True, json_response=True)
        mcp.settings.transport_security = None  # any Host: the tests reach it by address

        def record(ctx: Context[Any, Any, Any], tool: str, **arguments: Any) -> None:
            request = ctx.request_context.request
            headers = dict(request.headers) if request is not None else {}  # type: ignore[union-attr]
            self.calls.append(McpCall(tool, arguments, headers))

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        def get_weather(city: str, ctx: Context[Any, Any, Any]) -> dict[str, Any]:
            """Get the current weather in a city."""
            record(ctx, "get_weather", city=city)
            return weather(city)

        @mcp.tool()
        def start_timer(minutes: float, ctx: Context[Any, Any, Any], label: str = "") -> str:
            """Start a countdown timer."""
            record(ctx, "start_timer", minutes=minutes, label=label)
            return f"Timer set for {minutes:g} minutes."

        @mcp.tool()
        async def slow_order(item: str, ctx: Context[Any, Any, Any]) -> str:
            """Order an item from the shop."""
            record(ctx, "slow_order", item=item)
            await asyncio.sleep(self.slow_s)
            return f"Ordered {item}."

        app = mcp.streamable_http_app()
        server = self

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                body = b""

                async def peek() -> Any:
                    nonlocal body
                    message = await receive()
                    body += message.get("body", b"")
                    if b'"tools/list"' in body:
                        server.lists += 1
                    return message

                await app(scope, peek, send)
                return
            await app(scope, receive, send)

        sock = socket.socket()
        sock.bind((host, 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}/mcp"
        config = uvicorn.Config(counting, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([sock],), daemon=True)

    def of(self, tool: str) -> list[McpCall]:
        return [c for c in self.calls if c.tool == tool]

    def __enter__(self) -> McpToolServer:
        self._thread.start()
        end = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > end:
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)
