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

The parts: bench/soak_probes.py (what the processes hold), bench/soak_report.py (figures,
verdicts, tables), bench/soak_plot.py (the plot); the users are bench/scale_client.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack, load_text
from harness.voice_client import VoiceClient

from .monitor import Monitor
from .runner import Benchmark, arg_parser, say
from .scale_level import client_counts, start_clients
from .scenarios import PLAIN, QUESTIONS, clip, register_agent
from .soak_probes import compact, log_problems, log_sizes, snapshot
from .soak_report import RSS_GROWTH_TARGET_PCT, progress, summarize, tables, verdict_lines

TEXTS = QUESTIONS[:5]


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

    spec = {
        "base_url": stack.base_url,
        "agent_id": agent_id,
        "texts": list(TEXTS),
        "pause_s": [0.5, 1.5],
        "first_offset_s": 6.0,
        "grace_s": 60.0,
        "turns_per_session": args.turns_per_session,
        "interrupt_every": args.interrupt_every,
        "end_sessions": True,
    }
    counts = client_counts(sessions, args.sessions_per_proc)
    workers = start_clients(counts, spec, args.seed, work / part)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts: list[dict[str, Any]] = []
    with Benchmark("soak", args, webrtc="bench/run.sh soak") as bench:
        for text in TEXTS:
            clip(text)
        stack = bench.local_stack()
        plan = []
        if not args.skip_fake:
            fake_env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
            plan.append(("fake", fake_env, args.minutes, args.sessions))
        if not args.skip_real:
            plan.append(
                ("real", {"gateway": LOAD_GATEWAY_ENV}, args.real_minutes, args.real_sessions)
            )
        with bench.measuring():
            stack.start_servers()
            for part, env, minutes, sessions in plan:
                say(
                    f"[{part}] starting the services"
                    f"{' with VA_ENGINE=fake for asr, llm and tts' if part == 'fake' else ''}"
                )
                stack.env = env
                stack.start_services()
                parts.append(run_part(part, minutes, sessions, args, stack, bench.work))
                stack.stop_services()
        if parts:
            write(parts, bench)
    if bench.rc == 0 and not all(all(p["verdict"].values()) for p in parts):
        return 3
    return bench.rc


def write(parts: list[dict[str, Any]], bench: Benchmark) -> None:
    record = bench.record(
        targets={"rss_growth_pct": RSS_GROWTH_TARGET_PCT, "leftovers": 0, "errors": 0},
        verdicts=verdict_lines(parts),
        parts=parts,
    )
    say("")
    say(bench.headline("soak"))
    say(tables(parts))
    say("")
    for line in record["verdicts"]:
        say(line)
    bench.publish(record)

    def plot_png(title: str) -> Path:
        from .soak_plot import draw

        return draw(parts, bench.args.warmup_minutes, title, bench.args.out / "soak-latest.png")

    bench.plot(plot_png, "soak")


if __name__ == "__main__":
    sys.exit(main())
