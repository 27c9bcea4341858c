"""Settings shared by every service; each service subclasses `ServiceSettings`.

Environment variables use the prefix `VA_` (e.g. `VA_NATS_URL`); `NATS_URL` and `REDIS_URL`
without the prefix are honoured too, as the test harness and the brief name them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VA_", extra="ignore")

    # One server, or a cluster's servers as a comma list (the client picks one at random and
    # moves to another when it goes: every URL of the cluster, not only one, survives its loss).
    nats_url: str = Field(
        "nats://127.0.0.1:4222", validation_alias=AliasChoices("VA_NATS_URL", "NATS_URL")
    )
    # This service's own NATS credentials (deploy/nats/auth.conf gives each service a user
    # allowed only its subjects). None: connect without credentials (a local development server).
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = None  # a .creds file (JWT + nkey), instead of user and password
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0: each service's default port
    log_level: str = "INFO"
    # The event loop: uvloop (libuv) where it is installed, else asyncio's own. uvloop runs the
    # loop's own work (callbacks, timers, sockets) in C: a typed turn's path through the bus
    # (five services) took 5.9 ms on it against 9.4 on asyncio's (docs/performance.md).
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    worker_id: str | None = None  # default: kind-host-pid
    # Tracing: the standard OTEL_* variables (the SDK reads the sampler and batch settings).
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
    )
    trace_content: bool = False  # put user text into spans (off: text and audio never in spans)


def comma_list(value: object) -> object:
    """An environment variable's comma list as a list of its non-empty items (anything else as
    it is): for a `NoDecode` list setting's "before" validator."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value
