"""Agents and sessions: the session service's RPC (`va.session.rpc.{method}`), also the HTTP
API's bodies, and the records it keeps."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from .asr import MAX_HOT_WORDS, HotWord, fits_prompt
from .base import Message
from .llm import LLMParams
from .tools import (
    BUILTIN_TOOLS,
    MAX_TOOLS,
    REDACTED,
    BuiltinToolName,
    HttpTool,
    McpServer,
    McpTool,
    ToolCall,
    ToolSpec,
)

# Replies are spoken: short, plain words, the user's own language (tuned on the quality
# benchmark's tune split only: bench/quality.py).
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Everything you write is spoken aloud, so answer in "
    "one or two short sentences of plain speech: no lists, markdown, code or emoji. Answer the "
    "question directly and correctly. Always reply in the same language as the user's last "
    "message. If you are not sure, say so."
)


class FixedTurnDetection(BaseModel):
    """The turn ends after `end_of_turn_silence_ms` of silence, whatever was said."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["fixed"] = "fixed"


Eagerness = Literal["low", "medium", "high", "auto"]


class SemanticTurnDetection(BaseModel):
    """The turn ends after a silence that depends on whether what was said sounds finished
    (services/gateway/turn_policy.py, SEMANTIC_WAITS): `high` answers soonest, `low` lets the
    user think longest; `auto` is `medium`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["semantic"] = "semantic"
    eagerness: Eagerness = "auto"


TurnDetection = Annotated[FixedTurnDetection | SemanticTurnDetection, Field(discriminator="type")]


class IdleNudge(BaseModel):
    """While the agent listens and nobody speaks for `after_s`, it says `text`; at most
    `max_nudges` times in a row (the user speaking starts the count again)."""

    model_config = ConfigDict(extra="forbid")
    after_s: float = Field(8.0, ge=2.0, le=600.0)
    text: str = Field("Are you still there?", min_length=1, max_length=500)
    max_nudges: int = Field(2, ge=1, le=10)


class AgentConfig(BaseModel):
    """A registered agent: serves any number of sessions."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("assistant", min_length=1, max_length=100)
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        min_length=1,
        max_length=8000,
    )
    llm: LLMParams = Field(default_factory=LLMParams)
    voice: str | None = Field(None, max_length=200, description="TTS voice name; None: default")
    language: str | None = Field(None, max_length=10, description="ASR language; None: default")
    hot_words: Annotated[list[HotWord], AfterValidator(fits_prompt)] = Field(
        default_factory=list,
        max_length=MAX_HOT_WORDS,
        description="words and names speech recognition should favour (Whisper's prompt)",
    )
    turn_detection: TurnDetection = Field(default_factory=SemanticTurnDetection)
    # Spoken (and kept in history) when a session's audio connects to an empty conversation.
    greeting: str | None = Field(None, min_length=1, max_length=1000)
    idle_nudge: IdleNudge | None = None
    # The silence that ends a turn under `fixed` turn detection.
    end_of_turn_silence_ms: int = Field(500, ge=100, le=5000)
    interruptions: bool = True
    min_interruption_ms: int = Field(150, ge=0, le=3000)
    history_max_turns: int = Field(24, ge=1, le=500)
    history_token_budget: int = Field(1024, ge=64, le=32000)
    # Tools (services/session/tools.py): HTTP endpoints, MCP servers' tools, and built-ins that
    # need no server.
    tools: list[HttpTool] = Field(default_factory=list, max_length=MAX_TOOLS)
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=4)
    builtin_tools: list[BuiltinToolName] = Field(default_factory=list)
    time_zone: str = Field("UTC", max_length=64, description="IANA name, for current_time")
    # The MCP servers' tools as a session replica listed them (`with_mcp_tools`); never stored.
    _mcp_tools: list[McpTool] = PrivateAttr(default_factory=list)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _unique_tool_names(self) -> AgentConfig:
        names = [t.name for t in self.tools] + list(self.builtin_tools)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tool names must be unique: {', '.join(dupes)}")
        return self

    @property
    def has_tools(self) -> bool:
        return bool(self.tools or self.mcp_servers or self.builtin_tools)

    @property
    def mcp_tools(self) -> list[McpTool]:
        return self._mcp_tools

    def with_mcp_tools(self, tools: list[McpTool]) -> AgentConfig:
        """This config with its MCP servers' tools as listed (services/session/mcp.py)."""
        copy = self.model_copy()
        copy._mcp_tools = tools
        return copy

    def tool_specs(self) -> list[ToolSpec]:
        """The tools as the model sees them: the built-ins first, then the endpoints, then the
        MCP servers' tools (once listed: `with_mcp_tools`)."""
        specs = []
        for name in self.builtin_tools:
            description, parameters = BUILTIN_TOOLS[name]
            specs.append(ToolSpec(name=name, description=description, parameters=parameters))
        listed: list[HttpTool | McpTool] = [*self.tools, *self._mcp_tools]
        specs += [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in listed
        ]
        return specs

    def redacted(self) -> AgentConfig:
        """This config as the API shows it: every tool's and MCP server's header values
        `REDACTED`."""
        if not any(t.headers for t in self.tools) and not any(s.headers for s in self.mcp_servers):
            return self

        def hide(t: Any) -> Any:
            return t.model_copy(update={"headers": dict.fromkeys(t.headers, REDACTED)})

        return self.model_copy(
            update={
                "tools": [hide(t) for t in self.tools],
                "mcp_servers": [hide(s) for s in self.mcp_servers],
            }
        )


