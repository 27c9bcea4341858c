"""Soak: concurrent simulated voice sessions for a long run, with fake engines and then with the
real models; does memory stay flat, is anything left behind, does anything fail?

    bench/run.sh soak                                   # 10 + 10 minutes, about 25 in all
    bench/run.sh soak --minutes 10 --sessions 8 --real-minutes 10 --real-sessions 2
    bench/run.sh soak --skip-real --minutes 3           # a quick look
    scripts/netns-run .venv/bin/python -m bench.soak --help

Starts its own nats-server (with monitoring), redis-server and the five services (inside
scripts/netns-run, as WebRTC needs), one replica each. Per part (fake engines: VA_ENGINE=fake for
asr, llm and tts; real: Whisper tiny.en, SmolLM2, Piper) it:

1. takes a baseline once the idle services have settled: every service's live asyncio tasks,
   jobs in flight and live sessions (its /metrics), the subscriptions each service holds on
   nats-server (/connz?subs=1, counted by the server, not by the client), and Redis keys by kind;
2. runs --sessions simulated users (bench/scale_client.py: a WebRTC peer and event socket each)
   for --minutes: each speaks a question, hears the reply, pauses 0.5-1.5 s and speaks again;
   every --interrupt-every-th reply is cut with an `interrupt` once audible; after
   --turns-per-session turns a user ends its session (DELETE) and opens a new one, so sessions
   are created and ended all along, not just held;
3. ends every session, waits --settle-seconds, and takes the same snapshot again.

Verdicts against the targets: after --warmup-minutes, the resident memory of every service
grows less than 10 % (median of the first minute after warm-up against the median of the last
minute); at the end nothing is left behind: asyncio tasks and NATS subscriptions back at their
baseline, no job in flight, no live session, no Redis key beyond the kept ones (each ended
session keeps its record, history and window: that is the product's history, by design; nothing
else, no `inflight` marker); zero errors (failed turns or connects at the clients, error events
from the server, ERROR lines or tracebacks in the service logs).

Output: a progress line a minute (RSS and CPU per service), tables on stdout,
bench/results/soak-<stamp>.json and soak-latest.json, bench/results/soak-latest.png (memory of
every service over time, per part; voice to voice of every turn over time), service logs in
bench/results/logs/<stamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack, load_text
from harness.paths import shown
from harness.voice_client import VoiceClient

from . import report
from .helper import Helper
from .machine import BenchRun
from .monitor import Monitor
from .runner import arg_parser, say
from .scenarios import PLAIN, QUESTIONS, clip, register_agent
from .signals import signals_ignored, stopped_on_signals

REPO = Path(__file__).resolve().parent.parent
KINDS = ("gateway", "session", "asr", "llm", "tts")
RSS_GROWTH_TARGET_PCT = 10.0
# Redis keys each ended session keeps (its record, history and window); anything else is a leak.
KEPT_PER_SESSION = ("session", "history", "window")
KEPT_GLOBAL = ("agent", "secret")
TEXTS = QUESTIONS[:5]
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("soak", __doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="fake engines part (10)")
    p.add_argument("--sessions", type=int, default=8, help="users at once, fake engines (8)")
    p.add_argument("--real-minutes", type=float, default=10.0, help="real models part (10)")
    p.add_argument("--real-sessions", type=int, default=2, help="users at once, real models (2)")
    p.add_argument(
        "--warmup-minutes", type=float, default=2.0, help="memory growth counted after this (2)"
    )
    p.add_argument("--turns-per-session", type=int, default=5, help="then a new session (5)")
    p.add_argument("--interrupt-every", type=int, default=4, help="cut every k-th reply (4)")
    p.add_argument("--sessions-per-proc", type=int, default=4, help="users per client process")
    p.add_argument("--settle-seconds", type=float, default=8.0, help="before the end snapshot")
    p.add_argument("--skip-fake", action="store_true")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


# -- what the processes hold -----------------------------------------------------------------------
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


# -- one part --------------------------------------------------------------------------------------
def run_part(
    part: str,
    minutes: float,
    sessions: int,
    args: argparse.Namespace,
    stack: LocalStack,
    work: Path,
) -> dict[str, Any]:
    agent_id = asyncio.run(register_agent(stack.base_url, PLAIN))
    monitor = Monitor(lambda: {n: [p] for n, p in stack.pids().items()}, interval_s=1.0)
    monitor.start()
    # One typed turn first: what a service creates once and keeps (nats-py's shared inbox
    # subscription for requests, made at the first request) belongs in the baseline.
    asyncio.run(warm_turn(stack.base_url, agent_id))
    time.sleep(5.0)  # idle services settle (first requests, lazy imports)
    baseline = snapshot(stack)
    offsets = log_sizes(stack)
    say(f"[{part}] baseline: {compact(baseline)}")

    per = max(1, args.sessions_per_proc)
    procs = math.ceil(sessions / per)
    counts = [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]
    workers: list[tuple[Helper, Path]] = []
    for i, count in enumerate(counts):
        spec = {
            "base_url": stack.base_url,
            "agent_id": agent_id,
            "sessions": count,
            "texts": list(TEXTS),
            "seed": args.seed * 100 + i,
            "pause_s": [0.5, 1.5],
            "first_offset_s": 6.0,
            "grace_s": 60.0,
            "turns_per_session": args.turns_per_session,
            "interrupt_every": args.interrupt_every,
            "end_sessions": True,
        }
        spec_file = work / f"{part}-{i}.json"
        out_file = work / f"{part}-{i}-out.json"
        spec_file.write_text(json.dumps(spec))
        helper = Helper(
            f"clients {i + 1}/{procs}",
            ["bench.scale_client", str(spec_file), str(out_file)],
            say,
            stdin=True,
        )
        workers.append((helper, out_file))
    outs: list[dict[str, Any]] = []
    try:
        for helper, _ in workers:
            helper.wait_ready(60 + 5 * sessions)
        start = time.time() + 1.0
        end = start + minutes * 60.0
        for helper, _ in workers:
            helper.send(f"go {start:.3f} {end:.3f}")
        say(f"[{part}] {sessions} users talking for {minutes:g} min (load {load_text()})")
        next_note = start + 60.0
        while any(h.proc.poll() is None for h, _ in workers):
            time.sleep(1.0)
            if time.time() >= next_note and time.time() < end:
                next_note += 60.0
                say(f"[{part} {(time.time() - start) / 60:4.1f} min] {progress(monitor)}")
            if time.time() > end + 150:
                say(f"[{part}] clients still running 150 s after the end: stopping them")
                break
    finally:
        for helper, out in workers:
            helper.stop(10)
            if out.exists():
                outs.append(json.loads(out.read_text()))
            else:
                say(f"  ! {helper.name}: no results (exit code {helper.proc.returncode})")
    time.sleep(args.settle_seconds)
    after = snapshot(stack)
    monitor.stop()
    say(f"[{part}] after all sessions ended: {compact(after)}")
    return summarize(
        part,
        minutes,
        sessions,
        args,
        start,
        end,
        monitor,
        baseline,
        after,
        outs,
        log_problems(offsets),
    )


async def warm_turn(base_url: str, agent_id: str) -> None:
    """A session with one typed turn, then ended."""
    client = VoiceClient(base_url)
    await client.create_session(agent_id)
    await client.connect_events()
    try:
        await client.send({"type": "user.text", "text": TEXTS[0]})
        await client.wait_event("reply.done", 60)
        await client.end_session()
    finally:
        await client.close()


def compact(snap: dict[str, Any]) -> str:
    tasks = {k: int(v.get("va_asyncio_tasks", -1)) for k, v in snap["services"].items()}
    return (
        f"tasks {tasks}, NATS subscriptions {snap['nats_subscriptions']}, Redis keys "
        f"{snap['redis_keys']}"
    )


def progress(monitor: Monitor) -> str:
    now = time.time()
    w = monitor.window(now - 60.0, now)
    rss, cpu = w.get("rss_mib", {}), w.get("cpu_pct", {})
    return ", ".join(f"{k} {rss.get(k, 0):.0f} MiB {cpu.get(k, 0):.0f} %" for k in KINDS) + (
        f"; load {load_text()}"
    )


# -- figures ---------------------------------------------------------------------------------------
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
        if kind in KEPT_GLOBAL:
            continue
        if kind in KEPT_PER_SESSION:
            if grew > created:
                out.append(f"Redis: {grew} new va:{kind}:* keys for {created} sessions")
        elif grew > 0:
            out.append(f"Redis: {grew} va:{kind}:* keys left (none should outlive a turn)")
    return out


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


# -- output ----------------------------------------------------------------------------------------
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


def write(
    parts: list[dict[str, Any]],
    args: argparse.Namespace,
    stack: LocalStack,
    run: BenchRun,
    interrupted: bool,
) -> None:
    record = run.record(
        args,
        interrupted,
        stack.log_dir,
        targets={"rss_growth_pct": RSS_GROWTH_TARGET_PCT, "leftovers": 0, "errors": 0},
        verdicts=verdict_lines(parts),
        parts=parts,
    )
    say("")
    say(run.headline("soak", interrupted))
    say(tables(parts))
    say("")
    for line in record["verdicts"]:
        say(line)
    for path in report.write_json(record, args.out, run.stamp, name="soak"):
        say(f"wrote {shown(path)}")
    try:
        from .soak_plot import draw

        title = run.plot_title("soak")
        say(f"wrote {shown(draw(parts, args.warmup_minutes, title, args.out / 'soak-latest.png'))}")
    except ImportError as exc:
        say(f"no plot ({exc}): pip install -e '.[bench]'")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("VA_NETNS") != "1":
        say("note: not inside scripts/netns-run; WebRTC may not connect (use bench/run.sh soak)")
    run = BenchRun.begin("soak", say)
    for text in TEXTS:
        clip(text)
    parts: list[dict[str, Any]] = []
    rc = 0
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="va-soak-") as tmp, stopped_on_signals():
        work = Path(tmp)
        stack = LocalStack(work, args.out / "logs" / run.stamp, say)
        plan = []
        if not args.skip_fake:
            fake_env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
            plan.append(("fake", fake_env, args.minutes, args.sessions))
        if not args.skip_real:
            plan.append(
                ("real", {"gateway": LOAD_GATEWAY_ENV}, args.real_minutes, args.real_sessions)
            )
        try:
            stack.start_servers()
            for part, env, minutes, sessions in plan:
                say(
                    f"[{part}] starting the services"
                    f"{' with VA_ENGINE=fake for asr, llm and tts' if part == 'fake' else ''}"
                )
                stack.env = env
                stack.start_services()
                parts.append(run_part(part, minutes, sessions, args, stack, work))
                stack.stop_services()
        except KeyboardInterrupt as exc:
            interrupted, rc = True, 130
            say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping everything")
        except Exception as exc:
            interrupted, rc = True, 1
            say(f"\nbenchmark failed: {type(exc).__name__}: {exc}")
        finally:
            with signals_ignored():
                stack.stop()
        if parts:
            write(parts, args, stack, run, interrupted)
    if rc == 0 and not all(all(p["verdict"].values()) for p in parts):
        rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
