"""One turn's tool calls: when they may run, their record in history, and the model's next pass.

The rules that keep a call from running twice or from a reply nobody will hear:
- A call with side effects runs only once the turn is confirmed: a speculative turn holds it
  until the end of turn is confirmed (`confirmed`), and a retraction drops it unrun. Calls
  without side effects run at once, speculative or not.
- Before a call's request leaves, the user message and the call are in history (`write_entries`);
  its result follows when it ends. A replica killed mid-call leaves the call without a result,
  which the next prompt reads as "not known whether it happened" (services/session/window.py).
- An interrupt (or a retraction) stops what is running and drops what has not started: a call
  in flight that has side effects ends `unknown`, and nothing is ever retried automatically.
- A turn runs each call once: one the model makes again (the same tool and arguments, as small
  models do after a result) gets the first call's result, unrun. A call with side effects that
  an earlier turn made (and that happened, or may have) is not run again on the model's own
  initiative: refused once, with word to ask the user (the next same call runs). A round that
  ran nothing leaves the model no tools, so it answers in words.
- A call runs as a task of its own that hands its result to the turn's inbox (`ToolDone`), so the
  turn stays responsive. When the last call of a round ends, the model runs again with the
  results (`Stages.next_pass`), offered the tools for at most `tool_rounds` rounds.
- The filler (`FILLER`, voice turns): a turn that calls a tool has the user wait for the call
  and for the model's second pass, so a few words are said `tool_filler_ms` after the end of the
  user's speech (at once when the first call starts later than that), unless the answer's own
  words have begun by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from services.common import telemetry as tm
from services.common.messages import (
    ChatMessage,
    HistoryMessage,
    LLMDone,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    ToolSpec,
    now_ms,
)
from services.common.metrics import STAGE_SECONDS, TOOL_CALLS

from .tools import Toolbox, ToolResult, parse_networks

if TYPE_CHECKING:
    from .turns import Turn

log = logging.getLogger(__name__)

# What the model reads for a call with side effects that an earlier turn made already: it
# happened (DONE_BEFORE) or no answer came (UNSETTLED).
DONE_BEFORE = (
    "the same call already happened earlier in this conversation, so it was not run again. If "
    "the user wants it done once more, ask them to confirm"
)
UNSETTLED = (
    "the same call was made earlier and no answer came, so it may already have happened; it was "
    "not run again. Tell the user, and ask whether to try again"
)
FILLER = object()  # put in the inbox when the filler is due


@dataclass(frozen=True)
class ToolDone:
    call: ToolCall
    result: ToolResult


class ToolCalls:
    def __init__(self, turn: Turn, client: httpx.AsyncClient) -> None:
        self.turn = turn
        self.client = client
        self.box = self._toolbox()
        self.rounds = 0
        self.waiting: list[ToolCall] = []  # side effects: waiting for the end of turn
        self.running: dict[str, tuple[ToolCall, asyncio.Task[None]]] = {}
        self.entries: list[HistoryMessage] = []  # calls and results, for history
        self.ended: dict[str, ToolResult] = {}  # by `_same_call` key: each runs once a turn
        # earlier turns' calls with side effects that happened or may have: their outcome
        self.earlier: dict[str, str | None] = {}
        self.only_repeats = False  # the last round ran nothing
        self._filler: asyncio.Task[None] | None = None

    def _toolbox(self) -> Toolbox:
        turn = self.turn
        networks = parse_networks(turn.cfg.tool_networks)
        return Toolbox(turn.agent, self.client, networks, self._ending, turn.mcp)

    async def resolve(self) -> None:
        """The turn's agent gets its MCP servers' tools as listed now; the toolbox runs them."""
        if self.turn.mcp is not None:
            self.turn.agent = await self.turn.mcp.resolve(self.turn.agent)
            self.box = self._toolbox()

    def _ending(self) -> None:
        self.turn.ends_conversation = True

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def offer(self) -> list[ToolSpec]:
        """The tools for the model's next pass: none once `tool_rounds` rounds were made, or
        after a round that only called again what had run (it must answer in words now)."""
        if self.rounds >= self.turn.cfg.tool_rounds or self.only_repeats:
            return []
        return self.turn.agent.tool_specs()

    def remember(self, entries: list[HistoryMessage]) -> None:
        """Earlier turns' calls with side effects that happened (`ok`) or may have (`unknown`,
        or no result at all: a replica died mid-call), unless the latest same call did not."""
        outcomes = {m.tool_call_id: m.outcome for m in entries if m.role == "tool"}
        for m in entries:
            for call in m.tool_calls or []:
                key, outcome = self._same_call(call), outcomes.get(call.id)
                if outcome in (None, "ok", "unknown") and self.box.side_effects(call.name):
                    self.earlier[key] = outcome
                else:
                    self.earlier.pop(key, None)

    def _same_call(self, call: ToolCall) -> str:
        """What makes two calls the same: the tool and its arguments (as parsed, keys sorted)."""
        args = self.box.arguments(call)
        shown = json.dumps(args, sort_keys=True) if isinstance(args, dict) else call.arguments
        return f"{call.name} {shown}"

    def timeout(self) -> float:
        """How long the turn waits for its inbox while calls run (each ends within its own
        timeout) or wait for the end of turn (the gateway confirms or retracts)."""
        if self.waiting:
            return self.turn.cfg.playback_timeout_s
        return self.box.timeout_s() + 5.0

    # -- a round --------------------------------------------------------------------------------
    async def begin(self, done: LLMDone) -> None:
        """The model's pass ended in calls: record them, tell the client, and run them now or,
        with side effects on a turn not yet confirmed, at its confirmation."""
        turn = self.turn
        self.rounds += 1
        calls = done.tool_calls
        turn.messages.append(ChatMessage(role="assistant", content=done.text, tool_calls=calls))
        self.entries.append(
            HistoryMessage(
                role="assistant",
                text="",
                turn_id=turn.tid,
                tool_calls=calls,
                created_at=time.time(),
            )
        )
        for call in calls:
            args = self.box.arguments(call)
            await turn.outbox.emit(
                ToolCallEvent(
                    turn_id=turn.tid,
                    call_id=call.id,
                    name=call.name,
                    arguments=args if isinstance(args, dict) else {},
                )
            )
        fresh = []
        for call in calls:
            key = self._same_call(call)
            earlier = self.ended.get(key)
            if earlier is not None:  # made again (small models repeat a call after its result)
                await self._record(call, earlier.repeated())
            elif key in self.earlier:  # it happened, or may have: the user says whether again
                done_before = self.earlier.pop(key) == "ok"
                self.ended[key] = ToolResult("refused", DONE_BEFORE if done_before else UNSETTLED)
                await self._record(call, self.ended[key])
            else:
                fresh.append(call)
        if not fresh:
            self.only_repeats = True
            await self._next_pass()
            return
        self.waiting = fresh
        if any(self.box.side_effects(c.name) for c in fresh) and not turn.outbox.confirmed:
            log.info("turn %s: %s wait for the end of turn", turn.tid, [c.name for c in fresh])
            return
        await self._start()

    async def confirmed(self) -> None:
        if self.waiting:
            await self._start()

    async def _start(self) -> None:
        turn = self.turn
        calls, self.waiting = self.waiting, []
        if turn.outbox.confirmed:
            await turn.write_entries()  # the calls are in history before a request leaves
        for call in calls:
            task = asyncio.create_task(self._run(call), name=f"tool-{call.id}")
            self.running[call.id] = (call, task)
        if turn.cfg.tool_filler_ms and self._filler is None:
            waited_ms = now_ms() - (turn.submit.speech_end_ms or turn.t_start)
            due_s = max(0.0, turn.cfg.tool_filler_ms - waited_ms) / 1000
            self._filler = asyncio.create_task(self._filler_after(due_s))

    async def _filler_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.turn.inbox.put_nowait(FILLER)

    async def _run(self, call: ToolCall) -> None:
        turn = self.turn
        with tm.tracer.start_as_current_span(
            "tool.call",
            attributes={
                tm.ATTR_SESSION: turn.sid,
                tm.ATTR_TURN: turn.tid,
                tm.ATTR_TOOL_NAME: call.name,
                tm.ATTR_TOOL_CALL_ID: call.id,
                tm.ATTR_TOOL_SIDE_EFFECTS: self.box.side_effects(call.name),
            },
        ) as span:
            result = await self.box.run(call, idempotency_key=f"{turn.rid}-{call.id}")
            span.set_attribute(tm.ATTR_TOOL_OUTCOME, result.outcome)
        TOOL_CALLS.labels(result.outcome).inc()
        STAGE_SECONDS.labels("session", "tool").observe(result.ms / 1000)
        log.info(
            "turn %s: tool %s ended %s in %.0f ms", turn.tid, call.name, result.outcome, result.ms
        )
        turn.inbox.put_nowait(ToolDone(call, result))

    async def done(self, item: ToolDone) -> None:
        """A call ended: its result into the record; the last of the round runs the model."""
        if self.running.pop(item.call.id, None) is None:
            return  # cut meanwhile: its end is already recorded
        self.ended[self._same_call(item.call)] = item.result
        await self._record(item.call, item.result)
        if not self.running:
            await self._next_pass()

    async def _next_pass(self) -> None:
        """The round's calls all ended: the model again, with their results."""
        turn = self.turn
        if turn.outbox.confirmed:
            await turn.write_entries()
        await turn.stages.next_pass(turn.messages, self.offer())

    async def _record(self, call: ToolCall, result: ToolResult) -> None:
        turn = self.turn
        content = result.for_model()
        turn.messages.append(ChatMessage(role="tool", content=content, tool_call_id=call.id))
        self.entries.append(
            HistoryMessage(
                role="tool",
                text=content,
                turn_id=turn.tid,
                tool_call_id=call.id,
                outcome=result.outcome,
                created_at=time.time(),
            )
        )
        await turn.outbox.emit(
            ToolResultEvent(
                turn_id=turn.tid,
                call_id=call.id,
                name=call.name,
                outcome=result.outcome,
                result=result.text[:2000],
                ms=result.ms,
            )
        )

    async def cut(self, reason: str) -> None:
        """The turn was interrupted or retracted: nothing more runs. A call in flight with side
        effects may have happened (`unknown`); one without, or not started, did not."""
        self._stop_filler()
        waiting, self.waiting = self.waiting, []
        running, self.running = list(self.running.values()), {}
        for _, task in running:
            task.cancel()
        for _, task in running:
            with contextlib.suppress(BaseException):
                await task
        for call, _ in running:
            if self.box.side_effects(call.name):
                await self._record(call, ToolResult("unknown", f"cut off ({reason})"))
            else:
                await self._record(call, ToolResult("refused", f"not finished ({reason})"))
        for call in waiting:
            await self._record(call, ToolResult("refused", f"not run ({reason})"))
        if running or waiting:
            log.info(
                "turn %s: %d call(s) cut, %d not run (%s)",
                self.turn.tid,
                len(running),
                len(waiting),
                reason,
            )

    def _stop_filler(self) -> None:
        if self._filler is not None:
            self._filler.cancel()
