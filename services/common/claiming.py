"""The part every replica that takes work by claim shares (asr, llm, tts, session): its
subscriptions in queue groups (each request goes to one replica), the notice that it took a job,
its jobs tracked by reply id, and on stop no new work while it finishes the jobs it holds."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import bus, subjects
from .jobs import JobTable
from .messages import ClaimAck, WorkClaimed, WorkKind
from .service import Worker
from .settings import ServiceSettings


class ClaimingWorker(Worker):
    kind: WorkKind

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self.jobs = JobTable()
        self._claim_subs: list[Subscription] = []

    async def accept(
        self, nc: NATS, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> None:
        """Take `subject`'s messages in queue group `queue` until `stop_accepting`: from the
        moment this returns (the server has the subscription: a request sent next on another
        connection finds it)."""
        self._claim_subs.append(await nc.subscribe(subject, queue=queue, cb=cb))
        await nc.flush()

    async def claim(
        self,
        nc: NATS,
        subject: str,
        queue: str,
        request_kind: Any,
        on_claim: bus.Handler,
        name: str = "claim",
    ) -> None:
        """`accept` with each message decoded as `request_kind` and answered with what
        `on_claim` returns (`bus.typed_handler`: a bad message never takes the replica down)."""
        handler = bus.typed_handler(request_kind, on_claim, name=f"{self.kind}.{name}")
        await self.accept(nc, subject, queue, handler)

    async def announce(self, session_id: str, turn_id: str, reply_id: str | None = None) -> None:
        """Tell observers (`va.work.claimed.{sid}`: fault tests, tracing) this replica took it."""
        assert self.nc is not None
        await bus.publish(
            self.nc,
            subjects.work_claimed(session_id),
            WorkClaimed(
                kind=self.kind,
                worker_id=self.worker_id,
                session_id=session_id,
                turn_id=turn_id,
                reply_id=reply_id,
            ),
        )

    async def claimed(self, session_id: str, turn_id: str, reply_id: str | None = None) -> ClaimAck:
        """Announce the claim and answer the claimer."""
        await self.announce(session_id, turn_id, reply_id)
        return ClaimAck(worker_id=self.worker_id, kind=self.kind)

    async def stop_accepting(self) -> None:
        subs, self._claim_subs = self._claim_subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def drain(self, timeout: float) -> None:
        await self.stop_accepting()
        await self.jobs.wait_all(timeout)
