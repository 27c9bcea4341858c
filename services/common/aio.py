"""asyncio helpers used on the hot path of a turn."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def get_within(queue: asyncio.Queue[T], timeout: float) -> T:
    """`queue.get()` within `timeout` seconds (else TimeoutError), without `asyncio.wait_for`:
    on Python 3.11 that wraps the get in a new task, so even an item already queued waits a turn
    of the event loop. Every message of a turn passes through such a queue, once per hop."""
    if not queue.empty():
        return queue.get_nowait()
    async with asyncio.timeout(timeout):
        return await queue.get()
