"""One LLM replica: claims reply generations and streams their text; interrupts cancel them.

- `va.llm.claim` (queue group "llm"): an `LLMRequest`; the replica answers `ClaimAck` and
  streams `llm.delta` ... `llm.done` (or `llm.error`) on `va.llm.out.{sid}.{rid}`.
- `va.ctl.interrupt.*` (every replica, its own subscription): cancels the matching generation;
  the engine stops within ~50 ms and `llm.done {cancelled: true}` is published.
- Background work (`purpose` summary or prefill, from the session's memory) is taken only by an
  idle replica (else `busy`), and a reply claimed meanwhile cancels it: replies never wait on it.
- A reply that starts repeating itself is cut (`guard.py`): `llm.done {stopped: ...}`.
- A reply claim the replica could only start later than `admission_wait_s` is refused `busy`
  (`admission.py`): the session waits and tells the client.
- Tools offered (`LLMRequest.tools`, where the model can take them): a call is never published
  as words (`tool_calls.py`); `llm.done {tool_calls}` carries the calls, which the session runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.messages import (
    AgentConfig,
    ChatMessage,
    ClaimAck,
    ErrorCode,
    LLMDelta,
    LLMDone,
    LLMError,
    LLMParams,
    LLMRequest,
    RpcError,
    ToolCall,
)
from services.common.metrics import ERRORS, IN_FLIGHT, QUEUE_DEPTH, STAGE_SECONDS
from services.common.replies import ReplyWorker

from .admission import Admission
from .engine import ChatTurn, GenParams, LLMEngine, LLMEngineError, Tool
from .engine import ToolCall as EngineCall
from .guard import LoopGuard
from .settings import LlmSettings
from .tool_calls import Parsed, ToolCallSplitter

log = logging.getLogger(__name__)


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """A request's messages as the engine takes them."""
    return [
        ChatTurn(
            role=m.role,
            content=m.content,
            tool_calls=tuple(EngineCall(c.id, c.name, c.arguments) for c in m.tool_calls),
            tool_call_id=m.tool_call_id,
        )
        for m in messages
    ]


# What a second try asks for, after a first that meant to call a tool but wrote nothing usable:
# a tool it was not offered -> words; empty call markup ("<tools></tools>", the 1.5B model's
# usual slip on questions it means to look up) -> the call, written out.
ANSWER_IN_WORDS = "(Answer this in words, without calling a tool.)"
WRITE_THE_CALL = (
    '(Call the tool: <tool_call>{"name": ..., "arguments": {...}}</tool_call>, with its arguments.)'
)


def asking(turns: list[ChatTurn], note: str) -> list[ChatTurn]:
    """The same prompt, its last user message with `note` added (the cached prefix holds)."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user":
            last = turns[i]
            return [
                *turns[:i],
                ChatTurn(role="user", content=f"{last.content}\n{note}"),
                *turns[i + 1 :],
            ]
    return turns


def gen_params(params: LLMParams, max_tokens: int | None = None) -> GenParams:
    """A request's sampling parameters as the engine takes them (`max_tokens` overrides)."""
    return GenParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens if max_tokens is None else max_tokens,
    )


class _Generation:
    """What one request produced so far, over its passes: the words said, the calls."""

    def __init__(self, req: LLMRequest) -> None:
        self.req = req
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.guard = LoopGuard()

    def call(self, call: EngineCall) -> None:
        self.calls.append(ToolCall(id=call.id, name=call.name, arguments=call.arguments))

    @property
    def said(self) -> bool:
        return any(p.strip() for p in self.parts)

    async def say(self, nc: NATS, out: str, text: str) -> bool:
        """Publish `text`; True when the reply now repeats itself (cut it)."""
        self.parts.append(text)
        await bus.publish(
            nc, out, LLMDelta(reply_id=self.req.reply_id, seq=len(self.parts), text=text)
        )
        return self.guard.feed(text)


