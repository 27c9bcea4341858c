"""Rate limits at the gateway (the `limits` library, moving windows, kept in memory per
replica): event-socket messages per session, sessions created per client address, and
microphone audio per session (milliseconds of audio per second of wall time)."""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .settings import GatewaySettings


class Limits:
    def __init__(self, settings: GatewaySettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._messages: RateLimitItem = parse(settings.ws_message_rate)
        self._sessions: RateLimitItem = parse(settings.session_create_rate)
        self._audio: RateLimitItem = parse(settings.audio_ms_rate)

    async def message(self, session_id: str) -> bool:
        return await self._limiter.hit(self._messages, "ws", session_id)

    async def new_session(self, client: str) -> bool:
        return await self._limiter.hit(self._sessions, "sessions", client)

    async def audio(self, session_id: str, ms: int) -> bool:
        return await self._limiter.hit(self._audio, "audio", session_id, cost=max(1, ms))
