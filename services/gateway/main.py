"""Gateway service: `python -m services.gateway`."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from services.common.service import TlsListener, Worker, run_worker, setup_logging

from .app import Hub, create_app
from .settings import GatewaySettings

DEFAULT_PORT = 8080


class GatewayWorker(Worker):
    kind = "gateway"

    def __init__(self, settings: GatewaySettings, hub: Hub) -> None:
        super().__init__(settings)
        self.hub = hub

    async def start(self, nc: NATS) -> None:
        from . import smart_turn, vad

        vad.shared_model()  # load the models before the first call needs them
        smart_turn.shared_model()
        self.hub.nc = nc
        self.spawn(self.hub.reap_idle(), "reap-idle")

    async def drain(self, timeout: float) -> None:
        for sid in list(self.hub.live):
            await self.hub.drop(sid)
        for task in list(self._tasks):
            task.cancel()


async def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    hub = Hub(settings)
    worker = GatewayWorker(settings, hub)
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = TlsListener(settings.tls_host, settings.tls_port, settings.tls_cert, settings.tls_key)
    await run_worker(worker, settings, DEFAULT_PORT, app=create_app(hub), tls=tls)
