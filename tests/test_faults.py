"""A replica dies (SIGKILL) while it holds a turn, with a second replica running: asr, llm,
tts, session, and the gateway the client is connected to (the client then resumes its session
through the other gateway). The killed replica is started again.

Invariant protected: a turn in flight is never silently lost. The client gets the turn's reply
or an `error {code: turn_failed}` for it, the next turn is answered (by the survivor), and
nothing already in the history is lost. (A replica killed during a tool call:
tests/test_tool_faults.py.)
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import nats
import pytest

from harness.audio import active_bounds_ms, read_wav, speak_wav, word_overlap
from harness.services import start_stack
from harness.voice_client import VoiceClient
from tests.test_restarts import history, reconnect
from tests.test_voice_e2e import PLAIN, STORYTELLER, voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

STALL = {"VA_LLM_STALL_TIMEOUT_S": "5", "VA_TTS_STALL_TIMEOUT_S": "5"}
# A turn whose session replica died: the gateway gives up on it after this long without news.
GATEWAY = {"VA_TURN_STALL_TIMEOUT_S": "8"}


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(
        procs_module,
        replicas={"asr": 2, "llm": 2, "tts": 2, "session": 2, "gateway": 2},
        env={"session": STALL, "gateway": GATEWAY},
    )


class Claims:
    """Watches `va.work.claimed.{sid}`: which replica took which work."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.event = asyncio.Event()
        self.nc: Any = None

    async def start(self, nats_url: str, session_id: str) -> None:
        self.nc = await nats.connect(nats_url)

        async def cb(msg: Any) -> None:
            self.items.append(json.loads(msg.data))
            self.event.set()

        await self.nc.subscribe(f"va.work.claimed.{session_id}", cb=cb)
        # The turn is sent on another connection (the client's WebSocket, through the gateway):
        # the server must hold the subscription before it, or a fast claim goes unseen.
        await self.nc.flush()

    async def wait(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                for item in self.items:
                    if item["kind"] == kind:
                        return item
                self.event.clear()
                await self.event.wait()

        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def clip(text: str) -> tuple[Any, int]:
    pcm, rate = read_wav(speak_wav(text))
    start, end = active_bounds_ms(pcm, rate)
    return pcm[int(start * rate / 1000) : int(end * rate / 1000)], rate


async def outcome(
    client: VoiceClient, turn_id: str | None, after: float, timeout: float = 90
) -> str:
    """'done' when the turn's reply.done came, 'failed' when its turn_failed error came."""
    loop_end = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < loop_end:
        for t, ev in client.events:
            if t < after or (turn_id and ev.get("turn_id") not in (turn_id, None)):
                continue
            if ev["type"] == "reply.done":
                return "done"
            if ev["type"] == "error" and ev.get("code") == "turn_failed":
                return "failed"
        await asyncio.sleep(0.1)
    raise TimeoutError(f"turn {turn_id}: neither reply.done nor turn_failed")


async def next_turn_is_answered(client: VoiceClient) -> None:
    t0 = asyncio.get_running_loop().time()
    import time

    mark = time.monotonic()
    await client.send({"type": "user.text", "text": "What color is the sky?"})
    _, final = await client.wait_event("transcript.final", 10, after=mark)
    _, done = await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
    assert done["text"], done
    assert asyncio.get_running_loop().time() - t0 < 90


async def test_asr_replica_killed_mid_utterance(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    import time

    client = await voice_client(stack.base_url, PLAIN)
    claims = Claims()
    await claims.start(nats_url, client.session_id)
    try:
        mark = time.monotonic()
        pcm, rate = clip("What is the capital of France?")
        client.speaker.play(pcm, rate)
        claim = await claims.wait("asr")
        stack.replica(claim["worker_id"]).kill(signal.SIGKILL)
        result = await outcome(client, claim["turn_id"], mark)
        print(f"asr killed mid-utterance: turn {result}")
        if result == "done":
            _, final = await client.wait_event("transcript.final", 1, turn_id=claim["turn_id"])
            assert "capital" in final["text"].lower()
        await next_turn_is_answered(client)
        # And a spoken turn works again, on the surviving replica.
        mark = time.monotonic()
        client.speaker.play(pcm, rate)
        _, final = await client.wait_event("transcript.final", 30, after=mark)
        # the question heard (Whisper base hears "capital of friends" on some CPUs)
        assert word_overlap("What is the capital of France?", final["text"]) >= 0.8, final
    finally:
        await claims.close()
        await client.close()


async def test_llm_replica_killed_mid_reply(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    import time

    client = await voice_client(stack.base_url, STORYTELLER)
    claims = Claims()
    await claims.start(nats_url, client.session_id)
    try:
        mark = time.monotonic()
        await client.send({"type": "user.text", "text": "Tell me a story about a dragon."})
        claim = await claims.wait("llm")
        await client.wait_event("reply.delta", 60, turn_id=claim["turn_id"])
        stack.replica(claim["worker_id"]).kill(signal.SIGKILL)
        result = await outcome(client, claim["turn_id"], mark)
        print(f"llm killed mid-reply: turn {result}")
        await next_turn_is_answered(client)
    finally:
        await claims.close()
        await client.close()


async def test_tts_replica_killed_mid_reply(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    import time

    client = await voice_client(stack.base_url, STORYTELLER)
    claims = Claims()
    await claims.start(nats_url, client.session_id)
    try:
        mark = time.monotonic()
        await client.send({"type": "user.text", "text": "Tell me a story about a wizard."})
        claim = await claims.wait("tts")
        await client.wait_event("agent.state", 60, state="speaking", turn_id=claim["turn_id"])
        stack.replica(claim["worker_id"]).kill(signal.SIGKILL)
        result = await outcome(client, claim["turn_id"], mark)
        print(f"tts killed mid-reply: turn {result}")
        await next_turn_is_answered(client)
        t_heard = time.monotonic()
        await client.send({"type": "user.text", "text": "Say hello."})
        _, final = await client.wait_event("transcript.final", 10, after=t_heard)
        await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
        assert client.first_audible_after(t_heard) is not None, "no voice after the tts died"
    finally:
        await claims.close()
        await client.close()


async def test_session_replica_killed_mid_reply(stack, nats_url) -> None:  # type: ignore[no-untyped-def]
    import time

    client = await voice_client(stack.base_url, STORYTELLER)
    claims = Claims()
    try:
        await next_turn_is_answered(client)
        kept = await history(client)
        # Watch claims from here: the first turn's session claim is not the one to kill.
        await claims.start(nats_url, client.session_id)
        mark = time.monotonic()
        await client.send({"type": "user.text", "text": "Tell me a story about a unicorn."})
        claim = await claims.wait("session")
        await client.wait_event("reply.delta", 60, turn_id=claim["turn_id"])
        killed = stack.replica(claim["worker_id"])
        killed.kill(signal.SIGKILL)
        killed.wait(10)
        result = await outcome(client, claim["turn_id"], mark, timeout=60)
        print(f"session killed mid-reply: turn {result}")
        await next_turn_is_answered(client)  # by the surviving session replica
        stack.by_kind["session"].remove(killed)
        stack.start("session", env=STALL)
        assert (await history(client))[: len(kept)] == kept
    finally:
        await claims.close()
        await client.close()


async def test_gateway_replica_killed_mid_reply(stack) -> None:  # type: ignore[no-untyped-def]
    """The last test here: the client's gateway dies; it resumes through the other one."""
    import time

    first, other = stack.by_kind["gateway"][:2]
    client = await voice_client(first.url, STORYTELLER)
    try:
        await next_turn_is_answered(client)
        kept = await history(client)
        mark = time.monotonic()
        await client.send({"type": "user.text", "text": "Tell me a story about a castle."})
        await client.wait_event("reply.delta", 60, after=mark)
        first.kill(signal.SIGKILL)
        first.wait(10)
        client = await reconnect(other.url, client)  # the session and its token live on
        await next_turn_is_answered(client)
        now = await history(client)
        assert now[: len(kept)] == kept, "history lost with the gateway"
        stack.by_kind["gateway"].remove(first)
        stack.start("gateway", env=GATEWAY, port=first.port)
    finally:
        await client.close()
