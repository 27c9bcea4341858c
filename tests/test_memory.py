"""Memory beyond the LLM window (services/session/memory.py), with the session and llm replicas
in this process against a real NATS and Redis, and a fake engine that records its prompts.

Invariants protected:
- when turns slide out of the window, a summary of them is made after the turn (never on its
  path), kept in Redis beside the full history, and opens the next turn's prompt;
- the summary is background work: a reply claimed while it runs preempts it and is not slowed
  by it, and the summary is made anyway, later;
- the full history stays readable;
- while the user speaks, the coming turn's prompt is prefilled from the partial transcript.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

import nats
import pytest

from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    ChatMessage,
    LLMParams,
    Summary,
    TurnAccepted,
    TurnPrefill,
    TurnSubmit,
)
from services.llm.engines.fake import FakeLLMEngine
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker
from services.session.settings import SessionSettings
from services.session.store import Store
from services.session.window import SUMMARY_HEADING
from services.session.worker import SessionWorker

pytestmark = pytest.mark.asyncio

NOTES = "The user's name is Dana and she lives in Lisbon."


class NoteTaker(FakeLLMEngine):
    """Replies at once; background work (the summary) takes `summary_s` and writes NOTES."""

    def __init__(self, summary_s: float) -> None:
        super().__init__(reply="Sure, happy to help.")
        self.summary_s = summary_s
        self.background: list[list[ChatMessage]] = []
        self.summaries_done = 0

    async def stream(
        self, messages: list[ChatMessage], params: LLMParams, background: bool = False
    ) -> AsyncGenerator[str, None]:
        if not background:
            async for piece in super().stream(messages, params, background):
                yield piece
            return
        self.background.append(list(messages))
        await asyncio.sleep(self.summary_s)
        self.summaries_done += 1
        yield NOTES


class Harness:
    def __init__(self, nats_url: str, redis_url: str, engine: NoteTaker) -> None:
        self.nats_url, self.redis_url, self.engine = nats_url, redis_url, engine
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> Harness:
        self.store = Store.from_url(self.redis_url)
        settings = SessionSettings(
            nats_url=self.nats_url, redis_url=self.redis_url, memory_retry_s=0.2
        )
        self.session = SessionWorker(settings, self.store)
        self.llm = LlmWorker(LlmSettings(nats_url=self.nats_url, warmup=False), self.engine)
        self.nc = [await nats.connect(self.nats_url) for _ in range(3)]
        await self.session.start(self.nc[0])
        await self.llm.start(self.nc[1])
        self.sid = secrets.token_hex(8)
        await self.store.put_agent("mem-test", AgentConfig(history_max_turns=3))
        await self.store.create_session(self.sid, "mem-test")
        await self.nc[2].subscribe(subjects.events(self.sid), cb=self._seen)
        return self

    async def _seen(self, msg: Any) -> None:
        self.events.append(json.loads(msg.data))

    async def turn(self, n: int, text: str) -> float:
        """One typed turn; seconds from its submit to its reply.done."""
        t0 = time.monotonic()
        submit = TurnSubmit(
            session_id=self.sid, turn_id=f"t{n}", text=text, source="text", voice=False
        )
        await bus.request(self.nc[2], subjects.SESSION_TURN, submit, TurnAccepted, timeout=5)
        while not any(e["type"] == "reply.done" and e["turn_id"] == f"t{n}" for e in self.events):
            assert time.monotonic() - t0 < 10, "no reply"
            await asyncio.sleep(0.01)
        return time.monotonic() - t0

    async def summary(self, timeout: float = 10.0) -> Summary:
        deadline = time.monotonic() + timeout
        while (found := (await self.store.memory_state(self.sid))[1]) is None:
            assert time.monotonic() < deadline, "no summary was made"
            await asyncio.sleep(0.05)
        return found

    async def __aexit__(self, *exc: object) -> None:
        await self.session.drain(1.0)
        await self.session.close()
        await self.llm.drain(1.0)
        for nc in self.nc:
            await nc.close()


async def test_turns_that_leave_the_window_are_summarized_and_open_the_prompt(
    nats_url: str, redis_url: str
) -> None:
    async with Harness(nats_url, redis_url, NoteTaker(summary_s=0.05)) as h:
        await h.turn(1, "My name is Dana and I live in Lisbon.")
        for n in range(2, 4):
            await h.turn(n, f"Filler question number {n}?")
        summary = await h.summary()
        assert summary.text == NOTES
        start, _ = await h.store.memory_state(h.sid)
        assert start == summary.upto > 0  # the window moved past what the summary holds
        asked = h.engine.background[0][-1].content
        assert "My name is Dana and I live in Lisbon." in asked  # what slid out was summarized
        await asyncio.sleep(0.3)  # the prefill of the new prompt
        await h.turn(4, "What's my name?")
        prompt = h.engine.requests[-1]
        assert prompt[0].role == "system"
        assert f"{SUMMARY_HEADING} {NOTES}" in prompt[0].content
        assert prompt[-1].content == "What's my name?"
        texts = [m.text for m in await h.store.history(h.sid)]
        assert len(texts) == 8 and texts[0] == "My name is Dana and I live in Lisbon."


async def test_a_reply_preempts_the_summary_which_is_made_later(
    nats_url: str, redis_url: str
) -> None:
    async with Harness(nats_url, redis_url, NoteTaker(summary_s=1.5)) as h:
        for n in range(1, 4):
            await h.turn(n, f"Question number {n}?")
        while not h.llm._background:  # the summary is running now
            await asyncio.sleep(0.01)
        took = await h.turn(4, "Is anyone there?")
        assert took < 1.0, f"the reply waited {took:.2f} s on the summary"
        summary = await h.summary(timeout=15)
        assert summary.text == NOTES
        assert len(h.engine.background) >= 2  # the preempted try, and the one that finished


async def test_what_the_user_is_saying_is_prefilled_while_they_speak(
    nats_url: str, redis_url: str
) -> None:
    """A partial transcript has the coming turn's prompt evaluated: the window, then the words."""
    async with Harness(nats_url, redis_url, NoteTaker(summary_s=0.05)) as h:
        await h.turn(1, "Hello there.")
        await asyncio.sleep(0.3)
        await bus.publish(
            h.nc[2], subjects.SESSION_PREFILL, TurnPrefill(session_id=h.sid, text="What is the")
        )
        deadline = time.monotonic() + 5
        while not any(r[-1].content == "What is the" for r in h.engine.requests):
            assert time.monotonic() < deadline, "no prefill"
            await asyncio.sleep(0.02)
        prompt = next(r for r in h.engine.requests if r[-1].content == "What is the")
        assert [m.content for m in prompt[1:3]] == ["Hello there.", "Sure, happy to help."]
