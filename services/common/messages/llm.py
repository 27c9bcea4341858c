"""Generation: the claim of one LLM reply (or background work) and its output stream."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Message
from .tools import ToolCall, ToolSpec


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = Field(default_factory=list)  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers


class LLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(96, ge=1, le=4096)


class LLMRequest(Message):
    type: Literal["llm.request"] = "llm.request"
    session_id: str
    turn_id: str
    reply_id: str
    messages: list[ChatMessage]
    params: LLMParams = Field(default_factory=LLMParams)
    stream_id: str | None = None  # subject token for the output; default reply_id (retries differ)
    # reply: a turn's answer. summary / prefill: background work of the session's memory
    # (services/session/memory.py): a replica takes it only when idle, and a reply claimed
    # meanwhile cancels it. A prefill evaluates the prompt into the cache and says nothing.
    purpose: Literal["reply", "summary", "prefill"] = "reply"
    tools: list[ToolSpec] = Field(default_factory=list)  # the model may call these


class LLMDelta(Message):
    type: Literal["llm.delta"] = "llm.delta"
    reply_id: str
    seq: int
    text: str


class LLMDone(Message):
    type: Literal["llm.done"] = "llm.done"
    reply_id: str
    text: str
    tokens: int
    first_token_ms: float | None
    tokens_per_s: float | None
    cancelled: bool = False
    stopped: str | None = None  # why generation was cut short (a reply repeating itself)
    tool_calls: list[ToolCall] = Field(default_factory=list)  # the reply is these calls
    tools_unsupported: bool = False  # tools were offered, but this model cannot call them


class LLMError(Message):
    type: Literal["llm.error"] = "llm.error"
    reply_id: str
    code: str  # an ErrorCode
    message: str


LLMOut = Annotated[LLMDelta | LLMDone | LLMError, Field(discriminator="type")]
