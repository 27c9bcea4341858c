"""Scale: concurrent simulated voice sessions (a WebRTC peer each) against ONE replica of each
stage, with fake engines (transport and bus cost) and with the real models.

    bench/run.sh scale                                 # both parts, about 10 minutes
    bench/run.sh scale --levels 1,5,10,20 --seconds 30 --skip-real
    bench/run.sh scale --skip-fake --real-levels 1,2,4 --real-seconds 60
    scripts/netns-run .venv/bin/python -m bench.scale --help

Starts its own nats-server, redis-server and the five services (inside scripts/netns-run, as
WebRTC needs). At each level N it starts N simulated users (bench/scale_client.py, spread over
processes of --sessions-per-proc users each, so that one client event loop is not the thing
measured), waits until all are connected, then lets them talk for --seconds: each speaks a short
question, receives the whole spoken reply, pauses 0.5-1.5 s and speaks again, the sessions'
turns interleaved at random. Measured per level:

- at every client: the arrival gaps between consecutive reply audio frames while a reply plays
  (target: none over 60 ms at 20 sessions), timed on the wire (the kernel's receive stamp of each
  frame's packet: what the gateway delivered) and at the track (when the decoded frame reached
  the client's recorder: the wire plus the simulated client's own stalls; bench/wire_clock.py);
  silent frames inside a reply, voice to voice (last audible frame sent -> first audible reply
  frame received);
- per process (psutil, every 0.5 s): CPU in % of one core and peak RSS of each service, of
  nats-server and redis-server, and of all client processes together; the machine's busy cores
  and what other programs on it used;
- the gateway's event-loop lag, from outside: GET /healthz answer time every 100 ms (HTTP is
  served on the same loop as media and bus work);
- each client process's own event-loop lag, and which large track gaps coincide with a client
  stall;
- at --profile-level (20 by default), py-spy on the gateway (when installed): its event-loop
  thread's busy share and the functions that take it.

Part 1 uses VA_ENGINE=fake for asr, llm and tts (instant; what is left is transport, VAD, bus
and Python). Levels: --levels, then, with --extend, +10 sessions while no client saw a gap over
60 ms, up to --max-sessions. Part 2 restarts the services with the real models (Whisper tiny.en,
SmolLM2, Piper) and runs --real-levels: turns/s, each stage's latency and CPU per turn. On this
2-core machine every process shares the same two cores: more sessions (or replicas) measure
contention more than capacity, and the simulated clients themselves take a large share (shown).

--gateways N runs N gateway processes behind nginx (deploy/nginx/gateways.conf: every request
of a session reaches the same gateway, hashed on its id, as the Kubernetes ingress does): the
one-machine form of scaling the gateway out. The other stages stay at one replica.

Output: tables on stdout, bench/results/scale-<stamp>.json and -latest.json, bench/results/
scale-latest.png; service logs and py-spy files in bench/results/logs/<stamp>/.

The parts: bench/scale_level.py (one level run), bench/scale_figures.py (its figures),
bench/scale_report.py (tables and verdicts), bench/scale_plot.py (the plot).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack

from .monitor import Monitor
from .runner import Benchmark, arg_parser, say
from .scale_level import TEXTS, Level
from .scale_report import (
    GAP_TARGET_MS,
    TARGET_SESSIONS,
    cpu_table,
    fake_tables,
    level_line,
    profile_text,
    real_table,
    verdicts,
)
from .scenarios import PLAIN, clip, register_agent


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("scale", __doc__)
    p.add_argument(
        "--levels", type=int_list, default=[1, 5, 10, 20], help="fake engines (1,5,10,20)"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="talk time per fake level (30)")
    p.add_argument(
        "--extend",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the last level, +10 sessions while no gap exceeds 60 ms (on)",
    )
    p.add_argument("--max-sessions", type=int, default=40, help="limit of --extend (40)")
    p.add_argument("--real-levels", type=int_list, default=[1, 2, 4], help="real models (1,2,4)")
    p.add_argument("--real-seconds", type=float, default=50.0, help="per real level (50)")
    p.add_argument("--skip-fake", action="store_true")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument(
        "--sessions-per-proc", type=int, default=5, help="simulated users per client process (5)"
    )
    p.add_argument(
        "--profile-level",
        type=int,
        default=TARGET_SESSIONS,
        help="py-spy the gateway at this fake level, if py-spy is found (20; 0: never)",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="per level, measure the connected sessions silent this long first (5; 0: skip)",
    )
    p.add_argument(
        "--no-dtx",
        dest="dtx",
        action="store_false",
        help="microphones send 50 frames/s in silence too (default: Opus DTX, as browsers do "
        "when the gateway's answer asks for it)",
    )
    p.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes, behind nginx when more than one (1)",
    )
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def run_part(
    part: str,
    levels: list[int],
    seconds: float,
    args: argparse.Namespace,
    stack: LocalStack,
    work: Path,
    results: list[dict[str, Any]],
) -> None:

    agent_id = asyncio.run(register_agent(stack.base_url, PLAIN))
    current: list[Level] = []

    def groups() -> dict[str, list[int]]:
        pids = stack.pids()
        g = {name: [pid] for name, pid in pids.items()}
        g["clients"] = current[0].client_pids() if current else []
        g["bench"] = [os.getpid()]
        return g

    monitor = Monitor(groups, health_url=f"{stack.base_url}/healthz")
    monitor.start()
    try:
        queue = list(levels)
        while queue:
            n = queue.pop(0)
            level = Level(part, n, seconds, args, stack, agent_id, work, stack.log_dir)
            current[:] = [level]
            try:
                lv = level.run(monitor)
            finally:
                for helper, _ in level.workers:
                    helper.stop(5)
                current.clear()
            results.append(lv)
            say(f"[{part} {n}] {level_line(lv)}")
            if (
                part == "fake"
                and not queue
                and args.extend
                and lv["gaps"]["over_target"] == 0
                and n + 10 <= args.max_sessions
            ):
                queue.append(n + 10)
                say(f"[{part}] no gap over 60 ms at {n} sessions: trying {n + 10}")
            time.sleep(2.0)  # the closed peers' last packets
    finally:
        monitor.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[dict[str, Any]] = []
    with Benchmark("scale", args, webrtc="bench/run.sh scale") as bench:
        say("[setup] synthesizing the spoken questions with Piper (cached in tests/artifacts/)")
        for text in TEXTS:
            clip(text)
        fake_env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
        stack = bench.local_stack(env=fake_env, gateways=args.gateways)
        with bench.measuring():
            stack.start_servers()
            if not args.skip_fake:
                say("[fake] services with VA_ENGINE=fake for asr, llm and tts")
                stack.start_services()
                run_part("fake", args.levels, args.seconds, args, stack, bench.work, results)
                stack.stop_services()
            if not args.skip_real:
                say("[real] services with the default engines (ASR model, LLM profile, Piper)")
                stack.env = {"gateway": LOAD_GATEWAY_ENV}
                stack.start_services()
                run_part(
                    "real", args.real_levels, args.real_seconds, args, stack, bench.work, results
                )
        if results:
            write(results, bench)
    return bench.rc


def write(results: list[dict[str, Any]], bench: Benchmark) -> None:
    args = bench.args
    fake = [lv for lv in results if lv["part"] == "fake"]
    real = [lv for lv in results if lv["part"] == "real"]
    record = bench.record(
        targets={"sessions": TARGET_SESSIONS, "max_gap_ms": GAP_TARGET_MS},
        gateway="services.gateway",
        gateways=args.gateways,
        dtx=args.dtx,
        verdicts=verdicts(results),
        levels=results,
    )
    say("")
    say(bench.headline("scale"))
    if fake:
        say("")
        say(fake_tables(fake))
        say("")
        say(
            cpu_table(
                fake,
                "fake engines: CPU % of one core per process while talking (2 cores = 200 %);"
                " 'gw idle' / 'cl idle' = gateway / all clients with the sessions connected and"
                " silent",
            )
        )
        prof = profile_text(fake)
        if prof:
            say("")
            say(prof)
    if real:
        say("")
        say(real_table(real))
        say("")
        say(cpu_table(real, "real models: CPU % of one core per process while talking"))
    say("")
    for line in verdicts(results):
        say(line)
    bench.publish(record)

    def plot_png(title: str) -> Path:
        from .scale_plot import draw

        return draw(fake, real, title, args.out / "scale-latest.png")

    what = "" if args.dtx else " (no DTX)"
    if args.gateways > 1:
        what += f" ({args.gateways} gateways behind nginx)"
    bench.plot(plot_png, f"scale{what}")


if __name__ == "__main__":
    sys.exit(main())
