"""Memory beyond the LLM window: what the user said about themselves, kept when turns slide out.

After a turn ends, `Memory.after_turn` plans the window for the next turn with room for a
typical question. When the window must slide:
1. the user's statements in the turns that leave it (their own words, questions left out:
   `window.user_statements`) are added to the session's notes (`window.merge_notes`);
2. the notes are stored as the summary beside the history (`va:summary:{sid}`,
   `Store.save_summary`) and the window start moves, in one step: the next turn's prompt opens
   with the notes (`window.to_chat`);
3. an idle llm replica is asked for a prefill of that new prompt (`purpose: prefill`), so the
   next turn finds it cached. A reply claimed meanwhile preempts it; a turn never waits for it.
The notes are the user's words, not a model's summary of them: Qwen2.5-Coder-1.5B, asked to
note facts, invented some ("The user plays the piano"), lost others ("Next month I'm flying to
Japan" → "None.") and, rewriting its earlier notes, dropped them or looped (docs/performance.md).
While the user speaks, `prefill` has the coming turn's prompt (the window and what the partial
transcript says) evaluated the same way, so the turn's first token waits only on the words that
differ. At most one task per session runs at a time; a turn that ends while one runs makes it
plan again when done. A turn that must slide before the notes are made (`Turn._prepare`) still
slides, with the statements of what left in its prompt all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS

from services.common import bus, subjects
from services.common.aio import get_within
from services.common.messages import (
    AgentConfig,
    ChatMessage,
    ClaimAck,
    HistoryMessage,
    Interrupt,
    LLMDelta,
    LLMDone,
    LLMError,
    LLMOut,
    LLMParams,
    LLMRequest,
    Summary,
    ToolSpec,
    decode,
)

from .mcp import McpCatalog
from .settings import SessionSettings
from .store import Store
from .window import merge_notes, plan_window, to_chat, user_statements

log = logging.getLogger(__name__)

# Room kept for the next turn when planning a slide: a question of about this many characters.
NEXT_TURN_CHARS = 400


class Preempted(Exception):
    """The LLM replica had a reply to make (busy, or it cancelled this work): try again later."""


class Memory:
    def __init__(
        self, nc: NATS, store: Store, settings: SessionSettings, mcp: McpCatalog | None = None
    ) -> None:
        self.nc = nc
        self.store = store
        self.cfg = settings
        self.mcp = mcp  # the MCP servers' tools, offered in the prefill as the turn offers them
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def after_turn(self, session_id: str, agent: AgentConfig) -> None:
        """A turn of the session ended and was written to history: plan the window again."""
        if session_id in self._tasks:
            self._again.add(session_id)
            return
        task = asyncio.create_task(self._run(session_id, agent), name=f"memory-{session_id}")
        self._tasks[session_id] = task
        task.add_done_callback(lambda _t: self._done(session_id, agent))

    def _done(self, session_id: str, agent: AgentConfig) -> None:
        self._tasks.pop(session_id, None)
        if session_id in self._again:
            self._again.discard(session_id)
            self.after_turn(session_id, agent)

    def prefill(self, session_id: str, agent: AgentConfig, text: str) -> None:
        """The user is speaking (`text`: the partial transcript so far): have an idle llm replica
        evaluate the coming turn's prompt. One at a time per session; dropped when busy."""
        key = f"prefill:{session_id}"
        if key in self._tasks or session_id in self._tasks:
            return
        task = asyncio.create_task(self._prefill(session_id, agent, text), name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _prefill(self, sid: str, agent: AgentConfig, text: str) -> None:
        """The next turn's prompt, with `text` as the user's words so far ("": up to them)."""
        try:
            if self.mcp is not None:
                agent = await self.mcp.resolve(agent)
            now = await self.store.window(sid)
            user = HistoryMessage(role="user", text=text, turn_id="", created_at=0)
            window = now.history + [user]
            if plan_window(window, 0, agent):
                return  # the turn will slide the window: this prompt would not be its prefix
            messages = to_chat(agent, window, now.summary, now.unsummarized)
            # with the agent's tools, as the turn offers them: the same prompt, the same cache
            await self._generate_once(sid, "prefill", messages, 1, agent.tool_specs())
        except (Preempted, bus.BusUnavailable):
            pass  # a hint: the turn evaluates its prompt anyway
        except Exception:
            log.warning("prefill for session %s failed", sid, exc_info=True)

    async def close(self, timeout: float = 1.0) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _run(self, sid: str, agent: AgentConfig) -> None:
        try:
            await self.update(sid, agent)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory of session %s: update failed", sid)

    async def update(self, sid: str, agent: AgentConfig) -> bool:
        """Slide the window, noting what leaves it, if the next turn would not fit; True if it
        slid."""
        history = await self.store.history(sid)
        start, summary = await self.store.memory_state(sid)
        upto = summary.upto if summary else 0
        probe = HistoryMessage(role="user", text="x" * NEXT_TURN_CHARS, turn_id="", created_at=0)
        target = min(plan_window(history + [probe], start, agent), len(history))
        if target <= upto:
            return False
        said = user_statements(history[upto:target])
        text = merge_notes(summary.text if summary else "", said)
        await self.store.save_summary(sid, Summary(text=text, upto=target, created_at=time.time()))
        log.info("memory of %s: notes through message %d: %d chars", sid, target, len(text))
        await self._prefill(sid, agent, "")  # once: a turn that preempts it evaluates it anyway
        return True

    async def _generate_once(
        self,
        sid: str,
        purpose: str,
        messages: list[ChatMessage],
        max_tokens: int,
        tools: list[ToolSpec],
    ) -> str:
        rid = bus.new_id()
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def on_out(msg: Any) -> None:
            with contextlib.suppress(Exception):
                inbox.put_nowait(decode(LLMOut, msg.data))

        sub = await self.nc.subscribe(subjects.llm_out(sid, rid), cb=on_out)
        try:
            try:
                await bus.request(
                    self.nc,
                    subjects.LLM_CLAIM,
                    LLMRequest(
                        session_id=sid,
                        turn_id=f"memory{rid}",
                        reply_id=rid,
                        messages=messages,
                        params=LLMParams(temperature=0.0, max_tokens=max_tokens),
                        purpose=purpose,  # type: ignore[arg-type]
                        tools=tools,
                    ),
                    ClaimAck,
                    timeout=self.cfg.claim_timeout_s,
                )
            except bus.RemoteError as exc:
                raise Preempted(str(exc)) from exc
            parts: list[str] = []
            while True:
                item = await get_within(inbox, self.cfg.llm_stall_timeout_s * 3)
                if isinstance(item, LLMDelta):
                    parts.append(item.text)
                elif isinstance(item, LLMDone):
                    if item.cancelled:
                        raise Preempted("cancelled by a reply")
                    return "".join(parts).strip()
                elif isinstance(item, LLMError):
                    raise Preempted(item.message)
        except TimeoutError as exc:  # stop it where it is: its next try goes on from there
            with contextlib.suppress(Exception):
                await bus.publish(
                    self.nc,
                    subjects.interrupt(sid),
                    Interrupt(session_id=sid, reply_id=rid, reason="failure"),
                )
            raise Preempted("no output") from exc
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
