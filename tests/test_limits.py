"""The gateway's rate limits and allowed origins, from settings, against a gateway with small
limits (the other limits, text length, SDP size, socket message size, are in test_api.py).

Invariants protected: past a limit the client gets a clear, typed error (HTTP 429 with a code,
or an `error` event) and keeps what it had: the socket stays open and works again once the
window has passed, other clients are not affected (a client behind a proxy is told apart by
X-Forwarded-For from the local proxy); only the configured origins get CORS headers.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from harness.services import start_stack
from services.gateway.limits import Limits
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

ORIGIN = "https://app.example.com"
LIMITS = {
    "VA_SESSION_CREATE_RATE": "3/minute",
    "VA_WS_MESSAGE_RATE": "5/second",
    "VA_CORS_ORIGINS": ORIGIN,
}


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(
        procs_module, replicas={"asr": 0, "tts": 0, "llm": 0}, env={"gateway": LIMITS}
    )


async def test_sessions_per_client_address(stack) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        for _ in range(3):
            r = await http.post("/v1/sessions", json={})
            assert r.status_code == 200, r.text
        r = await http.post("/v1/sessions", json={})
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "rate_limited" and "sessions" in r.json()["message"]
        # Another client behind the same local proxy (nginx in front of several gateways).
        r = await http.post("/v1/sessions", json={}, headers={"x-forwarded-for": "198.51.100.7"})
        assert r.status_code == 200, r.text


async def test_socket_messages_per_second(stack) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        r = await http.post("/v1/sessions", json={}, headers={"x-forwarded-for": "198.51.100.8"})
        s = r.json()
    url = stack.base_url.replace("http", "ws", 1)
    url += f"/v1/sessions/{s['session_id']}/events?token={s['token']}"
    async with websockets.connect(url) as ws:
        for _ in range(12):  # nothing in flight: each is a no-op unless refused
            await ws.send(json.dumps({"type": "interrupt"}))
        codes = []
        while len(codes) < 7:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ev["type"] == "error":
                assert ev["message"]
                codes.append(ev["code"])
        assert codes == ["rate_limited"] * 7, codes
        await asyncio.sleep(1.1)  # the window has passed: the socket works again
        await ws.send(json.dumps({"type": "dance"}))
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ev["type"] == "error":
                assert ev["code"] == "bad_request", ev
                break


async def test_only_configured_origins_get_cors_headers(stack) -> None:  # type: ignore[no-untyped-def]
    preflight = {"access-control-request-method": "POST"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        r = await http.options("/v1/sessions", headers={"origin": ORIGIN, **preflight})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        r = await http.options(
            "/v1/sessions", headers={"origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in r.headers
        assert r.status_code == 400


async def test_microphone_audio_faster_than_real_time_is_dropped() -> None:
    """The gateway drops microphone audio beyond `VA_AUDIO_MS_RATE` per session (a client
    sending faster than real time); audio of other sessions is not affected."""
    limits = Limits(GatewaySettings(audio_ms_rate="100/second"))
    allowed = [await limits.audio("a", 20) for _ in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    assert await limits.audio("b", 20)
