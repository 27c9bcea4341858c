"""A turn's client events (`va.events.{sid}`): what the user is told about one turn.

A speculative turn's events wait here until the gateway confirms the end of turn, then leave in
order; a turn that is retracted (the user spoke on) or never accepted says nothing at all.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from services.common import bus, subjects
from services.common.messages import ErrorCode, ErrorEvent, Message


class Outbox:
    def __init__(self, nc: NATS, session_id: str, turn_id: str, *, held: bool) -> None:
        self.nc = nc
        self.sid = session_id
        self.tid = turn_id
        self.confirmed = not held
        self.silenced = False  # retracted or abandoned: nothing more is sent
        self._held: list[Message] = []

    async def emit(self, event: Message) -> None:
        if self.silenced:
            return
        if not self.confirmed:
            self._held.append(event)
            return
        await bus.publish(self.nc, subjects.events(self.sid), event)

    async def error(self, code: ErrorCode, message: str) -> None:
        """Tell the client what went wrong with this turn (an `error` event)."""
        await self.emit(ErrorEvent(code=code, message=message, turn_id=self.tid))

    async def release(self) -> None:
        """The turn is the user's (confirmed, or its gateway is gone): send what was held."""
        self.confirmed = True
        held, self._held = self._held, []
        for event in held:
            await self.emit(event)

    def silence(self) -> None:
        self.silenced = True
        self._held.clear()
