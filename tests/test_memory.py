"""Memory beyond the LLM window (services/session/memory.py), with the session and llm replicas
in this process against a real NATS and Redis, and a fake engine that records its prompts.

Invariants protected:
- when turns slide out of the window, the user's statements in them (not their questions) are
  kept as notes after the turn, in Redis beside the full history, and open the next prompt;
- a turn that slides the window before the notes are made has those statements all the same;
- the full history stays readable;
- while the user speaks, the coming turn's prompt is prefilled from the partial transcript.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import nats
import pytest

from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    HistoryMessage,
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
from services.session.window import NOTES_HEADING, to_chat
from services.session.worker import SessionWorker

pytestmark = pytest.mark.asyncio


class Recorder(FakeLLMEngine):
    """Replies at once and records every prompt (`requests`)."""

    def __init__(self) -> None:
        super().__init__(reply="Sure, happy to help.")


class Harness:
    def __init__(self, nats_url: str, redis_url: str, engine: Recorder) -> None:
        self.nats_url, self.redis_url, self.engine = nats_url, redis_url, engine
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> Harness:
        self.store = Store.from_url(self.redis_url)
        settings = SessionSettings(nats_url=self.nats_url, redis_url=self.redis_url)
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

    async def notes(self, timeout: float = 10.0) -> Summary:
        deadline = time.monotonic() + timeout
        while (found := (await self.store.memory_state(self.sid))[1]) is None:
            assert time.monotonic() < deadline, "no notes were made"
            await asyncio.sleep(0.05)
        return found

    async def __aexit__(self, *exc: object) -> None:
        await self.session.drain(1.0)
        await self.session.close()
        await self.llm.drain(1.0)
        for nc in self.nc:
            await nc.close()


async def test_what_the_user_said_about_themselves_outlasts_the_window(
    nats_url: str, redis_url: str
) -> None:
    async with Harness(nats_url, redis_url, Recorder()) as h:
        await h.turn(1, "My name is Dana and I live in Lisbon. What's a good book?")
        for n in range(2, 4):
            await h.turn(n, f"Filler question number {n}?")
        notes = await h.notes()
        assert notes.text == "- My name is Dana and I live in Lisbon."  # no question
        start, _ = await h.store.memory_state(h.sid)
        assert start == notes.upto > 0  # the window moved past what the notes hold
        await asyncio.sleep(0.3)  # the prefill of the new prompt
        await h.turn(4, "What's my name?")
        prompt = h.engine.requests[-1]
        assert prompt[0].role == "system"
        assert f"{NOTES_HEADING}\n- My name is Dana and I live in Lisbon." in prompt[0].content
        assert prompt[-1].content == "What's my name?"
        assert all("My name is Dana" not in m.content for m in prompt[1:])  # not in the window
        texts = [m.text for m in await h.store.history(h.sid)]
        assert len(texts) == 8 and texts[0].startswith("My name is Dana and I live in Lisbon.")


async def test_a_turn_ahead_of_the_notes_has_what_the_user_said(redis_url: str) -> None:
    """The window moved (by a turn that overflowed it) past messages no notes hold yet."""
    store = Store.from_url(redis_url)
    sid = secrets.token_hex(8)
    try:
        await store.put_agent("mem-test", AgentConfig(history_max_turns=3))
        await store.create_session(sid, "mem-test")
        said = [
            "I live in Oslo.",
            "I have a dog called Pepper, she's a beagle.",
            "Why is the sky blue?",
        ]
        for text in said + ["How far is the moon?"]:
            await store.append(
                sid,
                HistoryMessage(role="user", text=text, turn_id="t", created_at=0),
                HistoryMessage(role="assistant", text="Sure.", turn_id="t", created_at=0),
            )
        await store.save_summary(sid, Summary(text="- I live in Oslo.", upto=2, created_at=0))
        await store.set_window_start(sid, 6)
        begun = await store.begin_turn(sid, "r1")
        assert [m.text for m in begun.history] == ["How far is the moon?", "Sure."]
        system = to_chat(AgentConfig(), begun.history, begun.summary, begun.unsummarized)[0]
        assert system.content.endswith(  # the notes, then what no notes hold yet: no question
            f"{NOTES_HEADING}\n- I live in Oslo.\n- I have a dog called Pepper, she's a beagle."
        )
        assert (await store.window(sid)).unsummarized == begun.unsummarized
    finally:
        await store.close()


async def test_what_the_user_is_saying_is_prefilled_while_they_speak(
    nats_url: str, redis_url: str
) -> None:
    """A partial transcript has the coming turn's prompt evaluated: the window, then the words."""
    async with Harness(nats_url, redis_url, Recorder()) as h:
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
