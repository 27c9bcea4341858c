"""A stand-in service for the harness's own tests: the shared runner, and no engine.

It connects to NATS, serves /healthz and /readyz, and stops on SIGTERM like a real service
(services.common.service.run_worker). With FAKE_SERVICE_FAIL set it prints that text and exits
with status 3 before it is ready, so a test can see how the harness reports a service that dies.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nats.aio.client import Client as NATS  # noqa: E402

from services.common.service import Worker, run_worker, setup_logging  # noqa: E402
from services.common.settings import ServiceSettings  # noqa: E402


class FakeWorker(Worker):
    kind = "fake"

    async def start(self, nc: NATS) -> None:
        return None


def main() -> None:
    failure = os.environ.get("FAKE_SERVICE_FAIL")
    if failure:
        print(failure, flush=True)
        sys.exit(3)
    settings = ServiceSettings()
    setup_logging(settings.log_level)
    asyncio.run(run_worker(FakeWorker(settings), settings, default_port=8099))


if __name__ == "__main__":
    main()
