"""Prometheus metrics, served on each service's `/metrics`.

Names are prefixed `va_` and labelled by `service`; every service registers the same families so
dashboards work on any of them.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge, Histogram

TURNS = Counter("va_turns_total", "Turns handled, by outcome", ["service", "outcome"])
ERRORS = Counter("va_errors_total", "Errors, by code", ["service", "code"])
STAGE_SECONDS = Histogram(
    "va_stage_latency_seconds",
    "Latency of one stage of a turn",
    ["service", "stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "va_in_flight", "Jobs (utterances, generations, syntheses, turns) held now", ["service"]
)
TOOL_CALLS = Counter(
    "va_tool_calls_total", "Tool calls run by the session, by outcome", ["outcome"]
)
QUEUE_DEPTH = Gauge("va_claim_queue_depth", "Claimed jobs waiting for the engine", ["service"])
ACTIVE_SESSIONS = Gauge("va_active_sessions", "Live sessions held by this gateway replica")
ASYNCIO_TASKS = Gauge(
    "va_asyncio_tasks", "asyncio tasks alive in this process (a leak shows as growth)", ["service"]
)


def watch_tasks(service: str) -> None:
    """Report this event loop's live task count on /metrics (read at each scrape)."""
    loop = asyncio.get_running_loop()
    ASYNCIO_TASKS.labels(service).set_function(lambda: len(asyncio.all_tasks(loop)))
