"""A turn submitted again: the gateway asks a second time when the first request's answer never
came (the NATS server it went through died with it in flight), and two session replicas may each
get a copy. Two session replicas and an llm replica (the fake engine) run in this process on a
real NATS and Redis; the copies are handed to the replicas directly, in both orders.

Invariants protected: a submission is answered once, whichever copy comes first and to whichever
replica: the repeat is told the reply that runs it, or the late first copy gives way to the
repeat's without a word; history holds the turn once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from services.common import subjects
from services.common.messages import AgentConfig, TurnAccepted, TurnSubmit
from services.llm.engines.fake import FakeLLMEngine
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker
from services.session.settings import SessionSettings
from services.session.store import Store
from services.session.worker import SessionWorker

pytestmark = pytest.mark.asyncio


@dataclass
class Replicas:
    nc: NATS
    store: Store
    a: SessionWorker
    b: SessionWorker
    events: list[dict[str, Any]] = field(default_factory=list)

    async def session(self) -> str:
        agent_id, sid = secrets.token_hex(6), secrets.token_hex(8)
        await self.store.put_agent(agent_id, AgentConfig())
        await self.store.create_session(sid, agent_id)

        async def on_event(msg: Any) -> None:
            self.events.append(json.loads(msg.data))

        await self.nc.subscribe(subjects.events(sid), cb=on_event)
        await self.nc.flush()
        return sid

    async def hand(self, replica: SessionWorker, submit: TurnSubmit) -> TurnAccepted:
        """`submit` as the replica's turn handler gets it off the bus."""
        answer = await replica._on_turn(submit, None)  # type: ignore[arg-type]
        assert isinstance(answer, TurnAccepted), answer
        return answer

    async def ended(self, turn_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The turn's events once its reply is done, and a moment more for any other."""
        end = time.monotonic() + timeout
        while not self.of(turn_id, "reply.done"):
            assert time.monotonic() < end, f"no reply.done: {self.events}"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        return [e for e in self.events if e.get("turn_id") == turn_id]

    def of(self, turn_id: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("turn_id") == turn_id and e["type"] == kind]


@pytest.fixture
async def replicas(nats_url: str, clean_redis: str) -> AsyncIterator[Replicas]:
    nc = await nats.connect(nats_url)
    llm = LlmWorker(LlmSettings(engine="fake", nats_url=nats_url), FakeLLMEngine())
    await llm.start(nc)
    settings = SessionSettings(nats_url=nats_url, redis_url=clean_redis)
    a = SessionWorker(settings, Store.from_url(clean_redis))
    b = SessionWorker(settings, Store.from_url(clean_redis))
    await a.start(nc)
    await b.start(nc)
    store = Store.from_url(clean_redis)
    try:
        yield Replicas(nc, store, a, b)
    finally:
        for worker in (a, b):
            await worker.drain(2.0)
            await worker.close()
        await llm.drain(2.0)
        await store.close()
        await nc.close()


def _submit(sid: str) -> TurnSubmit:
    return TurnSubmit(
        session_id=sid, turn_id=secrets.token_hex(6), text="Hello?", source="text", voice=False
    )


async def _history_once(store: Store, sid: str, submit: TurnSubmit) -> None:
    entries = await store.history(sid)
    assert [(m.role, m.turn_id) for m in entries] == [
        ("user", submit.turn_id),
        ("assistant", submit.turn_id),
    ], entries


async def test_a_repeat_of_a_submission_already_running_is_told_its_reply(
    replicas: Replicas,
) -> None:
    sid = await replicas.session()
    first = _submit(sid)
    ran = await replicas.hand(replicas.a, first)
    await asyncio.sleep(0.1)  # its turn has begun
    repeat = first.model_copy(update={"attempt": 2})
    told = await replicas.hand(replicas.b, repeat)
    assert (told.reply_id, told.worker_id) == (ran.reply_id, replicas.a.worker_id)
    assert not replicas.b.turns
    events = await replicas.ended(first.turn_id)
    assert len(replicas.of(first.turn_id, "reply.done")) == 1, events
    await _history_once(replicas.store, sid, first)


async def test_a_first_copy_that_comes_after_its_repeat_gives_way_without_a_word(
    replicas: Replicas,
) -> None:
    sid = await replicas.session()
    first = _submit(sid)
    repeat = first.model_copy(update={"attempt": 2})
    runs = await replicas.hand(replicas.b, repeat)
    late = await replicas.hand(replicas.a, first)  # its answer would be lost: nobody waits
    assert late.reply_id != runs.reply_id
    events = await replicas.ended(first.turn_id)
    done = replicas.of(first.turn_id, "reply.done")
    assert len(done) == 1 and done[0]["text"], events
    assert not replicas.of(first.turn_id, "error"), events
    assert not replicas.a.turns
    await _history_once(replicas.store, sid, first)


async def test_a_new_submission_of_the_same_turn_runs_again(replicas: Replicas) -> None:
    """A speculative turn retracted and submitted again keeps its turn id: the submission,
    not the turn, is what runs once."""
    sid = await replicas.session()
    first = _submit(sid)
    await replicas.hand(replicas.a, first)
    await replicas.ended(first.turn_id)
    again = _submit(sid).model_copy(update={"turn_id": first.turn_id})
    await replicas.hand(replicas.b, again)
    end = time.monotonic() + 10
    while len(replicas.of(first.turn_id, "reply.done")) < 2:
        assert time.monotonic() < end, replicas.events
        await asyncio.sleep(0.02)
