"""A claiming replica whose jobs are replies (llm, tts, session): it also hears interrupts, on a
plain subscription of its own (every replica, no queue group), made before its first claim
subscription so that an interrupt is never queued behind work. An interrupt cancels the jobs it
names and waits a bounded time for them to end; a worker may handle it otherwise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import bus, subjects
from .claiming import ClaimingWorker
from .messages import Interrupt
from .settings import ServiceSettings


class ReplyWorker(ClaimingWorker):
    cancel_timeout_s: float = 0.5  # how long an interrupt waits for a cancelled job to end

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self._interrupts: Subscription | None = None

    async def accept(
        self, nc: NATS, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> None:
        """Interrupts first: before the first claim subscription, the interrupt one."""
        if self._interrupts is None:
            self._interrupts = await nc.subscribe(
                subjects.INTERRUPT_ALL,
                cb=bus.typed_handler(Interrupt, self._on_interrupt, name=f"{self.kind}.interrupt"),
            )
        await super().accept(nc, subject, queue, cb)

    async def _on_interrupt(self, intr: Interrupt, msg: Msg) -> None:
        jobs = self.jobs.matching(intr.session_id, intr.reply_id)
        if jobs:
            await self.jobs.cancel(jobs, timeout=self.cancel_timeout_s)
