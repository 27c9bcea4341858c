"""The gateway's settings are what it does: each limit it documents is the one it applies.

Invariants protected: a live session with no event socket and no media is closed after
`idle_session_s` (and one with a socket open is kept); typed text is limited by
`max_text_chars` alone, in both directions: a text the setting allows becomes a turn, whatever
its length, and one over it is answered `text_too_long`; a `max_text_chars` that could never be
reached (over the event socket's message size) is refused when the settings are read.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import pytest
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from services.common.messages import AgentConfig
from services.gateway.app import Hub, _serve_socket
from services.gateway.live import LiveSession
from services.gateway.settings import GatewaySettings
from tests.test_gateway_turns import LoudIsSpeech, gateway, until


class ScriptedSocket:
    """An event socket whose client sends `sent` and then goes away; it keeps what it was told."""

    def __init__(self, *sent: str) -> None:
        self.sent = list(sent)
        self.told: list[dict[str, Any]] = []

    async def receive_text(self) -> str:
        if not self.sent:
            raise WebSocketDisconnect(1000)
        return self.sent.pop(0)

    async def send_text(self, text: str) -> None:
        self.told.append(json.loads(text))


def user_text(text: str) -> str:
    return json.dumps({"type": "user.text", "text": text})


async def test_a_session_left_alone_is_closed_after_idle_session_s(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    cfg = GatewaySettings(idle_session_s=0.4)
    hub = Hub(cfg)
    hub.nc = nc

    def live(sid: str) -> LiveSession:
        session = LiveSession(nc, cfg, sid, AgentConfig(), hub.limits, vad=LoudIsSpeech())
        hub.live[sid] = session
        return session

    left, watched = live("left0001"), live("watched1")
    watched.sockets.add(object())  # type: ignore[arg-type]  # an event socket still open
    reaper = asyncio.create_task(hub.reap_idle())
    try:
        await until(lambda: "left0001" not in hub.live, timeout=3.0)
        assert left.closed and time.monotonic() - left.last_seen >= 0.4
        assert "watched1" in hub.live and not watched.closed
    finally:
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)
        watched.sockets.clear()
        await hub.drop("watched1")
        await nc.close()


@pytest.mark.parametrize(
    ("settings", "allowed", "refused"),
    [({}, 4000, 4001), ({"max_text_chars": 6000}, 6000, 6001)],
    ids=["default", "raised"],
)
async def test_typed_text_is_limited_by_max_text_chars_alone(
    nats_url: str, settings: dict[str, int], allowed: int, refused: int
) -> None:
    async with gateway(nats_url, "", vad=LoudIsSpeech(), **settings) as (live, fake):
        ws = ScriptedSocket(user_text("y" * refused), user_text("x" * allowed))
        with pytest.raises(WebSocketDisconnect):
            await _serve_socket(ws, live, live.cfg)  # type: ignore[arg-type]
        await until(lambda: fake.turns)
    assert [t.text for t in fake.turns] == ["x" * allowed]
    errors = [e for e in ws.told if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["text_too_long"]
    assert str(live.cfg.max_text_chars) in errors[0]["message"]


def test_a_text_limit_no_socket_message_can_hold_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_ws_message_bytes"):
        GatewaySettings(max_text_chars=20_000)
    raised = GatewaySettings(max_text_chars=20_000, max_ws_message_bytes=32_768)
    assert raised.max_text_chars == 20_000
    with pytest.raises(ValidationError):
        GatewaySettings(idle_session_s=0)
