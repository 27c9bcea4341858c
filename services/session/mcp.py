"""An agent's MCP servers (streamable HTTP, through the official `mcp` SDK): their tools, listed
and cached per replica, and the calls to them.

`McpCatalog.resolve` gives a turn its agent with the tools its servers list (`tools/list`: the
first turn waits for it, later ones use the list kept, listed again in the background after
`list_ttl_s`; a server that cannot be reached offers nothing until it is asked again after
`retry_s`, and the turn goes on without it). A tool whose name another tool of the agent has, or
whose schema is not a valid object schema, is left out. `McpCatalog.call` runs one `tools/call`,
with the same rules as an HTTP tool's call (services/session/tools.py): the server's address
checked against the allowed networks and the connection pinned to it, no redirect to another
origin, an `Idempotency-Key` header, the answer's first `max_response_bytes`; a timeout or a
lost connection once the call was sent is `unknown`, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from services.common.messages import AgentConfig, McpServer, McpTool
from services.common.messages.tools import check_schema

from .tools import AddressNotAllowed, IPNetwork, ToolResult, default_port, pinned, resolve_checked

log = logging.getLogger(__name__)

LIST_TTL_S = 60.0
RETRY_S = 10.0


class McpCatalog:
    """The MCP servers' tool lists this replica knows, by server URL and headers."""

    def __init__(
        self, networks: list[IPNetwork], list_ttl_s: float = LIST_TTL_S, retry_s: float = RETRY_S
    ) -> None:
        self.networks = networks
        self.list_ttl_s = list_ttl_s
        self.retry_s = retry_s
        self._lists: dict[str, tuple[float, list[McpTool] | None]] = {}
        self._listing: dict[str, asyncio.Task[list[McpTool] | None]] = {}

    async def resolve(self, agent: AgentConfig) -> AgentConfig:
        """`agent` with the tools its MCP servers list (from the cache when fresh)."""
        if not agent.mcp_servers:
            return agent
        lists = await asyncio.gather(
            *(self._tools(i, server) for i, server in enumerate(agent.mcp_servers))
        )
        taken = {spec.name for spec in agent.tool_specs()}
        tools: list[McpTool] = []
        for server, listed in zip(agent.mcp_servers, lists, strict=True):
            for tool in listed or []:
                if server.tools is not None and tool.name not in server.tools:
                    continue
                if tool.name in taken:
                    log.warning(
                        "mcp %s: tool %s left out: the agent has one so named",
                        server.url,
                        tool.name,
                    )
                    continue
                taken.add(tool.name)
                tools.append(tool)
        return agent.with_mcp_tools(tools)

    async def _tools(self, index: int, server: McpServer) -> list[McpTool]:
        """The server's tools: listed now the first time (the turn waits), then from the cache,
        listed again in the background once it is older than `list_ttl_s`."""
        key = _key(server)
        cached = self._lists.get(key)
        listed: list[McpTool] | None
        if cached is not None:
            if time.monotonic() >= cached[0]:
                self._listing_of(key, server)
            listed = cached[1]
        else:
            listed = await asyncio.shield(self._listing_of(key, server))
        return [t.model_copy(update={"server": index}) for t in listed or []]

    def _listing_of(self, key: str, server: McpServer) -> asyncio.Task[list[McpTool] | None]:
        """The server's listing under way, or a new one: one at a time per server."""
        task = self._listing.get(key)
        if task is None:
            task = self._listing[key] = asyncio.ensure_future(self._list(key, server))
            task.add_done_callback(lambda _t: self._listing.pop(key, None))
        return task

    async def _list(self, key: str, server: McpServer) -> list[McpTool] | None:
        try:
            async with asyncio.timeout(server.timeout_s):
                async with connect(server, self.networks) as session:
                    listed = await session.list_tools()
        except Exception as exc:
            log.warning("mcp %s: cannot list its tools: %s", server.url, _why(exc))
            self._lists[key] = (time.monotonic() + self.retry_s, None)
            return None
        tools = []
        for tool in listed.tools:
            try:
                parameters = check_schema(tool.inputSchema)
            except ValueError as exc:
                log.warning("mcp %s: tool %s left out: %s", server.url, tool.name, exc)
                continue
            read_only = bool(tool.annotations and tool.annotations.readOnlyHint)
            side_effects = server.side_effects if server.side_effects is not None else not read_only
            tools.append(
                McpTool(
                    name=tool.name,
                    description=(tool.description or tool.title or tool.name)[:1000],
                    parameters=parameters,
                    server=0,
                    side_effects=side_effects,
                )
            )
        self._lists[key] = (time.monotonic() + self.list_ttl_s, tools)
        return tools

    async def call(
        self, server: McpServer, name: str, args: dict[str, Any], idempotency_key: str
    ) -> ToolResult:
        """One `tools/call`, to its end: never raises."""
        sent = False
        try:
            async with asyncio.timeout(server.timeout_s):
                async with connect(server, self.networks, idempotency_key) as session:
                    sent = True
                    result = await session.call_tool(
                        name, args, read_timeout_seconds=timedelta(seconds=server.timeout_s)
                    )
        except AddressNotAllowed as exc:
            return ToolResult("refused", str(exc))
        except Exception as exc:
            if not sent:
                return ToolResult("error", f"could not reach the MCP server: {_why(exc)}")
            if isinstance(exc, TimeoutError):
                return ToolResult("unknown", f"{name} gave no answer within {server.timeout_s:g} s")
            return ToolResult("unknown", f"the MCP call failed: {_why(exc)}")
        text = _text(result, server.max_response_bytes)
        return ToolResult("error" if result.isError else "ok", text)


@contextlib.asynccontextmanager
async def connect(
    server: McpServer, networks: list[IPNetwork], idempotency_key: str | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with `server`, over a connection to its checked address."""
    url = httpx.URL(str(server.url))
    address = await resolve_checked(url.host, url.port or default_port(url), networks)
    target, headers, extensions = pinned(url, address)
    headers.update(server.headers)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key

    async def keep_name(request: httpx.Request) -> None:
        request.extensions.update(extensions)

    client = httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(server.timeout_s),
        trust_env=False,
        follow_redirects=False,
        event_hooks={"request": [keep_name]},
    )
    async with client, streamable_http_client(str(target), http_client=client) as streams:
        read, write, _ = streams
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def _text(result: CallToolResult, limit: int) -> str:
    """The call's answer as text: its text parts, else its structured content as JSON."""
    parts = [c.text for c in result.content if isinstance(c, TextContent)]
    if not parts and result.structuredContent is not None:
        parts = [json.dumps(result.structuredContent)]
    if not parts:
        parts = [f"[{c.type}]" for c in result.content]
    text = "\n".join(parts)
    data = text.encode()
    if len(data) > limit:
        return f"{data[:limit].decode('utf-8', errors='ignore')} [answer cut at {limit} bytes]"
    return text


def _key(server: McpServer) -> str:
    return json.dumps([str(server.url), sorted(server.headers.items())])


def _why(exc: BaseException) -> str:
    """An exception in a few words; an SDK exception group gives its first cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
