"""Running a model's tool calls: the agent's HTTP endpoints, its MCP servers' tools
(services/session/mcp.py) and the built-ins.

`Toolbox.run` takes one `ToolCall` to its end and never raises: every way a call can end is a
`ToolResult` with an outcome the model and the client are told plainly.
- `refused`: not run (unknown tool, arguments that do not match its schema, an address not
  allowed, the turn cut before it ran).
- `error`: it did not happen (could not connect, HTTP error status, a redirect).
- `unknown`: the request left but no answer came (a timeout, a lost connection): it may have
  happened. Such a call is never retried automatically; the model is told to say so.
- `ok`: the endpoint's answer (its first `max_response_bytes`).

An endpoint's address is resolved once and checked before the request leaves: every address it
resolves to must be public (`is_global`), or inside one of `tool_networks` (a LAN range for a
home server). The request then goes to that checked address (the name kept for `Host` and TLS),
so a second, different answer of the DNS cannot send it elsewhere; redirects are never followed.
Each request carries `Idempotency-Key` (the call's id within its reply), so an endpoint can
drop a repeat. Header values (secrets) appear in no log, event or span.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
from jsonschema import Draft202012Validator

from services.common.messages import AgentConfig, HttpTool, ToolCall, ToolOutcome

if TYPE_CHECKING:
    from .mcp import McpCatalog

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What the model reads when a call may have happened: it must neither retry nor claim success.
UNKNOWN_NOTE = (
    "No answer came, so it is not known whether this happened. Do not call it again; tell the "
    "user you are not sure it happened."
)


# What the model reads when it made a call again that had already run in the turn.
REPEAT_NOTE = (
    "(Not run again: this is the result of the same call made before. Do not call it again; "
    "answer the user with it.)"
)


@dataclass(frozen=True)
class ToolResult:
    outcome: ToolOutcome
    text: str  # the answer, or what went wrong, in words the model can pass on
    ms: float = 0.0
    repeat: bool = False  # the same call ran earlier in the turn: this is its result

    def for_model(self) -> str:
        """The tool message's content: the answer, or the failure said plainly."""
        if self.outcome == "ok":
            said = self.text
        elif self.outcome == "unknown":
            said = f"{self.text}. {UNKNOWN_NOTE}"
        else:
            said = f"The call failed and did not happen: {self.text}"
        return f"{said}\n{REPEAT_NOTE}" if self.repeat else said

    def repeated(self) -> ToolResult:
        """This result, for the same call made again in the turn (which is not run)."""
        return ToolResult(self.outcome, self.text, 0.0, repeat=True)


class AddressNotAllowed(Exception):
    pass