class LlmWorker(ReplyWorker):
    kind = "llm"

    def __init__(self, settings: LlmSettings, engine: LLMEngine) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.engine = engine
        self._background: dict[str, asyncio.Task[Any]] = {}  # reply id -> task
        self._warned_no_tools = False
        self.admission = Admission(engine.parallel, settings.admission_wait_s)

    async def start(self, nc: NATS) -> None:
        self.nc = nc
        await self.engine.load()
        if self.cfg.warmup:
            await self._warm_up()
        await self.claim(nc, subjects.LLM_CLAIM, subjects.QUEUE_LLM, LLMRequest, self._on_claim)

    async def _warm_up(self) -> None:
        """One short generation on the default agent's prompt: the first real turn then finds
        the runtime initialised and the system prompt's evaluation cached."""
        messages = [
            ChatTurn(role="system", content=AgentConfig().system_prompt),
            ChatTurn(role="user", content="Hello."),
        ]
        params = gen_params(LLMParams(temperature=0.0), max_tokens=4)
        t0 = time.perf_counter()
        try:
            stream = self.engine.stream(messages, params)
            async for _ in stream:
                pass
        except LLMEngineError as exc:
            log.warning("llm warm-up failed: %s", exc)
        log.info("llm warm-up took %.0f ms", (time.perf_counter() - t0) * 1000)

    async def close(self) -> None:
        await self.engine.aclose()

    async def _on_claim(self, req: LLMRequest, msg: Msg) -> ClaimAck | RpcError:
        assert self.nc is not None
        subjects.check_token(req.session_id)
        subjects.check_token(req.stream_id or req.reply_id)
        if len(self.jobs) >= self.cfg.max_queued:
            return RpcError(code=ErrorCode.BUSY, message="llm replica at capacity", status=503)
        if req.purpose != "reply" and len(self.jobs):
            return RpcError(code=ErrorCode.BUSY, message="llm replica busy", status=503)
        now = time.monotonic()
        if req.purpose == "reply" and not self.admission.admits(now):
            wait = self.admission.expected_start_s(now)
            message = f"llm replica busy: a new reply would start in {wait:.1f} s"
            return RpcError(code=ErrorCode.BUSY, message=message, status=503)
        for task in self._background.values():  # a reply goes first; background work waits
            task.cancel()
        job = self.jobs.start(
            req.session_id, req.turn_id, req.reply_id, self._generate(req), alias=req.stream_id
        )
        if req.purpose != "reply":
            self._background[req.reply_id] = job.task
            job.task.add_done_callback(lambda _t: self._background.pop(req.reply_id, None))
        else:
            key = req.stream_id or req.reply_id
            self.admission.begin(key, now)
            job.task.add_done_callback(
                lambda t: self.admission.end(key, time.monotonic(), finished=not t.cancelled())
            )
        return await self.claimed(req.session_id, req.turn_id, req.reply_id)

    async def _generate(self, req: LLMRequest) -> None:
        IN_FLIGHT.labels("llm").set(len(self.jobs))
        QUEUE_DEPTH.labels("llm").set(max(0, len(self.jobs) - 1))
        attrs = {
            tm.ATTR_SESSION: req.session_id,
            tm.ATTR_TURN: req.turn_id,
            tm.ATTR_REPLY: req.reply_id,
            tm.ATTR_WORKER: self.worker_id,
        }
        try:
            with tm.tracer.start_as_current_span(
                "llm.generate",
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                await self._generate_in(req, span)
        finally:
            IN_FLIGHT.labels("llm").set(len(self.jobs) - 1)
            QUEUE_DEPTH.labels("llm").set(max(0, len(self.jobs) - 2))

    async def _generate_in(self, req: LLMRequest, span: Any) -> None:
        assert self.nc is not None
        out = subjects.llm_out(req.session_id, req.stream_id or req.reply_id)
        gen = _Generation(req)
        cancelled = False
        offered = [
            Tool(t.name, t.description, t.parameters)
            for t in (req.tools if self.engine.supports_tools else [])
        ]
        if req.tools and not offered:
            self._warn_no_tools()
        # A prefill only evaluates the prompt: one token, and it says nothing.
        params = gen_params(req.params, max_tokens=1 if req.purpose == "prefill" else None)
        try:
            async with asyncio.timeout(self.cfg.request_timeout_s):
                turns = chat_turns(req.messages)
                parsed = await self._stream(req, turns, params, offered, gen, out)
                if parsed is not None and parsed.unusable and not gen.calls and not gen.said:
                    # It meant to call a tool but wrote nothing usable, and said nothing: asked
                    # once more (the tools stay in the prompt, so its cached prefix holds).
                    note = ANSWER_IN_WORDS if parsed.unknown else WRITE_THE_CALL
                    log.info("llm reply %s: no usable call; asking again", req.reply_id)
                    await self._stream(req, asking(turns, note), params, offered, gen, out)
        except asyncio.CancelledError:
            cancelled = True
        except TimeoutError:
            await self._error(out, req, ErrorCode.LLM_TIMEOUT, "the language model took too long")
            return
        except LLMEngineError as exc:
            log.warning("llm engine failed for %s: %s", req.reply_id, exc)
            await self._error(out, req, ErrorCode.LLM_FAILED, str(exc))
            return
        except Exception as exc:
            log.exception("llm generation failed for %s", req.reply_id)
            await self._error(out, req, ErrorCode.LLM_FAILED, f"generation failed: {exc}")
            return
        end = time.perf_counter()
        first, parts = gen.first, gen.parts
        ttft = (first - gen.t0) * 1000.0 if first is not None else None
        tps = (len(parts) - 1) / (end - first) if first is not None and end > first else None
        span.set_attribute(tm.ATTR_LLM_TOKENS, len(parts))
        span.set_attribute(tm.ATTR_INTERRUPTED, cancelled)
        if gen.calls:
            span.set_attribute(tm.ATTR_TOOL_CALLS, [c.name for c in gen.calls])
        if ttft is not None:
            span.set_attribute(tm.ATTR_LLM_TTFT_MS, round(ttft, 1))
            STAGE_SECONDS.labels("llm", "first_token").observe(ttft / 1000)
        if tps:
            span.set_attribute(tm.ATTR_LLM_TPS, round(tps, 1))
        with contextlib.suppress(Exception):
            await bus.publish(
                self.nc,
                out,
                LLMDone(
                    reply_id=req.reply_id,
                    text="".join(parts),
                    tokens=len(parts),
                    first_token_ms=round(ttft, 1) if ttft is not None else None,
                    tokens_per_s=round(tps, 1) if tps else None,
                    cancelled=cancelled,
                    stopped=gen.guard.reason,
                    tool_calls=[] if cancelled else gen.calls,
                    tools_unsupported=bool(req.tools) and not offered,
                ),
            )
        if cancelled:
            raise asyncio.CancelledError

    async def _stream(
        self,
        req: LLMRequest,
        turns: list[ChatTurn],
        params: GenParams,
        tools: list[Tool],
        gen: _Generation,
        out: str,
    ) -> Parsed | None:
        """One pass of the engine: its words published as they come (a call written as text
        held back and read at the end, as returned; None without tools)."""
        assert self.nc is not None
        offered = {t.name for t in tools}
        # a pass after tool results, offered none now: a call written anyway is held, not said
        called = (
            {c.name for m in turns for c in m.tool_calls} - offered
            if self.engine.supports_tools
            else set()
        )
        splitter = ToolCallSplitter(offered, called) if offered or called else None
        stream = self.engine.stream(turns, params, background=req.purpose == "summary", tools=tools)
        try:
            async for piece in stream:
                if isinstance(piece, EngineCall):
                    gen.call(piece)
                    continue
                if not piece or req.purpose == "prefill":
                    continue
                if gen.first is None:
                    gen.first = time.perf_counter()
                text = splitter.feed(piece) if splitter is not None else piece
                if text and await gen.say(self.nc, out, text):
                    log.warning("llm reply %s cut: %s", req.reply_id, gen.guard.reason)
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if splitter is None:
            return None
        parsed = splitter.finish()
        for call in parsed.calls:
            gen.call(call)
        if parsed.text.strip():
            await gen.say(self.nc, out, parsed.text)
        return parsed

    def _warn_no_tools(self) -> None:
        if not self._warned_no_tools:
            self._warned_no_tools = True
            log.warning(
                "this model's chat template cannot call tools: agents' tools are not offered "
                "(a Qwen2.5 model can: services/llm/models.py)"
            )

    async def _error(self, out: str, req: LLMRequest, code: ErrorCode, message: str) -> None:
        assert self.nc is not None
        ERRORS.labels("llm", code).inc()
        trace.get_current_span().set_status(trace.StatusCode.ERROR, code)
        with contextlib.suppress(Exception):
            await bus.publish(
                self.nc, out, LLMError(reply_id=req.reply_id, code=code, message=message)
            )
