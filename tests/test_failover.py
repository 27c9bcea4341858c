"""The servers the assistant runs on fail; the conversation goes on.

NATS: three nats-servers clustered on loopback (as the production overlay runs three), every
service given all three URLs (`VA_NATS_URL` a comma list); the server the gateway, then the
session service, is connected to is SIGKILLed while a reply streams. Redis: a primary, a replica
and three sentinels (`VA_REDIS_SENTINELS`); the primary is SIGKILLed while a reply streams.

Invariants protected: the service moves to another server (the new primary) by itself; the turn
in flight ends (its reply, or `turn_failed`), never hangs; the next turn, sent at the kill, is
answered within 5 s of a NATS server's loss (15 s of the primary's: the sentinels take 1 s to
call it down here, then elect and promote); the history holds every turn before, with nothing
lost or doubled. Measured with a steady turn rate in `bench/run.sh failover`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.paths import LOG_DIR
from harness.servers import (
    NatsCluster,
    RedisSentinelGroup,
    start_nats_cluster,
    start_redis_sentinel_group,
)
from harness.services import ServiceProcs, Stack, start_stack
from harness.voice_client import VoiceClient
from tests.test_voice_e2e import history, new_agent

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

PLAIN = {
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 40},
}
ANSWERED_WITHIN_S = 5.0
ANSWERED_AFTER_FAILOVER_S = 15.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    c = start_nats_cluster(log_dir=LOG_DIR, name="failover")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelGroup]:
    group = start_redis_sentinel_group(tmp_path_factory.mktemp("sentinel"), LOG_DIR)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def stack(cluster: NatsCluster, sentinels: RedisSentinelGroup) -> Iterator[Stack]:
    procs = ServiceProcs(cluster.url, sentinels.nodes[0].url, prefix="failover")
    env = {
        "gateway": {"VA_TURN_STALL_TIMEOUT_S": "8"},
        "session": {"VA_REDIS_SENTINELS": sentinels.sentinel_list},
    }
    try:
        yield start_stack(procs, env=env)
    finally:
        procs.stop_all()


async def _conversation(stack: Stack) -> VoiceClient:
    client = VoiceClient(stack.base_url)
    await client.create_session(await new_agent(stack.base_url, PLAIN))
    await client.connect_events()
    first = await _text_turn(client, "What is the capital of Italy?", 60)
    assert first["type"] == "reply.done" and first["text"], first
    return client


async def _reply_streaming(client: VoiceClient, text: str) -> str:
    """Send `text`; its turn id once its reply streams."""
    t_sent = time.monotonic()
    await client.send({"type": "user.text", "text": text})
    _, final = await client.wait_event("transcript.final", 30, after=t_sent)
    await client.wait_event("reply.delta", 30, turn_id=final["turn_id"])
    return str(final["turn_id"])


async def _goes_on(
    client: VoiceClient, before: list[dict[str, Any]], in_flight: str, t_kill: float, within: float
) -> float:
    """The next turn, sent at the kill, is answered within `within` s; the one in flight ended;
    the history kept `before` and holds the new turn once. Returns the seconds it took."""
    nxt = await _text_turn(client, "What is the capital of Spain?", within + 5)
    took = time.monotonic() - t_kill
    assert nxt["type"] == "reply.done" and nxt["text"], nxt
    assert took <= within, f"answered {took:.1f} s after the kill"
    ended = await _ended(client, in_flight, 15)  # its reply (cut) or turn_failed
    assert ended["type"] in ("reply.done", "error"), ended
    after = await history(client)
    assert after[: len(before)] == before, "the history before the failure changed"
    texts = [m["text"] for m in after if m["role"] == "user"]
    assert texts.count("What is the capital of Spain?") == 1, texts
    assert after[-1]["role"] == "assistant" and after[-1]["text"] == nxt["text"]
    return took


async def _text_turn(client: VoiceClient, text: str, timeout: float) -> dict[str, Any]:
    """Send `text`; its reply.done (or the turn_failed error) once it ends."""
    after = time.monotonic()
    await client.send({"type": "user.text", "text": text})
    _, final = await client.wait_event("transcript.final", timeout, after=after)
    return await _ended(client, final["turn_id"], timeout)


async def _ended(client: VoiceClient, turn_id: str, timeout: float) -> dict[str, Any]:
    try:
        _, event = await client.turn_ended(turn_id, timeout)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None
    return event


@pytest.mark.parametrize("victim", ["gateway", "session"])
async def test_the_conversation_survives_the_loss_of_a_nats_server(
    stack: Stack, cluster: NatsCluster, victim: str
) -> None:
    client = await _conversation(stack)
    try:
        before = await history(client)
        assert len(before) == 2
        in_flight = await _reply_streaming(client, "Name three rivers in Europe.")
        server = cluster.serving(f"{victim}-")
        assert server is not None, f"no server lists a {victim} connection"
        cluster.kill(server)
        took = await _goes_on(client, before, in_flight, time.monotonic(), ANSWERED_WITHIN_S)
        moved = cluster.serving(f"{victim}-")
        assert moved is not None and moved != server
        print(f"{victim}'s nats-server killed: next turn answered after {took:.2f} s")
    finally:
        await client.close()


async def test_the_conversation_survives_the_loss_of_the_redis_primary(
    stack: Stack, sentinels: RedisSentinelGroup
) -> None:
    client = await _conversation(stack)
    try:
        before = await history(client)
        in_flight = await _reply_streaming(client, "Name three rivers in Europe.")
        old = sentinels.primary()
        old.kill()
        took = await _goes_on(
            client, before, in_flight, time.monotonic(), ANSWERED_AFTER_FAILOVER_S
        )
        assert sentinels.primary() is not old, "the sentinels promoted no replica"
        print(f"redis primary killed: next turn answered after {took:.2f} s")
    finally:
        await client.close()