def parse_networks(values: list[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def allowed(address: str, networks: list[IPNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global or any(ip in net for net in networks)


async def resolve_checked(host: str, port: int, networks: list[IPNetwork]) -> str:
    """The first address of `host`, after checking that every address it has is allowed."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise AddressNotAllowed(f"{host} has no address")
    refused = [a for a in addresses if not allowed(a, networks)]
    if refused:
        raise AddressNotAllowed(
            f"{host} resolves to {refused[0]}, which is not a public address and not in "
            "VA_TOOL_NETWORKS"
        )
    return addresses[0]


def pinned(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """`url` sent to the checked `address`: the URL, the `Host` header and the request
    extensions that keep the name for TLS (its certificate and SNI)."""
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return url.copy_with(host=address), headers, extensions


class Toolbox:
    """One turn's tools: the agent's endpoints, its MCP servers' tools (as listed: the agent
    `McpCatalog.resolve` gave) and built-ins, with the replica's HTTP client."""

    def __init__(
        self,
        agent: AgentConfig,
        client: httpx.AsyncClient,
        networks: list[IPNetwork],
        on_end_conversation: Callable[[], None],
        mcp: McpCatalog | None = None,
    ) -> None:
        self.agent = agent
        self.client = client
        self.networks = networks
        self.mcp = mcp
        self.http = {t.name: t for t in agent.tools}
        self.mcp_tools = {t.name: t for t in agent.mcp_tools}
        self.builtins = set(agent.builtin_tools)
        self._end = on_end_conversation
        self._validators: dict[str, Draft202012Validator] = {}

    def side_effects(self, name: str) -> bool:
        """Whether a call may change something (unknown tools count as if they might)."""
        tool = self.http.get(name) or self.mcp_tools.get(name)
        if tool is not None:
            return tool.side_effects
        return name not in self.builtins or name == "end_conversation"

    def timeout_s(self) -> float:
        """The longest any of its calls may take."""
        limits = [t.timeout_s for t in self.agent.tools]
        limits += [self.agent.mcp_servers[t.server].timeout_s for t in self.agent.mcp_tools]
        return max(limits, default=0.0)

    def arguments(self, call: ToolCall) -> dict[str, Any] | str:
        """The call's arguments, parsed and checked against its schema, or why they are not
        valid (said to the model)."""
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            return f"the arguments are not valid JSON: {call.arguments[:200]!r}"
        if not isinstance(args, dict):
            return "the arguments must be a JSON object"
        tool = self.http.get(call.name) or self.mcp_tools.get(call.name)
        if tool is None:
            return args if call.name in self.builtins else f"there is no tool {call.name!r}"
        validator = self._validators.get(call.name)
        if validator is None:
            validator = self._validators[call.name] = Draft202012Validator(tool.parameters)
        error = next(iter(validator.iter_errors(args)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            return f"invalid arguments ({where}): {error.message}"
        return args

    async def run(self, call: ToolCall, idempotency_key: str) -> ToolResult:
        t0 = time.perf_counter()
        result = await self._run(call, idempotency_key)
        return ToolResult(result.outcome, result.text, round((time.perf_counter() - t0) * 1e3, 1))

    async def _run(self, call: ToolCall, idempotency_key: str) -> ToolResult:
        args = self.arguments(call)
        if isinstance(args, str):
            return ToolResult("refused", args)
        if call.name == "current_time":
            now = datetime.now(ZoneInfo(self.agent.time_zone))
            return ToolResult("ok", now.strftime(f"%A %d %B %Y, %H:%M ({self.agent.time_zone})"))
        if call.name == "end_conversation":
            self._end()
            return ToolResult("ok", "The conversation ends after your goodbye.")
        mcp_tool = self.mcp_tools.get(call.name)
        if mcp_tool is not None and self.mcp is not None:
            server = self.agent.mcp_servers[mcp_tool.server]
            return await self.mcp.call(server, call.name, args, idempotency_key)
        return await self._post(self.http[call.name], args, idempotency_key)

    async def _post(self, tool: HttpTool, args: dict[str, Any], key: str) -> ToolResult:
        url = httpx.URL(str(tool.url))
        host = url.host
        deadline = asyncio.get_running_loop().time() + tool.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                address = await resolve_checked(host, url.port or default_port(url), self.networks)
        except AddressNotAllowed as exc:
            return ToolResult("refused", str(exc))
        except TimeoutError:
            return ToolResult("error", f"cannot resolve {host} within {tool.timeout_s:g} s")
        except OSError as exc:
            return ToolResult("error", f"cannot resolve {host}: {exc}")
        target, headers, extensions = pinned(url, address)
        headers.update({**tool.headers, "Idempotency-Key": key})
        request = self.client.build_request(
            "POST",
            target,
            json=args,
            headers=headers,
            timeout=tool.timeout_s,
            extensions=extensions,
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.client.send(request, stream=True, follow_redirects=False)
                try:
                    body = await _read_capped(response, tool.max_response_bytes)
                finally:
                    await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return ToolResult("error", f"could not connect to {host}: {type(exc).__name__}")
        except (TimeoutError, httpx.TimeoutException):
            return ToolResult("unknown", f"{tool.name} gave no answer within {tool.timeout_s:g} s")
        except httpx.HTTPError as exc:  # connected: the request may have reached it
            return ToolResult("unknown", f"the connection to {host} failed: {type(exc).__name__}")
        if response.is_redirect:
            return ToolResult("error", f"{host} answered a redirect, which is not followed")
        if response.status_code >= 400:
            return ToolResult("error", f"{host} answered HTTP {response.status_code}: {body[:300]}")
        return ToolResult("ok", body)


def default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


async def _read_capped(response: httpx.Response, limit: int) -> str:
    """The body's first `limit` bytes as text (what is past it is not read)."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            del data[limit:]
            text = data.decode("utf-8", errors="replace")
            return f"{text} [answer cut at {limit} bytes]"
    return data.decode("utf-8", errors="replace")
