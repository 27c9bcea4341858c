"""Soak: the figures of a part (memory growth after warm-up, voice to voice, errors, what was
left behind, the verdicts), the progress line and the printed tables."""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

from harness.local_stack import load_text

from . import report
from .monitor import Monitor
from .soak_probes import KINDS, leftovers

RSS_GROWTH_TARGET_PCT = 10.0


def progress(monitor: Monitor) -> str:
    now = time.time()
    w = monitor.window(now - 60.0, now)
    rss, cpu = w.get("rss_mib", {}), w.get("cpu_pct", {})
    return ", ".join(f"{k} {rss.get(k, 0):.0f} MiB {cpu.get(k, 0):.0f} %" for k in KINDS) + (
        f"; load {load_text()}"
    )


def rss_series(monitor: Monitor, start: float) -> dict[str, list[tuple[float, float]]]:
    """(seconds since the start, MiB) per service, one point a sample."""
    return {
        k: [
            (round(s.t - start, 1), round(s.rss.get(k, 0) / 2**20, 2))
            for s in monitor.samples
            if k in s.rss
        ]
        for k in KINDS
    }


def rss_growth(series: list[tuple[float, float]], warm_s: float, end_s: float) -> dict[str, Any]:
    first = [v for t, v in series if warm_s <= t < warm_s + 60.0]
    last = [v for t, v in series if end_s - 60.0 <= t <= end_s]
    if not first or not last:
        return {"after_warmup_mib": None, "end_mib": None, "growth_pct": None}
    a, b = median(first), median(last)
    return {
        "after_warmup_mib": round(a, 1),
        "end_mib": round(b, 1),
        "growth_pct": round((b - a) / a * 100.0, 2),
    }


def summarize(
    part: str,
    minutes: float,
    sessions: int,
    args: argparse.Namespace,
    start: float,
    end: float,
    monitor: Monitor,
    baseline: dict[str, Any],
    after: dict[str, Any],
    outs: list[dict[str, Any]],
    logged: dict[str, list[str]],
) -> dict[str, Any]:
    users = [s for o in outs for s in o["sessions"]]
    turns = [t for s in users for t in s["turns"]]
    created = sum(len(s.get("session_ids", [])) for s in users)
    client_errors = [e for o in outs for e in o.get("connect_errors", [])] + [
        e for s in users for e in s["errors"]
    ]
    server_errors = [e for s in users for e in s.get("server_errors", [])]
    series = rss_series(monitor, start)
    warm_s, end_s = args.warmup_minutes * 60.0, end - start
    growth = {k: rss_growth(series[k], warm_s, end_s) for k in KINDS}
    whole = monitor.window(start, end)
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    left = leftovers(baseline, after, created)  # the warm-up session is in the baseline
    n_errors = len(client_errors) + len(server_errors) + sum(len(v) for v in logged.values())
    return {
        "part": part,
        "minutes": minutes,
        "sessions_at_once": sessions,
        "sessions_created": created,
        "turns": len(turns),
        "turns_cut": sum(1 for t in turns if t.get("cut")),
        "turns_per_min": round(len(turns) / minutes, 1) if minutes else None,
        "voice_to_voice_ms": report.percentiles(v2v, (50, 95)),
        "voice_to_voice_points": [
            (round(t["t_start"] - start, 1), t["voice_to_voice_ms"])
            for t in turns
            if t.get("voice_to_voice_ms") is not None
        ],
        "rss_growth": growth,
        "rss_series": series,
        "cpu_pct": whole.get("cpu_pct", {}),
        "baseline": baseline,
        "after": after,
        "leftovers": left,
        "errors": {
            "count": n_errors,
            "client": client_errors[:50],
            "server_events": server_errors[:50],
            "service_logs": {k: v[:20] for k, v in logged.items()},
        },
        "verdict": {
            "memory": all(
                g["growth_pct"] is not None and g["growth_pct"] < RSS_GROWTH_TARGET_PCT
                for g in growth.values()
            ),
            "nothing_left": not left,
            "zero_errors": n_errors == 0,
        },
    }


def f0(v: Any, d: int = 0) -> str:
    return f"{v:.{d}f}" if isinstance(v, int | float) else "-"


def tables(parts: list[dict[str, Any]]) -> str:
    lines = []
    head = (
        f"{'part':>5} {'min':>4} {'users':>5} {'sessions':>8} {'turns':>6} {'cut':>4} "
        f"{'v2v p50':>8} {'v2v p95':>8} {'errors':>6} {'left':>5} | RSS growth after warm-up %: "
        + " ".join(f"{k:>8}" for k in KINDS)
    )
    lines += [head, "-" * len(head)]
    for p in parts:
        g = p["rss_growth"]
        lines.append(
            f"{p['part']:>5} {p['minutes']:>4g} {p['sessions_at_once']:>5} "
            f"{p['sessions_created']:>8} {p['turns']:>6} {p['turns_cut']:>4} "
            f"{f0(p['voice_to_voice_ms']['p50']):>8} {f0(p['voice_to_voice_ms']['p95']):>8} "
            f"{p['errors']['count']:>6} {len(p['leftovers']):>5} |                            "
            + " ".join(f"{f0(g[k]['growth_pct'], 1):>8}" for k in KINDS)
        )
    lines.append("")
    head2 = f"{'part':>5} " + " ".join(f"{k + ' MiB':>18}" for k in KINDS)
    lines += [
        "resident memory, median of the first minute after warm-up -> of the last minute",
        head2,
        "-" * len(head2),
    ]
    for p in parts:
        g = p["rss_growth"]
        lines.append(
            f"{p['part']:>5} "
            + " ".join(
                f"{f0(g[k]['after_warmup_mib']) + ' -> ' + f0(g[k]['end_mib']):>18}" for k in KINDS
            )
        )
    return "\n".join(lines)


def verdict_lines(parts: list[dict[str, Any]]) -> list[str]:
    out = []
    for p in parts:
        v = p["verdict"]
        worst = max(KINDS, key=lambda k: p["rss_growth"][k]["growth_pct"] or -1e9)
        out.append(
            f"{p['part']}: memory growth < {RSS_GROWTH_TARGET_PCT:.0f} % "
            f"{'MET' if v['memory'] else 'MISSED'} (largest: {worst} "
            f"{f0(p['rss_growth'][worst]['growth_pct'], 1)} %); nothing left behind "
            f"{'MET' if v['nothing_left'] else 'MISSED'}; zero errors "
            f"{'MET' if v['zero_errors'] else 'MISSED'} ({p['errors']['count']})"
        )
        out += [f"  left behind: {x}" for x in p["leftovers"]]
        errs = p["errors"]
        out += [f"  client error: {e}" for e in errs["client"][:5]]
        out += [f"  server error event: {e}" for e in errs["server_events"][:5]]
        for kind, lines in errs["service_logs"].items():
            out += [f"  {kind} log: {ln}" for ln in lines[:3]]
    return out
