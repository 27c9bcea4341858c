"""The public HTTP and WebSocket interface, and bad input at every door.

Invariants protected: every bad input gets a clear error (an HTTP status with a code, or an
`error` event) and loses nothing; a text turn is answered and written to history; ending a
session revokes its tokens; no service dies on a malformed bus message.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import nats
import pytest
import redis.asyncio as aioredis
import websockets

from harness.services import start_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_KEY = "test-key-123"
AGENT = {
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 40},
}


@pytest.fixture(scope="module")
def stack(procs_module, redis_url):  # type: ignore[no-untyped-def]
    s = start_stack(
        procs_module, replicas={"asr": 0, "tts": 0}, env={"gateway": {"VA_API_KEYS": API_KEY}}
    )
    return s


@pytest.fixture
async def http(stack):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        yield c


async def new_session(http: httpx.AsyncClient, agent_id: str | None = None) -> dict:  # type: ignore[type-arg]
    r = await http.post("/v1/sessions", json={"agent_id": agent_id} if agent_id else {})
    assert r.status_code == 200, r.text
    return dict(r.json())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ws_url(base: str, sid: str, token: str) -> str:
    return f"{base.replace('http', 'ws', 1)}/v1/sessions/{sid}/events?token={token}"


async def next_event(ws, etype: str, timeout: float = 60.0) -> dict:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + timeout
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if ev["type"] == etype:
            return dict(ev)


# -- agents -----------------------------------------------------------------------------------
async def test_agents_need_the_api_key_and_valid_config(http) -> None:  # type: ignore[no-untyped-def]
    r = await http.post("/v1/agents", json=AGENT)
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = await http.post("/v1/agents", json=AGENT, headers={"x-api-key": "wrong"})
    assert r.status_code == 401

    bad = {
        "system_prompt": "",
        "end_of_turn_silence_ms": 5,
        "llm": {"temperature": 9},
        "hot_words": ["Zorvex", "  "],
        "unknown": 1,
    }
    r = await http.post("/v1/agents", json=bad, headers={"x-api-key": API_KEY})
    assert r.status_code == 422
    fields = {tuple(e["loc"][1:]) for e in r.json()["detail"]}
    assert {
        ("system_prompt",),
        ("end_of_turn_silence_ms",),
        ("llm", "temperature"),
        ("hot_words", 1),
        ("unknown",),
    } <= fields
    r = await http.post(
        "/v1/agents",
        json={"hot_words": ["a long product name"] * 40},
        headers={"x-api-key": API_KEY},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][1:] == ["hot_words"], r.text
    for turn_detection in [
        {"type": "semantic_vad"},
        {"type": "semantic", "eagerness": "eager"},
        {"type": "fixed", "eagerness": "high"},
        "fixed",
    ]:
        r = await http.post(
            "/v1/agents",
            json={"turn_detection": turn_detection},
            headers={"x-api-key": API_KEY},
        )
        assert r.status_code == 422, (turn_detection, r.text)
        assert r.json()["detail"][0]["loc"][1] == "turn_detection", r.text
    r = await http.post(
        "/v1/agents",
        json={"turn_detection": {"type": "semantic", "eagerness": "low"}},
        headers={"x-api-key": API_KEY},
    )
    assert r.status_code == 200, r.text

    r = await http.post("/v1/agents", json=AGENT, headers={"x-api-key": API_KEY})
    assert r.status_code == 200
    agent_id = r.json()["agent_id"]
    r = await http.get(f"/v1/agents/{agent_id}", headers={"x-api-key": API_KEY})
    assert r.status_code == 200 and r.json()["config"]["llm"]["max_tokens"] == 40
    r = await http.get("/v1/agents/nope", headers={"x-api-key": API_KEY})
    assert r.status_code == 404 and r.json()["code"] == "agent_not_found"
    r = await http.post("/v1/sessions", json={"agent_id": "nope"})
    assert r.status_code == 404


# -- sessions and tokens ------------------------------------------------------------------------
async def test_tokens_are_scoped_and_ending_revokes_them(http, stack, redis_url) -> None:  # type: ignore[no-untyped-def]
    a = await new_session(http)
    b = await new_session(http)
    assert a["expires_at"] > time.time() + 3000

    r = await http.get(f"/v1/sessions/{a['session_id']}/messages", headers=bearer(a["token"]))
    assert r.status_code == 200 and r.json() == []
    r = await http.get(f"/v1/sessions/{a['session_id']}/messages")
    assert r.status_code == 401 and r.json()["code"] == "missing_token"
    r = await http.get(f"/v1/sessions/{a['session_id']}/messages", headers=bearer(b["token"]))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await http.get(f"/v1/sessions/{a['session_id']}/messages", headers=bearer("garbage"))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await http.get("/v1/sessions/nosuchsession/messages", headers=bearer(a["token"]))
    assert r.status_code in (403, 404)

    # An expired token (signed with the real key) is refused as expired.
    client = aioredis.from_url(redis_url, decode_responses=True)
    secret = await client.get("va:secret")
    await client.aclose()
    expired = jwt.encode(
        {"sid": a["session_id"], "exp": int(time.time()) - 5}, secret, algorithm="HS256"
    )
    r = await http.get(f"/v1/sessions/{a['session_id']}/messages", headers=bearer(expired))
    assert r.status_code == 401 and r.json()["code"] == "token_expired"

    # Resume gives a fresh token; another session's token cannot resume it.
    r = await http.post(
        "/v1/sessions", json={"session_id": a["session_id"]}, headers=bearer(b["token"])
    )
    assert r.status_code == 403
    r = await http.post(
        "/v1/sessions", json={"session_id": a["session_id"]}, headers=bearer(a["token"])
    )
    assert r.status_code == 200 and r.json()["session_id"] == a["session_id"]
    fresh = r.json()["token"]

    # Ending the session revokes every token it was given.
    r = await http.delete(f"/v1/sessions/{a['session_id']}", headers=bearer(b["token"]))
    assert r.status_code == 403
    r = await http.delete(f"/v1/sessions/{a['session_id']}", headers=bearer(fresh))
    assert r.status_code == 200
    for token in (a["token"], fresh):
        r = await http.get(f"/v1/sessions/{a['session_id']}/messages", headers=bearer(token))
        assert r.status_code == 410 and r.json()["code"] == "session_ended"
    async with websockets.connect(ws_url(stack.base_url, a["session_id"], fresh)) as ws:
        ev = json.loads(await ws.recv())
        assert ev["type"] == "error" and ev["code"] == "session_ended"
    # The other session is untouched.
    r = await http.get(f"/v1/sessions/{b['session_id']}/messages", headers=bearer(b["token"]))
    assert r.status_code == 200


async def test_bad_webrtc_offers_are_refused(http) -> None:  # type: ignore[no-untyped-def]
    s = await new_session(http)
    url = f"/v1/sessions/{s['session_id']}/webrtc"
    r = await http.post(
        url, json={"sdp": "v=0\r\nthis is not sdp", "type": "offer"}, headers=bearer(s["token"])
    )
    assert r.status_code == 400 and r.json()["code"] == "bad_sdp"
    r = await http.post(url, json={"sdp": "v=0", "type": "answer"}, headers=bearer(s["token"]))
    assert r.status_code == 400
    r = await http.post(
        url, json={"sdp": "x" * 50_000, "type": "offer"}, headers=bearer(s["token"])
    )
    assert r.status_code == 413
    r = await http.post(url, json={"type": "offer"}, headers=bearer(s["token"]))
    assert r.status_code == 422
    r = await http.post(url, json={"sdp": "v=0", "type": "offer"})
    assert r.status_code == 401


# -- the event socket ---------------------------------------------------------------------------
async def test_text_turn_and_bad_socket_messages(http, stack) -> None:  # type: ignore[no-untyped-def]
    r = await http.post("/v1/agents", json=AGENT, headers={"x-api-key": API_KEY})
    s = await new_session(http, r.json()["agent_id"])
    async with websockets.connect(ws_url(stack.base_url, s["session_id"], s["token"])) as ws:
        for raw, code in [
            ("{not json", "invalid_json"),
            (json.dumps({"type": "user.text", "text": ""}), "bad_request"),
            (json.dumps({"type": "user.text", "text": "   "}), "bad_request"),
            (json.dumps({"type": "user.text", "text": "x" * 4001}), "text_too_long"),
            (json.dumps({"type": "dance"}), "bad_request"),
            ("x" * 20_000, "message_too_large"),
        ]:
            await ws.send(raw)
            ev = await next_event(ws, "error", 10)
            assert ev["code"] == code, (raw[:40], ev)
            assert ev["message"]

        await ws.send(json.dumps({"type": "interrupt"}))  # nothing in flight: a no-op
        await ws.send(json.dumps({"type": "user.text", "text": "What color is the sky?"}))
        final = await next_event(ws, "transcript.final", 10)
        assert final["source"] == "text" and final["text"] == "What color is the sky?"
        state = await next_event(ws, "agent.state", 10)
        assert state["state"] == "thinking"
        delta = await next_event(ws, "reply.delta", 60)
        assert delta["turn_id"] == final["turn_id"] and delta["text"]
        done = await next_event(ws, "reply.done", 60)
        assert done["interrupted"] is False and done["spoken_text"] == done["text"]
        metrics = await next_event(ws, "turn.metrics", 10)
        assert metrics["first_delta_ms"] > 0 and metrics["source"] == "text"

    r = await http.get(f"/v1/sessions/{s['session_id']}/messages", headers=bearer(s["token"]))
    msgs = r.json()
    assert [(m["role"], m["turn_id"]) for m in msgs] == [
        ("user", final["turn_id"]),
        ("assistant", final["turn_id"]),
    ]
    assert msgs[1]["text"] == done["text"]


async def test_bad_token_on_the_socket(stack, http) -> None:  # type: ignore[no-untyped-def]
    s = await new_session(http)
    async with websockets.connect(ws_url(stack.base_url, s["session_id"], "nope")) as ws:
        ev = json.loads(await ws.recv())
        assert ev["type"] == "error" and ev["code"] == "invalid_token"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_text_turn_interrupted_keeps_what_was_shown(http, stack) -> None:  # type: ignore[no-untyped-def]
    long_agent = {
        "system_prompt": "You are a storyteller. Always answer with a long story.",
        "llm": {"temperature": 0.0, "max_tokens": 300},
    }
    r = await http.post("/v1/agents", json=long_agent, headers={"x-api-key": API_KEY})
    s = await new_session(http, r.json()["agent_id"])
    async with websockets.connect(ws_url(stack.base_url, s["session_id"], s["token"])) as ws:
        await ws.send(json.dumps({"type": "user.text", "text": "Tell me about a knight."}))
        await next_event(ws, "reply.delta", 60)
        await ws.send(json.dumps({"type": "interrupt"}))
        done = await next_event(ws, "reply.done", 10)
        assert done["interrupted"] is True
        state = await next_event(ws, "agent.state", 10)
        assert state["state"] == "listening"
    r = await http.get(f"/v1/sessions/{s['session_id']}/messages", headers=bearer(s["token"]))
    assistant = r.json()[1]
    assert assistant["interrupted"] is True and assistant["text"] == done["spoken_text"]


async def test_a_turn_in_a_session_ended_unseen_fails_and_writes_nothing(  # type: ignore[no-untyped-def]
    http, stack, redis_url
) -> None:
    """A session replica keeps the active sessions it has seen, to accept a turn without a Redis
    round trip. A session ended without that replica hearing of it (here ended in Redis by hand,
    as by a replica whose broadcast was lost) still gets no reply and no history."""
    s = await new_session(http)
    sid = s["session_id"]
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        async with websockets.connect(ws_url(stack.base_url, sid, s["token"])) as ws:
            await ws.send(json.dumps({"type": "user.text", "text": "What color is the sky?"}))
            await next_event(ws, "reply.done", 60)
            await client.hset(f"va:session:{sid}", "ended", "1")
            await ws.send(json.dumps({"type": "user.text", "text": "And the grass?"}))
            err = await next_event(ws, "error", 30)
            assert err["code"] == "turn_failed" and "ended" in err["message"], err
            state = await next_event(ws, "agent.state", 10)
            assert state["state"] == "listening"
        assert await client.llen(f"va:history:{sid}") == 2
        assert await client.get(f"va:inflight:{sid}") is None
    finally:
        await client.aclose()


# -- the bus ------------------------------------------------------------------------------------
async def test_services_survive_malformed_bus_messages(stack, nats_url, http) -> None:  # type: ignore[no-untyped-def]
    nc = await nats.connect(nats_url)
    try:
        for subject in (
            "va.session.turn",
            "va.llm.claim",
            "va.session.rpc.get_messages",
            "va.session.rpc.nope",
        ):
            for payload in (
                b"",
                b"\xff\xfe",
                b"{}",
                b'{"type":"turn.submit","v":1}',
                json.dumps({"session_id": "a.b.>", "turn_id": "x"}).encode(),
            ):
                resp = await nc.request(subject, payload, timeout=5)
                body = json.loads(resp.data)
                assert body["type"] == "rpc.error" and body["message"], (subject, payload)
        for subject in ("va.ctl.interrupt.abc", "va.playback.abc", "va.events.abc"):
            await nc.publish(subject, b"\x00garbage")
        await nc.flush()
    finally:
        await nc.close()
    for kinds in stack.by_kind.values():
        for sp in kinds:
            assert sp.alive() and sp.ready(), sp.log_tail()
    await new_session(http)  # still serving


async def test_history_survives_restarts_and_tokens_stay_out_of_logs(http, stack) -> None:  # type: ignore[no-untyped-def]
    r = await http.post("/v1/agents", json=AGENT, headers={"x-api-key": API_KEY})
    s = await new_session(http, r.json()["agent_id"])
    async with websockets.connect(ws_url(stack.base_url, s["session_id"], s["token"])) as ws:
        await ws.send(json.dumps({"type": "user.text", "text": "What color is the sky?"}))
        await next_event(ws, "reply.done", 60)
    before = (
        await http.get(f"/v1/sessions/{s['session_id']}/messages", headers=bearer(s["token"]))
    ).json()
    assert len(before) == 2

    # Restart every service (SIGKILL, then a new process).
    for kind in ("session", "llm", "gateway"):
        old = stack.by_kind[kind].pop()
        old.kill()
        old.wait(10)
        stack.start(
            kind,
            port=old.port if kind == "gateway" else None,
            env={"VA_API_KEYS": API_KEY} if kind == "gateway" else None,
        )
    after = (
        await http.get(f"/v1/sessions/{s['session_id']}/messages", headers=bearer(s["token"]))
    ).json()
    assert after == before
    async with websockets.connect(ws_url(stack.base_url, s["session_id"], s["token"])) as ws:
        await ws.send(json.dumps({"type": "user.text", "text": "And the grass?"}))
        await next_event(ws, "reply.done", 60)
    assert (
        len(
            (
                await http.get(
                    f"/v1/sessions/{s['session_id']}/messages", headers=bearer(s["token"])
                )
            ).json()
        )
        == 4
    )

    for kinds in stack.by_kind.values():
        for sp in kinds:
            text = sp.log.read_text(errors="replace")
            assert s["token"] not in text, f"token in {sp.log}"
            assert s["token"].split(".")[2] not in text
