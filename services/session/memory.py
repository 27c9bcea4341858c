"""Memory beyond the LLM window: a rolling summary of what slid out of it, made off the reply path.

After a turn ends, `Memory.after_turn` plans the window for the next turn with room for a
typical question. When the window must slide, a background task:
1. asks an LLM replica for a summary (`purpose: summary`: an idle replica only, which keeps
   the conversation's prompt cache around it) of the earlier summary plus what the user said
   in the turns that leave the window: names, facts, preferences, open questions;
2. stores it beside the history (`va:summary:{sid}`, `Store.save_summary`) and moves the window
   start, in one step: the next turn's prompt opens with the summary (`window.to_chat`);
3. asks for a prefill of that new prompt (`purpose: prefill`), so the next turn finds it cached.
A reply claimed meanwhile preempts the work (services/llm/worker.py); it is retried a little
later, and a new turn never waits for it. While the user speaks, `prefill` has the coming turn's
prompt (the window and what the partial transcript says) evaluated the same way, so the turn's
first token waits only on the words that differ. At most one task per session runs at a time; a turn
that ends while one runs makes it plan again when done. A turn that must slide before the
summary is ready (`Turn._prepare`) still slides; the summary catches up from `upto`.
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
    decode,
)

from .settings import SessionSettings
from .store import Store
from .window import plan_window, to_chat

log = logging.getLogger(__name__)

# Room kept for the next turn when planning a slide: a question of about this many characters.
NEXT_TURN_CHARS = 400
MAX_DROPPED_CHARS = 6000  # the newest part of what leaves the window, if the summary fell behind
SUMMARY_PROMPT = (
    "You keep notes about the user of a voice assistant. Write only what the user said about "
    "themselves and the people and things in their life, as short sentences that start with "
    "\"The user\". Keep every earlier note unless the user corrected it. Leave out questions "
    "about general knowledge. Never invent anything. If there is nothing to note, write "
    "\"Nothing yet.\""
)
# One worked example: small models follow an example better than a list of rules.
EXAMPLE = (
    "Earlier notes: The user's name is Sam.\n\nWhat the user said next:\n"
    "- I have two kids and we live in Oslo.\n- What's the tallest mountain in the world?\n"
    "- I don't like spicy food.\n- Can you remind me to call my mother on Sunday?\n\n"
    "The updated notes:",
    "The user's name is Sam. The user has two kids. The user lives in Oslo. The user does not "
    "like spicy food. The user wants to call their mother on Sunday.",
)


class Preempted(Exception):
    """The LLM replica had a reply to make (busy, or it cancelled this work): try again later."""


def summary_messages(previous: str, dropped: list[HistoryMessage]) -> list[ChatMessage]:
    """The summary's prompt: the earlier notes and what the user said in the turns that leave
    the window (their own words hold the facts; the replies would only make it longer)."""
    said = "\n".join(f"- {m.text}" for m in dropped if m.role == "user" and m.text)
    return [
        ChatMessage(role="system", content=SUMMARY_PROMPT),
        ChatMessage(role="user", content=EXAMPLE[0]),
        ChatMessage(role="assistant", content=EXAMPLE[1]),
        ChatMessage(
            role="user",
            content=f"Earlier notes: {previous or 'Nothing yet.'}\n\nWhat the user said next:\n"
            f"{said[-MAX_DROPPED_CHARS:]}\n\nThe updated notes:",
        ),
    ]


class Memory:
    def __init__(self, nc: NATS, store: Store, settings: SessionSettings) -> None:
        self.nc = nc
        self.store = store
        self.cfg = settings
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
            start, summary = await self.store.memory_state(sid)
            user = HistoryMessage(role="user", text=text, turn_id="", created_at=0)
            window = await self.store.history(sid, start) + [user]
            if plan_window(window, 0, agent):
                return  # the turn will slide the window: this prompt would not be its prefix
            await self._generate_once(sid, "prefill", to_chat(agent, window, summary), 1)
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
        """Slide the window and summarize if the next turn would not fit; True if it slid."""
        history = await self.store.history(sid)
        start, summary = await self.store.memory_state(sid)
        upto = summary.upto if summary else 0
        probe = HistoryMessage(role="user", text="x" * NEXT_TURN_CHARS, turn_id="", created_at=0)
        target = min(plan_window(history + [probe], start, agent), len(history))
        if target <= upto:
            return False
        previous = summary.text if summary else ""
        text = await self._generate(
            sid, "summary", summary_messages(previous, history[upto:target]), 200
        )
        if not text:
            return False
        new = Summary(text=text, upto=target, created_at=time.time())
        await self.store.save_summary(sid, new)
        log.info("memory of %s: summary through message %d: %d chars", sid, target, len(text))
        await self._prefill(sid, agent, "")  # once: a turn that preempts it evaluates it anyway
        return True

    async def _generate(
        self, sid: str, purpose: str, messages: list[ChatMessage], max_tokens: int
    ) -> str:
        """Background generation on an idle LLM replica, retried while replies preempt it."""
        deadline = time.monotonic() + self.cfg.memory_deadline_s
        while True:
            try:
                return await self._generate_once(sid, purpose, messages, max_tokens)
            except (Preempted, bus.BusUnavailable) as exc:
                if time.monotonic() + self.cfg.memory_retry_s > deadline:
                    log.info("memory of session %s: %s given up (%s)", sid, purpose, exc)
                    return ""
                await asyncio.sleep(self.cfg.memory_retry_s)

    async def _generate_once(
        self, sid: str, purpose: str, messages: list[ChatMessage], max_tokens: int
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
