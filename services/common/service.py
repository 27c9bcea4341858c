"""Running a service: settings in, NATS connection, health endpoints, graceful stop.

A service's `main.py` builds its settings and its `Worker`, then calls `run_worker`. On SIGTERM or
SIGINT the worker stops taking new work, finishes what it holds (bounded by `drain_timeout`), and
the NATS connection is drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Response
from nats.aio.client import Client as NATS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import bus, telemetry
from .metrics import watch_tasks
from .settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Worker(ABC):
    """One replica of a stage."""

    kind: str = "worker"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or bus.worker_id(self.kind)
        self.nc: NATS | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @abstractmethod
    async def start(self, nc: NATS) -> None:
        """Load models, subscribe."""

    async def stop_accepting(self) -> None:  # noqa: B027 - optional hook
        """Unsubscribe from claim subjects (new work goes to other replicas)."""

    def ready(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run tracked work; `drain` waits for it."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        await self.stop_accepting()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            log.info("%s: finishing %d job(s) in flight", self.kind, len(pending))
            _, still = await asyncio.wait(pending, timeout=timeout)
            for t in still:
                t.cancel()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and resources."""


def health_app(worker: Worker, app: FastAPI | None = None) -> FastAPI:
    app = app or FastAPI(title=f"{worker.kind} service", docs_url=None, redoc_url=None)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "worker_id": worker.worker_id}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/debug/tasks", include_in_schema=False)
    async def tasks() -> dict[str, dict[str, int]]:
        """Live asyncio tasks by what they run (a leak shows as a growing line)."""
        counts: dict[str, int] = {}
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            name = getattr(coro, "__qualname__", None) or task.get_name()
            counts[name] = counts.get(name, 0) + 1
        return {"tasks": dict(sorted(counts.items()))}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, str]:
        if worker.ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "not ready"}

    return app


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on (`VA_EVENT_LOOP`): None is asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("VA_EVENT_LOOP=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A service's entry point: `main()` on the event loop its settings name."""
    with asyncio.Runner(loop_factory=loop_factory(ServiceSettings().event_loop)) as runner:
        runner.run(main())


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("aioice", "aiortc"):  # per-candidate-pair INFO lines
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class TlsListener:
    """Serve the same HTTP app over TLS too, on `host`:`port` (PEM files)."""

    host: str
    port: int
    certfile: Path
    keyfile: Path


async def run_worker(
    worker: Worker,
    settings: ServiceSettings,
    default_port: int,
    app: FastAPI | None = None,
    drain_timeout: float = 20.0,
    tls: TlsListener | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    telemetry.setup(worker.kind, settings.otel_endpoint, settings.trace_content)
    async with AsyncExitStack() as stack:
        stack.callback(telemetry.shutdown)
        credentials: dict[str, str] = {}
        if settings.nats_user:
            credentials = {"user": settings.nats_user, "password": settings.nats_password or ""}
        if settings.nats_creds:
            credentials = {"user_credentials": settings.nats_creds}
        nc = await bus.connect(settings.nats_url, name=worker.worker_id, **credentials)
        stack.push_async_callback(_close_nats, nc)
        worker.nc = nc
        watch_tasks(worker.kind)
        await worker.start(nc)
        stack.push_async_callback(worker.close)
        # Everything loaded so far (modules, models, sessions of onnxruntime) lives as long as
        # the process: out of the collector's sight, a full collection no longer walks it. In
        # the gateway that took one 180 ms pause to 15 ms, a pause every session hears.
        gc.freeze()

        http_app = health_app(worker, app)
        if settings.otel_endpoint:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            # The event socket is left out: its token travels in the query string.
            FastAPIInstrumentor.instrument_app(
                http_app, excluded_urls="healthz,readyz,metrics,/events"
            )
        configs = [_http_config(http_app, settings.http_host, settings.http_port or default_port)]
        if tls is not None:
            configs.append(_http_config(http_app, tls.host, tls.port, tls))
        servers = [_HttpServer(c) for c in configs]
        serving = [asyncio.create_task(s.serve(), name="http") for s in servers]
        log.info(
            "%s %s ready on :%d%s (%s event loop)",
            worker.kind,
            worker.worker_id,
            configs[0].port,
            f" and https {tls.host}:{tls.port}" if tls else "",
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        await stop.wait()
        log.info("%s: stopping", worker.kind)
        await worker.drain(drain_timeout)
        for server in servers:
            server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*serving), 5)


def _http_config(
    app: FastAPI, host: str, port: int, tls: TlsListener | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.certfile) if tls else None,
        ssl_keyfile=str(tls.keyfile) if tls else None,
    )


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when the HTTP side stops
    (after draining, so /readyz keeps answering while work in flight finishes)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


async def _close_nats(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.drain()
