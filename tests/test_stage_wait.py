"""A stage with no replica up holds the turn instead of failing it.

A turn sent while no llm (or tts) replica runs, as during a warm-up, a rolling update or a scale
from zero, waits for one up to the session's `stage_wait_s`, the client told `turn.waiting
{stage}` meanwhile: the replica started after the turn was sent answers it; one that never
comes fails the turn cleanly (`turn_failed`) at the deadline, and the next turn, once a replica
is up, is answered. Real services, one replica each, started and stopped by the tests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from harness.services import ServiceProc, ServiceProcs
from harness.voice_client import VoiceClient
from tests.test_voice_e2e import PLAIN, new_agent

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 15.0  # the session's stage_wait_s here: longer than an llm's start with SmolLM2


@pytest.fixture(scope="module")
def stack(procs_module: ServiceProcs) -> dict[str, ServiceProc]:
    """A session and a gateway; the llm and tts are the tests' to start."""
    return {
        "session": procs_module.start("session", env={"VA_STAGE_WAIT_S": str(WAIT_S)}),
        "gateway": procs_module.start("gateway"),
    }


async def client_of(stack: dict[str, ServiceProc], media: bool = False) -> VoiceClient:
    client = VoiceClient(stack["gateway"].url)
    await client.create_session(await new_agent(client.base_url, PLAIN))
    await client.connect_events()
    if media:
        await client.connect_media()
    return client


async def ask(client: VoiceClient, text: str) -> float:
    t0 = time.monotonic()
    await client.send({"type": "user.text", "text": text})
    return t0


async def turn_id_of(client: VoiceClient, t0: float) -> str:
    _, final = await client.wait_event("transcript.final", 10, after=t0, source="text")
    return str(final["turn_id"])


async def answered(client: VoiceClient, turn_id: str, timeout: float) -> dict[str, Any]:
    _, done = await client.wait_event("reply.done", timeout, turn_id=turn_id)
    assert done["text"].strip() and not done["interrupted"], done
    return done


async def test_the_llm_replica_started_after_the_turn_answers_it(
    stack: dict[str, ServiceProc], procs_module: ServiceProcs
) -> None:
    client = await client_of(stack)
    try:
        t0 = await ask(client, "What is the capital of France?")
        turn_id = await turn_id_of(client, t0)
        await client.wait_event("agent.state", 5, after=t0, state="thinking", turn_id=turn_id)
        _, waiting = await client.wait_event("turn.waiting", 5, turn_id=turn_id)
        assert waiting["stage"] == "llm" and 0 < waiting["deadline_s"] <= WAIT_S, waiting
        llm = await procs_module.astart("llm")
        await answered(client, turn_id, WAIT_S)
        assert not [e for _, e in client.events if e.get("type") == "error"], client.events
    finally:
        await client.close()
    llm.stop()


async def test_a_turn_no_llm_comes_for_fails_at_the_deadline_and_the_next_is_answered(
    stack: dict[str, ServiceProc], procs_module: ServiceProcs
) -> None:
    client = await client_of(stack)
    try:
        t0 = await ask(client, "How many legs does a spider have?")
        turn_id = await turn_id_of(client, t0)
        t_failed, error = await client.wait_event("error", WAIT_S + 10, turn_id=turn_id)
        assert error["code"] == "turn_failed", error
        waited = t_failed - t0
        assert WAIT_S - 0.5 <= waited <= WAIT_S + 5, f"failed after {waited:.1f} s"
        waits = [e for _, e in client.events if e.get("type") == "turn.waiting"]
        assert len(waits) >= 2 and all(w["stage"] == "llm" for w in waits), waits

        llm = await procs_module.astart("llm")
        t1 = await ask(client, "What colour is the sky?")
        await answered(client, await turn_id_of(client, t1), 30)
    finally:
        await client.close()
    llm.stop()


async def test_the_tts_replica_started_after_a_voice_turn_speaks_its_reply(
    stack: dict[str, ServiceProc], procs_module: ServiceProcs
) -> None:
    llm = await procs_module.astart("llm")
    client = await client_of(stack, media=True)
    try:
        await asyncio.sleep(0.3)
        t0 = await ask(client, "What is the capital of France?")
        turn_id = await turn_id_of(client, t0)
        _, waiting = await client.wait_event("turn.waiting", 5, turn_id=turn_id)
        assert waiting["stage"] == "tts", waiting
        tts = await procs_module.astart("tts")
        await answered(client, turn_id, WAIT_S + 10)
        assert client.first_audible_after(t0) is not None, "the reply was not spoken"
        assert not [e for _, e in client.events if e.get("type") == "error"], client.events
    finally:
        await client.close()
    tts.stop()
    llm.stop()
