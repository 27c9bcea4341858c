"""Restarts during a conversation: NATS, Redis (persistence on), and each service as the only
replica, SIGKILLed during a live turn and started again.

Invariants protected: the conversation continues after every restart; the turn in flight
completes or its client gets `turn_failed` for it; nothing already in the history is lost.
These tests start their own NATS and Redis (never the machine's shared ones).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.paths import LOG_DIR
from harness.servers import free_port, infra
from harness.services import KINDS, ServiceProcs, Stack
from harness.voice_client import VoiceClient
from tests.test_voice_e2e import STORYTELLER, clip, voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

FAST = {
    "session": {
        "VA_LLM_FIRST_TOKEN_TIMEOUT_S": "4",
        "VA_LLM_STALL_TIMEOUT_S": "4",
        "VA_TTS_STALL_TIMEOUT_S": "4",
    },
    "gateway": {"VA_TURN_STALL_TIMEOUT_S": "8"},
}


class Server:
    """A nats-server or redis-server that can be stopped and started again on its port."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder, self.port = kind, folder, free_port()
        self.proc: Any = None
        self.start()

    @property
    def url(self) -> str:
        return (
            f"nats://127.0.0.1:{self.port}"
            if self.kind == "nats"
            else f"redis://127.0.0.1:{self.port}/0"
        )

    def start(self) -> None:
        log = LOG_DIR / f"restarts-{self.kind}.log"
        if self.kind == "nats":
            self.proc = infra.start_nats("127.0.0.1", self.port, self.folder / "js", log)
            infra.wait_until(
                lambda: infra.nats_info(self.url) is not None, "nats", 30, self.proc, log
            )
        else:
            self.proc = infra.start_redis("127.0.0.1", self.port, self.folder, log, persistent=True)
            infra.wait_until(lambda: infra.redis_answers(self.url), "redis", 30, self.proc, log)

    def restart(self, kill: bool = False) -> None:
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(20)
        time.sleep(0.5)
        self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    nats_server = Server("nats", tmp_path_factory.mktemp("nats"))
    redis_server = Server("redis", tmp_path_factory.mktemp("redis"))
    yield nats_server, redis_server
    nats_server.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def stack(servers):  # type: ignore[no-untyped-def]
    nats_server, redis_server = servers
    procs = ServiceProcs(nats_server.url, redis_server.url, prefix="restarts")
    s = Stack(procs)
    try:
        for kind in KINDS:
            s.start(kind, env=FAST.get(kind))
        yield s
    finally:
        procs.stop_all()


async def history(client: VoiceClient) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=client.base_url, timeout=10) as c:
        r = await c.get(f"/v1/sessions/{client.session_id}/messages", headers=client.auth)
        assert r.status_code == 200, r.text
        return list(r.json())


async def turn(client: VoiceClient, text: str, timeout: float = 60) -> str:
    """Send text; return 'done' or 'failed' for that turn."""
    mark = time.monotonic()
    await client.send({"type": "user.text", "text": text})
    _, final = await client.wait_event("transcript.final", 15, after=mark)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, ev in client.events:
            if t >= mark and ev.get("turn_id") == final["turn_id"]:
                if ev["type"] == "reply.done":
                    return "done"
                if ev["type"] == "error" and ev["code"] == "turn_failed":
                    return "failed"
        await asyncio.sleep(0.1)
    raise TimeoutError(f"turn {final['turn_id']}: neither reply.done nor turn_failed")


async def wait_ready(stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(sp.ready() for procs in stack.by_kind.values() for sp in procs):
        assert time.monotonic() < deadline, "services did not become ready again"
        await asyncio.sleep(0.3)


async def reconnect(base_url: str, client: VoiceClient) -> VoiceClient:
    """The client's session again, through the gateway at `base_url` (its token resumes it)."""
    await client.close()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
        r = await c.post(
            "/v1/sessions", json={"session_id": client.session_id}, headers=client.auth
        )
        assert r.status_code == 200, r.text
        grant = r.json()
    again = VoiceClient(base_url, session_id=grant["session_id"], token=grant["token"])
    await again.connect_events()
    await again.connect_media()
    return again


async def test_nats_and_redis_restarts(stack, servers) -> None:  # type: ignore[no-untyped-def]
    nats_server, redis_server = servers
    client = await voice_client(stack.base_url, STORYTELLER)
    try:
        assert await turn(client, "Tell me a short story about a cat.") == "done"
        kept = await history(client)
        assert len(kept) == 2

        nats_server.restart()
        await wait_ready(stack)
        assert await turn(client, "And one about a dog.") == "done"

        redis_server.restart(kill=True)  # SIGKILL: the append-only file is what survives
        await wait_ready(stack)
        assert await turn(client, "And one about a bird.") == "done"
        now = await history(client)
        assert now[:2] == kept and len(now) == 6
    finally:
        await client.close()


async def outcome_of_turn(client: VoiceClient, mark: float, timeout: float = 60) -> str:
    """'reply.done' or 'turn_failed': how the turn in flight since `mark` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, ev in client.events:
            if t >= mark and ev["type"] == "reply.done":
                return "reply.done"
            if t >= mark and ev["type"] == "error" and ev["code"] == "turn_failed":
                return "turn_failed"
        await asyncio.sleep(0.1)
    raise AssertionError("the turn in flight was silently lost")


async def spoken_turn(client: VoiceClient, text: str, timeout: float = 60) -> str:
    """Speak `text`; the final transcript once its reply is done."""
    mark = time.monotonic()
    client.speaker.play(*clip(text))
    _, final = await client.wait_event("transcript.final", 30, after=mark)
    await client.wait_event("reply.done", timeout, turn_id=final["turn_id"])
    return str(final["text"])


@pytest.mark.parametrize("kind", ["asr", "llm", "tts", "session", "gateway"])
async def test_only_replica_killed_mid_turn_and_restarted(stack, kind) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, STORYTELLER)
    try:
        assert await turn(client, "Tell me a story about a fox.") == "done"
        kept = await history(client)

        mark = time.monotonic()
        if kind == "asr":  # killed while the user is still speaking: it holds the utterance
            client.speaker.play(*clip("Tell me a long story about a bear who lives in the woods."))
            await client.wait_event("transcript.partial", 30, after=mark)
        else:
            await client.send({"type": "user.text", "text": "Tell me a story about a bear."})
            await client.wait_event("reply.delta", 60, after=mark)
        old = stack.by_kind[kind].pop()
        old.kill(signal.SIGKILL)
        old.wait(10)
        stack.start(kind, env=FAST.get(kind), port=old.port if kind == "gateway" else None)
        if kind == "gateway":  # the client's connections died with it: it reconnects
            client = await reconnect(stack.base_url, client)
        else:
            print(f"{kind} killed mid-turn: {await outcome_of_turn(client, mark)}")

        await wait_ready(stack)
        assert await turn(client, "Tell me a story about an owl.") == "done"
        if kind == "asr":  # and the restarted replica hears the next question
            heard = await spoken_turn(client, "Tell me a story about a bear in the woods.")
            assert "bear" in heard.lower(), heard
        now = await history(client)
        assert now[: len(kept)] == kept  # nothing already in the history is lost
    finally:
        await client.close()
