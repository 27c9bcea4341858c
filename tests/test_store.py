"""The session service's Redis state (services/session/store.py), against a real Redis.

Invariants protected: a turn takes the in-flight mark only when no other reply holds it (or
when told to take it anyway), reads the history from the window's start in the same step, and
never begins in a session that has ended or does not exist, even while the replica still keeps
that session as active. A submission is claimed by one reply: by its turn's start or by a repeat
of it, whichever comes first.
"""

from __future__ import annotations

import secrets
import time

import pytest
import pytest_asyncio

from services.common.messages import HistoryMessage
from services.session.store import Store

pytestmark = pytest.mark.asyncio(loop_scope="module")


def message(role: str, text: str) -> HistoryMessage:
    return HistoryMessage(role=role, text=text, turn_id="t", created_at=time.time())  # type: ignore[arg-type]


@pytest_asyncio.fixture(loop_scope="module")
async def store(redis_url: str):  # type: ignore[no-untyped-def]
    s = Store.from_url(redis_url)
    yield s
    await s.close()


async def test_a_submission_is_claimed_by_the_first_reply_to_begin_or_to_repeat_it(
    store: Store,
) -> None:
    sid = secrets.token_hex(8)
    await store.create_session(sid, "default")
    begun = await store.begin_turn(sid, "r1", submission="s1", claim="r1 w1")
    assert begun.state == "ok"
    assert (await store.begin_turn(sid, "r1", submission="s1", claim="r1 w1")).state == "ok"
    assert await store.claim_submission(sid, "s1", "r2 w2") == "r1 w1"
    assert (await store.begin_turn(sid, "r2", submission="s1", claim="r2 w2")).state == "taken"
    # a repeat that comes first: the first copy's turn gives way
    assert await store.claim_submission(sid, "s2", "r3 w2") == "r3 w2"
    assert (await store.begin_turn(sid, "r4", submission="s2", claim="r4 w1")).state == "taken"
    await store.clear_inflight(sid, "r1")
    assert (await store.begin_turn(sid, "r3", submission="s2", claim="r3 w2")).state == "ok"


async def test_a_turn_takes_the_mark_only_when_it_is_free(store: Store) -> None:
    sid = secrets.token_hex(8)
    await store.create_session(sid, "default")
    first = await store.begin_turn(sid, "r1")
    assert (first.state, first.start, first.history) == ("ok", 0, [])
    assert (await store.begin_turn(sid, "r1")).state == "ok"  # its own mark: still ok
    assert (await store.begin_turn(sid, "r2")).state == "busy"
    await store.clear_inflight(sid, "r1")
    assert (await store.begin_turn(sid, "r2")).state == "ok"
    # A reply that never let go (its replica died) is overridden when the waiter gives up.
    assert (await store.begin_turn(sid, "r3")).state == "busy"
    assert (await store.begin_turn(sid, "r3", force=True)).state == "ok"
    assert await store.r.get(f"va:inflight:{sid}") == "r3"
    assert 0 < await store.r.ttl(f"va:inflight:{sid}") <= 300


async def test_a_turn_reads_the_history_from_the_window_start(store: Store) -> None:
    sid = secrets.token_hex(8)
    await store.create_session(sid, "default")
    texts = ["one", "two", "three", "four"]
    await store.append(
        sid, *(message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts))
    )
    begun = await store.begin_turn(sid, "r1")
    assert [m.text for m in begun.history] == texts
    await store.clear_inflight(sid, "r1")
    await store.set_window_start(sid, 2)
    begun = await store.begin_turn(sid, "r2")
    assert begun.start == 2 and [m.text for m in begun.history] == ["three", "four"]


async def test_no_turn_begins_in_an_ended_or_unknown_session(store: Store, redis_url: str) -> None:
    sid = secrets.token_hex(8)
    await store.create_session(sid, "default")
    assert (await store.active_session(sid)) is not None
    # Ended by another replica: this one still keeps the session, but the turn does not begin.
    other = Store.from_url(redis_url)
    try:
        await other.end_session(sid)
    finally:
        await other.close()
    assert (await store.active_session(sid)) is not None
    assert (await store.begin_turn(sid, "r1")).state == "ended"
    assert (await store.begin_turn(sid, "r1", force=True)).state == "ended"
    assert await store.r.get(f"va:inflight:{sid}") is None
    store.forget_session(sid)  # the session_end broadcast
    assert (await store.active_session(sid)) is None
    # Unknown sessions are neither active nor begun; ending one here forgets it at once.
    assert (await store.active_session("nosuchsession")) is None
    assert (await store.begin_turn("nosuchsession", "r1")).state == "ended"
    sid2 = secrets.token_hex(8)
    await store.create_session(sid2, "default")
    assert (await store.active_session(sid2)) is not None
    await store.end_session(sid2)
    assert (await store.active_session(sid2)) is None
