"""Two replicas of each stage as separate processes.

Invariants protected: turns spread over the replicas with no configuration (queue-group claims);
a replica stopped with SIGTERM stops taking work, finishes the turn it holds (the reply is
complete, not cut), exits cleanly, and the next turns go to the other replica.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from harness.services import start_stack
from tests.test_faults import Claims
from tests.test_voice_e2e import PLAIN, STORYTELLER, clip, voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(procs_module, replicas={"asr": 2, "llm": 2, "tts": 2, "session": 2})


async def test_turns_spread_over_the_replicas(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, PLAIN)
    claims = Claims()
    await claims.start(nats_url, client.session_id)
    try:
        pcm, rate = clip("What color is the sky?")
        for _ in range(10):
            mark = time.monotonic()
            client.speaker.play(pcm, rate)
            _, final = await client.wait_event("transcript.final", 30, after=mark)
            await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
    finally:
        await claims.close()
        await client.close()
    used: dict[str, set[str]] = defaultdict(set)
    for item in claims.items:
        used[item["kind"]].add(item["worker_id"])
    print({k: len(v) for k, v in used.items()})
    for kind in ("asr", "session", "llm", "tts"):
        assert len(used[kind]) == 2, f"{kind}: all turns went to {used[kind]}"


async def test_sigterm_drains_a_replica_and_its_turn_completes(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, STORYTELLER)
    claims = Claims()
    await claims.start(nats_url, client.session_id)
    try:
        mark = time.monotonic()
        await client.send({"type": "user.text", "text": "Tell me a story about a brave knight."})
        llm = await claims.wait("llm")
        tts = await claims.wait("tts")
        await client.wait_event("reply.delta", 60, turn_id=llm["turn_id"])
        stopping = [stack.replica(llm["worker_id"]), stack.replica(tts["worker_id"])]
        for sp in stopping:
            sp.kill(signal.SIGTERM)
        _, done = await client.wait_event("reply.done", 120, turn_id=llm["turn_id"])
        assert not done["interrupted"] and done["spoken_text"] == done["text"]
        assert len(done["text"].split()) > 20, "the reply was cut, not finished"
        assert client.first_audible_after(mark) is not None
        for sp in stopping:
            assert sp.wait(30) == 0, sp.log_tail()

        claims.items.clear()
        await client.send({"type": "user.text", "text": "Tell me a story about a dragon."})
        llm2 = await claims.wait("llm")
        tts2 = await claims.wait("tts")
        assert llm2["worker_id"] != llm["worker_id"] and tts2["worker_id"] != tts["worker_id"]
        _, done2 = await client.wait_event("reply.done", 120, turn_id=llm2["turn_id"])
        assert done2["text"]
    finally:
        await claims.close()
        await client.close()
