"""The session replica's turn acceptance, in this process, against a real NATS and Redis.

Invariant protected: a turn the replica could not accept leaves nothing behind. The turn's task
starts (and takes the in-flight mark) before its subscriptions are made, so that Redis answers
while the acceptance is written; when making those subscriptions fails (NATS going away at that
moment), the submitter gets an error, the client is told nothing more about that turn, nothing
enters history and the in-flight mark is released for the next turn.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import nats
import pytest
from nats.errors import ConnectionClosedError

from services.common import bus, subjects
from services.common.messages import TurnAccepted, TurnSubmit
from services.session.settings import SessionSettings
from services.session.store import Store
from services.session.turns import Turn
from services.session.worker import SessionWorker

pytestmark = pytest.mark.asyncio


async def test_a_turn_that_cannot_be_accepted_leaves_nothing_behind(  # type: ignore[no-untyped-def]
    nats_url: str, redis_url: str, monkeypatch
) -> None:
    store = Store.from_url(redis_url)
    worker = SessionWorker(SessionSettings(nats_url=nats_url, redis_url=redis_url), store)
    nc = await nats.connect(nats_url)
    client = await nats.connect(nats_url)
    try:
        await worker.start(nc)
        sid = secrets.token_hex(8)
        await store.create_session(sid, "default")
        events: list[dict[str, Any]] = []

        async def seen(msg: Any) -> None:
            events.append(json.loads(msg.data))

        await client.subscribe(subjects.events(sid), cb=seen)
        await client.flush()

        marks: list[str | None] = []
        real_open = Turn.open

        async def open_after_nats_went_away(turn: Turn) -> None:
            # The turn's task ran up to its Redis script before this point: wait for its mark.
            for _ in range(200):
                marks.append(await store.r.get(f"va:inflight:{sid}"))
                if marks[-1] == turn.rid:
                    break
                await asyncio.sleep(0.005)
            raise ConnectionClosedError

        monkeypatch.setattr(Turn, "open", open_after_nats_went_away)
        submit = TurnSubmit(
            session_id=sid, turn_id="t1", text="What color is the sky?", source="text", voice=False
        )
        with pytest.raises(bus.RemoteError) as failed:
            await bus.request(client, subjects.SESSION_TURN, submit, TurnAccepted, timeout=5)
        assert failed.value.error.code == "internal"
        assert marks and marks[-1] is not None, "the turn's task never took the mark"

        deadline = time.monotonic() + 10
        while (worker.turns or await store.r.exists(f"va:inflight:{sid}")) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        assert not worker.turns, "the abandoned turn's task did not end"
        assert await store.r.get(f"va:inflight:{sid}") is None
        assert await store.r.llen(f"va:history:{sid}") == 0
        await client.flush()
        await asyncio.sleep(0.2)
        kinds = [e["type"] for e in events]
        assert not {"reply.done", "turn.metrics", "reply.delta"} & set(kinds), kinds

        # The next turn is accepted as usual.
        monkeypatch.setattr(Turn, "open", real_open)
        accepted = await bus.request(
            client,
            subjects.SESSION_TURN,
            TurnSubmit(
                session_id=sid, turn_id="t2", text="And the grass?", source="text", voice=False
            ),
            TurnAccepted,
            timeout=5,
        )
        assert accepted.turn_id == "t2"
        assert await store.r.get(f"va:inflight:{sid}") in (None, accepted.reply_id)
    finally:
        await worker.jobs.wait_all(0.0)  # cancels what is left
        await asyncio.sleep(0.1)
        await client.close()
        await nc.close()
        await store.close()