class CreateAgent(Message):
    type: Literal["rpc.create_agent"] = "rpc.create_agent"
    config: AgentConfig


class AgentRecord(Message):
    type: Literal["agent"] = "agent"
    agent_id: str
    config: AgentConfig
    created_at: float


class GetAgent(Message):
    type: Literal["rpc.get_agent"] = "rpc.get_agent"
    agent_id: str


class CreateSession(Message):
    type: Literal["rpc.create_session"] = "rpc.create_session"
    agent_id: str | None = None


class ResumeSession(Message):
    type: Literal["rpc.resume_session"] = "rpc.resume_session"
    session_id: str
    token: str


class SessionGrant(Message):
    type: Literal["session.grant"] = "session.grant"
    session_id: str
    token: str
    expires_at: float  # unix seconds
    agent_id: str


class Authorize(Message):
    type: Literal["rpc.authorize"] = "rpc.authorize"
    session_id: str
    token: str


class SessionInfo(Message):
    type: Literal["session.info"] = "session.info"
    session_id: str
    agent_id: str
    agent: AgentConfig
    messages: int = 0  # in the session's history so far


class EndSession(Message):
    type: Literal["rpc.end_session"] = "rpc.end_session"
    session_id: str
    token: str


class GetMessages(Message):
    type: Literal["rpc.get_messages"] = "rpc.get_messages"
    session_id: str
    token: str


class HistoryMessage(BaseModel):
    """One entry of a conversation. An assistant entry with `tool_calls` is written before the
    calls' requests leave; each call's `tool` entry (`tool_call_id`) when it ended, with its
    `outcome` (a call without one was cut off: whether it happened is unknown)."""

    role: Literal["user", "assistant", "tool"]
    text: str
    turn_id: str
    interrupted: bool = False
    created_at: float
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    outcome: str | None = None  # a tool entry's ToolOutcome


class Summary(BaseModel):
    """What slid out of a session's LLM window, summarized (services/session/memory.py):
    history entries [0, upto) are in `text`."""

    text: str
    upto: int
    created_at: float


class MessageList(Message):
    type: Literal["messages"] = "messages"
    messages: list[HistoryMessage]


class Ok(Message):
    type: Literal["ok"] = "ok"


# -- the methods ------------------------------------------------------------------------------
class RpcMethod(StrEnum):
    """The session service's methods: the last token of `va.session.rpc.{method}`."""

    CREATE_AGENT = "create_agent"
    GET_AGENT = "get_agent"
    CREATE_SESSION = "create_session"
    RESUME_SESSION = "resume_session"
    AUTHORIZE = "authorize"
    END_SESSION = "end_session"
    GET_MESSAGES = "get_messages"


RpcRequest = (
    CreateAgent | GetAgent | CreateSession | ResumeSession | Authorize | EndSession | GetMessages
)

# Each method's request: the caller's subject and the session service's decoder both read it here.
RPC_REQUESTS: dict[RpcMethod, type[RpcRequest]] = {
    RpcMethod.CREATE_AGENT: CreateAgent,
    RpcMethod.GET_AGENT: GetAgent,
    RpcMethod.CREATE_SESSION: CreateSession,
    RpcMethod.RESUME_SESSION: ResumeSession,
    RpcMethod.AUTHORIZE: Authorize,
    RpcMethod.END_SESSION: EndSession,
    RpcMethod.GET_MESSAGES: GetMessages,
}
_METHODS = {kind: method for method, kind in RPC_REQUESTS.items()}


def rpc_method(request: RpcRequest) -> RpcMethod:
    """The method a request is sent to."""
    return _METHODS[type(request)]
