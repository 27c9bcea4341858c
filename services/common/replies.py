"""The part every reply-producing stage (llm, tts) shares: a queue-group claim subscription,
a plain subscription to interrupts, tracked jobs keyed by reply id, and draining on stop."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import bus, subjects
from .jobs import JobTable
from .messages import ClaimAck, Interrupt, WorkClaimed
from .service import Worker


class ReplyWorker(Worker):
    cancel_timeout_s: float = 0.5  # how long an interrupt waits for a cancelled job to end

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.jobs = JobTable()
        self._claim_sub: Subscription | None = None

    async def subscribe(
        self,
        nc: NATS,
        claim_subject: str,
        queue: str,
        request_kind: Any,
        on_claim: Callable[[Any, Msg], Awaitable[Any]],
    ) -> None:
        """Interrupts first (their own subscription, never queued behind work), then claims."""
        await nc.subscribe(
            subjects.INTERRUPT_ALL,
            cb=bus.typed_handler(Interrupt, self._on_interrupt, name=f"{self.kind}.interrupt"),
        )
        self._claim_sub = await nc.subscribe(
            claim_subject,
            queue=queue,
            cb=bus.typed_handler(request_kind, on_claim, name=f"{self.kind}.claim"),
        )

    async def claimed(self, session_id: str, turn_id: str, reply_id: str) -> ClaimAck:
        """Announce the claim (observability, fault tests) and answer the claimer."""
        assert self.nc is not None
        await bus.publish(
            self.nc,
            subjects.work_claimed(session_id),
            WorkClaimed(
                kind=self.kind,
                worker_id=self.worker_id,
                session_id=session_id,  # type: ignore[arg-type]
                turn_id=turn_id,
                reply_id=reply_id,
            ),
        )
        return ClaimAck(worker_id=self.worker_id, kind=self.kind)

    async def _on_interrupt(self, intr: Interrupt, msg: Msg) -> None:
        jobs = self.jobs.matching(intr.session_id, intr.reply_id)
        if jobs:
            await self.jobs.cancel(jobs, timeout=self.cancel_timeout_s)

    async def stop_accepting(self) -> None:
        if self._claim_sub is not None:
            with contextlib.suppress(Exception):
                await self._claim_sub.unsubscribe()
            self._claim_sub = None

    async def drain(self, timeout: float) -> None:
        await self.stop_accepting()
        await self.jobs.wait_all(timeout)
