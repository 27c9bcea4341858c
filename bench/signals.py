"""Stop signals in a benchmark: Ctrl-C, SIGTERM and SIGHUP end a run cleanly (start-up and
clean-up as KeyboardInterrupt, the event loop by cancelling its main task), and a second one
during clean-up is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt in the synchronous parts (start-up,
    clean-up), so `finally` blocks run; restores the previous handlers afterwards. SIGINT is set
    explicitly: a shell starts a background job with SIGINT ignored, and Python then installs no
    handler of its own. While the event loop runs, `cancel_on_signals` takes over."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, raise_interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


async def cancel_on_signals(main: Coroutine[Any, Any, None]) -> str | None:
    """Run `main`; a stop signal cancels it (cleanly, at an await) instead of raising
    KeyboardInterrupt wherever the loop happens to be: an exception raised inside one of aiortc's
    tasks can be lost there, and the run goes on. Returns the signal's name, or None."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    got: list[str] = []

    def stop(sig: signal.Signals) -> None:
        got.append(sig.name)
        task.cancel()

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        loop.add_signal_handler(s, stop, s)
    try:
        await task
    except asyncio.CancelledError:
        if not got:
            raise
    finally:
        for s, handler in previous.items():
            loop.remove_signal_handler(s)
            signal.signal(s, handler)
    return got[0] if got else None


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C must not leave processes behind."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
