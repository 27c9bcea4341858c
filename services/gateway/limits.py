"""Rate limits at the gateway (the `limits` library, kept in memory per replica): event-socket
messages per session and sessions created per client address (moving windows: exact), and
microphone audio per session, in milliseconds of audio per second of wall time.

The audio limit is checked on every microphone frame (50 a second per talking session), so it
uses the sliding window counter: two counters per session, about 6 us a check. A moving window
keeps one entry per unit of cost, here per millisecond of audio (thousands per session), and its
in-memory storage sweeps them from a task that hops to a thread for every key: about 85 us a
check, and 5 % of the gateway's event loop at 20 talking sessions.
"""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from .settings import GatewaySettings


class Limits:
    def __init__(self, settings: GatewaySettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._audio_limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._messages: RateLimitItem = parse(settings.ws_message_rate)
        self._sessions: RateLimitItem = parse(settings.session_create_rate)
        self._audio: RateLimitItem = parse(settings.audio_ms_rate)

    async def message(self, session_id: str) -> bool:
        return await self._limiter.hit(self._messages, "ws", session_id)

    async def new_session(self, client: str) -> bool:
        return await self._limiter.hit(self._sessions, "sessions", client)

    async def audio(self, session_id: str, ms: int) -> bool:
        return await self._audio_limiter.hit(self._audio, "audio", session_id, cost=max(1, ms))
