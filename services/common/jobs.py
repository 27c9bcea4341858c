"""Named, tracked jobs keyed by reply id: an interrupt cancels one and waits for it to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    session_id: str
    turn_id: str
    reply_id: str
    task: asyncio.Task[Any]
    alias: str | None = None  # another id an interrupt may name (an LLM attempt's stream id)


class JobTable:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, reply_id: str) -> bool:
        return reply_id in self._jobs

    def start(
        self,
        session_id: str,
        turn_id: str,
        reply_id: str,
        coro: Coroutine[Any, Any, Any],
        alias: str | None = None,
    ) -> Job:
        task = asyncio.create_task(coro, name=f"job-{reply_id}")
        job = Job(session_id, turn_id, reply_id, task, alias)
        self._jobs[reply_id] = job
        task.add_done_callback(lambda _t: self._jobs.pop(reply_id, None))
        return job

    def matching(self, session_id: str, reply_id: str | None) -> list[Job]:
        if reply_id is not None:
            return [
                j
                for j in self._jobs.values()
                if j.session_id == session_id and reply_id in (j.reply_id, j.alias)
            ]
        return [j for j in self._jobs.values() if j.session_id == session_id]

    async def cancel(self, jobs: list[Job], timeout: float = 0.5) -> None:
        for job in jobs:
            job.task.cancel()
        tasks = [j.task for j in jobs]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                log.warning("job %s did not stop within %.0f ms", t.get_name(), timeout * 1000)

    async def wait_all(self, timeout: float) -> None:
        tasks = [j.task for j in self._jobs.values()]
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=timeout)
        for j in list(self._jobs.values()):
            j.task.cancel()
