"""Tools: what an agent declares it may call, the calls a model makes, and the client's events.

An agent's `tools` are HTTP endpoints (`HttpTool`: the arguments POSTed as JSON), its
`mcp_servers` MCP servers whose tools it may call (`McpServer`, listed by the session service:
`McpTool`), its `builtin_tools` need no server (`BUILTIN_TOOLS`). A model's call (`ToolCall`)
carries its arguments as the JSON text the model wrote; the session service checks them against
the tool's schema and runs the call (services/session/tools.py). A header's value (a secret)
never leaves the agent's stored config: the API shows it as `REDACTED`, and events, logs and
spans carry no headers at all.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from jsonschema import Draft202012Validator, SchemaError
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from .base import Message

TOOL_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_TOOLS = 16
MAX_SCHEMA_CHARS = 4000  # one tool's parameters as JSON: it sits in every prompt
REDACTED = "REDACTED"

BuiltinToolName = Literal["current_time", "end_conversation"]
# The built-ins' schemas, as the model sees them; none has side effects outside the session.
BUILTIN_TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "current_time": (
        "Get the current date, day of the week and time where the user is.",
        {"type": "object", "properties": {}},
    ),
    "end_conversation": (
        "End the conversation when the user says goodbye or asks to stop talking. Say a short "
        "goodbye after calling it.",
        {"type": "object", "properties": {}},
    ),
}


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's `parameters`: a valid JSON Schema (draft 2020-12) of an object, small enough to
    sit in every prompt."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('the parameters must be a JSON Schema of "type": "object"')
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the schema is over {MAX_SCHEMA_CHARS} characters as JSON")
    return schema


def check_headers(value: dict[str, str]) -> dict[str, str]:
    reserved = {"content-type", "content-length", "host", "idempotency-key", "accept"}
    for name in value:
        if name.lower() in reserved:
            raise ValueError(f"header {name!r} is set by the service")
    return value


class HttpTool(BaseModel):
    """A tool bound to an HTTP endpoint: a call POSTs its arguments as JSON to `url` (with an
    `Idempotency-Key` header and `headers`), never follows a redirect, and reads at most
    `max_response_bytes` of the answer within `timeout_s`. `side_effects` (the default): the
    call changes something, so it runs at most once and only for a turn the user finished."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TOOL_NAME)
    description: str = Field(min_length=1, max_length=1000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: AnyHttpUrl
    timeout_s: float = Field(5.0, gt=0.0, le=60.0)
    max_response_bytes: int = Field(16384, ge=16, le=1_048_576)
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    side_effects: bool = True

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_schema(value)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class McpServer(BaseModel):
    """An MCP server (streamable HTTP transport) whose tools the agent may call: those in
    `tools`, or all it lists when `tools` is not given. `headers` go with every request (a
    bearer token: a secret). A call answers within `timeout_s`, its first `max_response_bytes`
    read. Side effects: `side_effects` when given, else as the server marks each tool (its
    `readOnlyHint`: none; any other tool may change something)."""

    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    tools: list[str] | None = Field(None, max_length=MAX_TOOLS)
    timeout_s: float = Field(10.0, gt=0.0, le=60.0)
    max_response_bytes: int = Field(16384, ge=16, le=1_048_576)
    side_effects: bool | None = None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class McpTool(BaseModel):
    """One tool an MCP server lists, as the session service offers it: `server` is its index
    in the agent's `mcp_servers`."""

    name: str
    description: str
    parameters: dict[str, Any]
    server: int
    side_effects: bool


class ToolSpec(BaseModel):
    """A tool as the model sees it: name, description, parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolCall(BaseModel):
    """One call a model made: `arguments` is the JSON text it wrote (checked by the session)."""

    id: str
    name: str
    arguments: str


ToolOutcome = Literal["ok", "error", "unknown", "refused"]


class ToolCallEvent(Message):
    """The assistant calls a tool (its arguments as parsed; never headers)."""

    type: Literal["tool.call"] = "tool.call"
    turn_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolResultEvent(Message):
    """How a call ended: `ok` (its result), `error` (it failed, and did not happen), `unknown`
    (it may have happened: a timeout or a lost connection after the request left; never
    retried), `refused` (not run: bad arguments, an address not allowed, the turn cut)."""

    type: Literal["tool.result"] = "tool.result"
    turn_id: str
    call_id: str
    name: str
    outcome: ToolOutcome
    result: str = ""  # the endpoint's answer, or the reason
    ms: float | None = None
