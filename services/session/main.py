"""Session service: `python -m services.session`."""

from __future__ import annotations

from services.common.service import run_worker, setup_logging

from .settings import SessionSettings
from .store import Store
from .worker import SessionWorker

DEFAULT_PORT = 8084


async def main() -> None:
    settings = SessionSettings()
    setup_logging(settings.log_level)
    if settings.otel_endpoint:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
    store = Store.from_url(settings.redis_url, settings.sentinel_addresses(), settings.redis_master)
    worker = SessionWorker(settings, store)
    await run_worker(worker, settings, DEFAULT_PORT)
