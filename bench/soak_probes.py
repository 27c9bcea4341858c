"""Soak: what the processes hold, before and after: each service's asyncio tasks, jobs in
flight and live sessions (its /metrics), the subscriptions nats-server counts per service, Redis
keys by kind, problems in the service logs; and what the end holds beyond the baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from harness.local_stack import LocalStack

KINDS = ("gateway", "session", "asr", "llm", "tts")


# Redis keys each ended session keeps (its record, history and window); anything else is a leak.
KEPT_PER_SESSION = ("session", "history", "window")


KEPT_GLOBAL = ("agent", "secret")


# Keys that expire on their own within a minute of their turn: a turn submission's claim.
EXPIRING = ("submission",)


LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


def _get(url: str, timeout: float = 10.0) -> str:
    r = httpx.get(url, timeout=timeout)
    r.raise_for_status()
    return r.text


def service_metrics(url: str) -> dict[str, float]:
    """The gauges that show held state, from a service's /metrics."""
    wanted = {"va_asyncio_tasks", "va_in_flight", "va_active_sessions", "va_claim_queue_depth"}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(_get(f"{url}/metrics")):
        if family.name in wanted:
            out[family.name] = sum(s.value for s in family.samples)
    return out


def nats_subscriptions(monitor_url: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Subscriptions per service, as nats-server counts them, and their subjects (connections
    are named by worker id, `<kind>-<host>-<pid>-<rand>`)."""
    data = json.loads(_get(f"{monitor_url}/connz?subs=1&limit=1024"))
    counts: dict[str, int] = {}
    subjects: dict[str, list[str]] = {}
    for conn in data.get("connections", []):
        kind = str(conn.get("name", "")).split("-", 1)[0] or "unnamed"
        counts[kind] = counts.get(kind, 0) + int(conn.get("subscriptions", 0))
        subjects.setdefault(kind, []).extend(conn.get("subscriptions_list", []))
    return counts, subjects


def redis_keys(url: str) -> dict[str, int]:
    """Keys by kind (`va:<kind>:...`)."""
    r = redis.Redis.from_url(url)
    out: dict[str, int] = {}
    try:
        for key in r.scan_iter(count=1000):
            parts = key.decode().split(":")
            kind = parts[1] if len(parts) > 1 and parts[0] == "va" else key.decode()
            out[kind] = out.get(kind, 0) + 1
    finally:
        r.close()
    return out


def snapshot(stack: LocalStack) -> dict[str, Any]:
    subs = nats_subscriptions(stack.nats_monitor_url)
    return {
        "services": {k: service_metrics(stack.by_kind[k].url) for k in KINDS},
        "tasks": {
            k: json.loads(_get(f"{stack.by_kind[k].url}/debug/tasks"))["tasks"] for k in KINDS
        },
        "nats_subscriptions": subs[0],
        "nats_subjects": subs[1],
        "redis_keys": redis_keys(stack.redis_url),
    }


def log_problems(offsets: dict[Path, int]) -> dict[str, list[str]]:
    """ERROR lines and tracebacks the services logged after `offsets` (bytes, per log file)."""
    out: dict[str, list[str]] = {}
    for path, offset in offsets.items():
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        lines = [ln[:300] for ln in text.splitlines() if LOG_PROBLEM.search(ln)]
        if lines:
            out[path.name] = lines
    return out


def log_sizes(stack: LocalStack) -> dict[Path, int]:
    return {sp.log: sp.log.stat().st_size for sp in stack.by_kind.values() if sp.log.exists()}


def compact(snap: dict[str, Any]) -> str:
    tasks = {k: int(v.get("va_asyncio_tasks", -1)) for k, v in snap["services"].items()}
    return (
        f"tasks {tasks}, NATS subscriptions {snap['nats_subscriptions']}, Redis keys "
        f"{snap['redis_keys']}"
    )


def leftovers(baseline: dict[str, Any], after: dict[str, Any], created: int) -> list[str]:
    """What the end snapshot holds beyond the baseline (empty: nothing left behind)."""
    out = []
    for kind in KINDS:
        b, a = baseline["services"][kind], after["services"][kind]
        if a.get("va_asyncio_tasks", 0) > b.get("va_asyncio_tasks", 0):
            tb, ta = baseline["tasks"][kind], after["tasks"][kind]
            more = {n: c - tb.get(n, 0) for n, c in ta.items() if c > tb.get(n, 0)}
            out.append(
                f"{kind}: {a['va_asyncio_tasks']:.0f} asyncio tasks "
                f"(baseline {b['va_asyncio_tasks']:.0f}; more of: {more})"
            )
        for gauge in ("va_in_flight", "va_active_sessions", "va_claim_queue_depth"):
            if a.get(gauge, 0) > 0:
                out.append(f"{kind}: {gauge} = {a[gauge]:.0f}")
    for kind, n in after["nats_subscriptions"].items():
        if n > baseline["nats_subscriptions"].get(kind, 0):
            was = set(baseline["nats_subjects"].get(kind, []))
            new = sorted(set(after["nats_subjects"].get(kind, [])) - was)
            out.append(
                f"{kind}: {n} NATS subscriptions "
                f"(baseline {baseline['nats_subscriptions'].get(kind, 0)}; new: {new})"
            )
    keys_b, keys_a = baseline["redis_keys"], after["redis_keys"]
    for kind, n in keys_a.items():
        grew = n - keys_b.get(kind, 0)
        if kind in KEPT_GLOBAL or kind in EXPIRING:
            continue
        if kind in KEPT_PER_SESSION:
            if grew > created:
                out.append(f"Redis: {grew} new va:{kind}:* keys for {created} sessions")
        elif grew > 0:
            out.append(f"Redis: {grew} va:{kind}:* keys left (none should outlive a turn)")
    return out
