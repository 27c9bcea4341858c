"""Bus overhead, part 1: raw NATS on this machine before any service runs (request/reply round
trips, one-way publishes stamped by the subscriber and by the raw-socket tap, the same after 100 ms
of idleness) and a Redis GET round trip for reference; bench/bus_overhead.py runs it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats

from services.common.messages import AUDIO, H_TYPE

from . import report

IDLE_S = 0.1  # a turn's first message finds each service idle this long or longer


async def raw_redis(url: str, n: int) -> list[float]:
    """GET round trips with redis-py's asyncio client, as the session service talks to Redis:
    the unit of the Redis work inside the session's hops."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        await r.set("bench:key", "x" * 200)
        out = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            await r.get("bench:key")
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000.0)
        await r.delete("bench:key")
        return out
    finally:
        await r.aclose()


async def raw_nats(url: str, n: int, idle_n: int) -> dict[str, Any]:
    """Request/reply round trips and paced one-way publishes (small and audio-sized), then the
    same small messages after IDLE_S of idleness on both ends: the floor of a hop on this
    machine, since every process on it has been idle since the previous turn."""
    from .bus_peer import ECHO, ONEWAY

    nc = await nats.connect(url, name="bench-raw")
    try:
        small = json.dumps({"type": "bench", "v": 1, "text": "x" * 200}).encode()
        audio = bytes(3200)
        rtt: list[float] = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            await nc.request(ECHO, small, timeout=2.0)
            if i >= 50:
                rtt.append((time.perf_counter() - t0) * 1000.0)
        sent: dict[str, dict[int, float]] = {"small": {}, "audio": {}, "idle": {}}
        for kind, payload, count in (
            ("small", small, n),
            ("audio", audio, n),
            ("idle", small, idle_n),
        ):
            headers = {H_TYPE: AUDIO} if kind == "audio" else {}
            for i in range(count):
                if kind == "idle":
                    await asyncio.sleep(IDLE_S)
                t = time.time()
                await nc.publish(
                    f"{ONEWAY}.{kind}",
                    payload,
                    headers={**headers, "Bench-T": f"{t:.6f}", "Bench-Seq": str(i)},
                )
                sent[kind][i] = t
                await asyncio.sleep(0.002)  # paced: one message at a time on the wire
        idle_rtt: list[float] = []
        for _ in range(idle_n):
            await asyncio.sleep(IDLE_S)
            t0 = time.perf_counter()
            await nc.request(ECHO, small, timeout=2.0)
            idle_rtt.append((time.perf_counter() - t0) * 1000.0)
        await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    return {"request_reply_ms": rtt, "request_reply_idle_ms": idle_rtt, "sent": sent}


def raw_results(
    raw: dict[str, Any], peer_file: Path, rows: list[list[Any]]
) -> dict[str, dict[str, Any]]:
    from .bus_peer import ONEWAY

    peer = json.loads(peer_file.read_text())["oneway"] if peer_file.exists() else []
    by_peer = {(s.rsplit(".", 1)[-1], seq): (sent, got) for s, seq, sent, got in peer}
    by_tap: dict[tuple[str, int], float] = {}
    for t, subject, _reply, headers, _payload, _size in rows:
        if subject.startswith(ONEWAY) and headers and "Bench-Seq" in headers:
            by_tap[(subject.rsplit(".", 1)[-1], int(headers["Bench-Seq"]))] = t
    out: dict[str, dict[str, Any]] = {
        "request_reply": {
            **report.percentiles(raw["request_reply_ms"]),
            "label": "request -> reply round trip (nats-py both ends, echo responder)",
        }
    }
    out["request_reply_idle"] = {
        **report.percentiles(raw.get("request_reply_idle_ms", [])),
        "label": f"  the same after {IDLE_S * 1000:.0f} ms idle (as a turn's first message)",
    }
    out["redis_get"] = {
        **report.percentiles(raw.get("redis_get_ms", [])),
        "label": "Redis GET round trip (redis-py asyncio; not a bus hop: for reference)",
    }
    for kind in ("small", "audio", "idle"):
        size = {
            "small": "256-byte JSON",
            "audio": "3,200-byte audio chunk",
            "idle": f"256-byte JSON after {IDLE_S * 1000:.0f} ms idle",
        }[kind]
        peer_ms, tap_ms, lag_ms = [], [], []
        for seq, sent in raw["sent"][kind].items():
            p = by_peer.get((kind, seq))
            t = by_tap.get((kind, seq))
            if p is not None:
                peer_ms.append((p[1] - sent) * 1000.0)
            if t is not None:
                tap_ms.append((t - sent) * 1000.0)
            if p is not None and t is not None:
                lag_ms.append((p[1] - t) * 1000.0)
        out[f"oneway_{kind}"] = {
            **report.percentiles(peer_ms),
            "lost": len(raw["sent"][kind]) - len(peer_ms),
            "label": f"publish -> subscriber callback, {size} (nats-py both ends)",
        }
        out[f"oneway_{kind}_tap"] = {
            **report.percentiles(tap_ms),
            "label": f"publish -> raw-socket tap recv(), {size}",
        }
        out[f"nats_py_vs_tap_{kind}"] = {
            **report.percentiles(lag_ms),
            "label": f"  nats-py callback stamp minus the tap's, {size}",
        }
    return out
