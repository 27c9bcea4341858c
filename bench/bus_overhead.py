"""Bus overhead: per-hop latency of the message path, with fake engines that answer at once.

    bench/run.sh bus                       # 200 typed turns (about 2 minutes)
    bench/run.sh bus --turns 1000 --sessions 4
    scripts/netns-run .venv/bin/python -m bench.bus_overhead --help

Starts its own nats-server and redis-server (inside scripts/netns-run, as WebRTC needs) and:

1. **Raw NATS** on that server, before any service runs: request/reply round trips to an echo
   responder and one-way publish -> subscribe times (a small JSON message and a 3,200-byte audio
   chunk), publisher in this process, responder and subscriber in another (bench/bus_peer.py),
   all through nats-py as the services use it. The same one-way messages are also stamped by the
   raw-socket tap (bench/nats_tap.py): nats-py's delivery minus the tap's is what a nats-py
   observer would add to every stamp. Then the floor of a hop on this machine: the same small
   one-way message, and a request/reply, each sent after 100 ms of idleness (as every process
   is when a turn's first message reaches it, a user's turns being seconds apart). Code that has
   not run for a while runs cold: on this machine that costs more than the bus itself. For
   reference, a Redis GET round trip (redis-py asyncio, as the session service uses it): some
   session hops hold one or more.
2. **A real turn through the five services** with VA_ENGINE=fake for asr, llm and tts: a client
   (harness/voice_client.VoiceClient, with a WebRTC peer so the reply is also spoken) types a
   question; the tap, subscribed to `>`, stamps every message of the turn as the server hands it
   out; the client stamps what it sends and receives. Once the first audible reply frame arrives
   the client interrupts the reply (the hops measured are all before it) and types the next
   question. Each hop is the time between two such stamps, matched by turn and reply id; a hop
   includes the work the service does between the two messages, named in the table. Three
   "transit" rows are pure bus: a message that carries its publisher's own `time.time()` stamp
   (TurnSubmit.speech_end_ms, PlaybackStarted.at_ms, Interrupt.at_ms) against the tap's stamp.

Clocks: every stamp is `time.time()` (the client's monotonic stamps are converted with one
offset taken at start), comparable across processes on one machine.

Observer overhead: the tap stamps at `recv()`, in a process of its own, before parsing. Its own
lag is measured all along by probes it publishes to itself every 20 ms (server round trip plus
its wake-up, under the load of the moment); a hop is the difference of two tap stamps, so the
tap's constant lag cancels and only its variation (probe p99 - p50) can enter a hop. The
client's event-loop lag (a 10 ms ticker) bounds the error of the client-side stamps.

Output: tables on stdout (p50 / p99 / max per hop, the targets marked), bench/results/
bus_overhead-<stamp>.json and -latest.json (every turn's stamps), bench/results/
bus_overhead-latest.png, service logs in bench/results/logs/<stamp>/.

The parts: bench/bus_raw.py (1), bench/bus_turns.py (2), bench/bus_hops.py (the hops and their
stamps), bench/bus_report.py (tables and plot).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack
from harness.paths import shown

from . import pyspy, report
from .bus_hops import HOPS, hop_samples, index_rows, points
from .bus_raw import raw_nats, raw_redis, raw_results
from .bus_report import TARGET_P50_MS, TARGET_P99_MS, draw, print_profiles, print_tables, verdict
from .bus_turns import Clock, LoopLag, client_turns
from .helper import Helper
from .nats_tap import read as read_tap
from .runner import Benchmark, arg_parser, say
from .scenarios import PLAIN, register_agent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("bus_overhead", __doc__)
    p.add_argument("--turns", type=int, default=200, help="measured typed turns (200)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured turns first (5)")
    p.add_argument(
        "--sessions", type=int, default=1, help="sessions typing at once, turns split between (1)"
    )
    p.add_argument(
        "--turns-per-session", type=int, default=50, help="a fresh session after as many (50)"
    )
    p.add_argument("--pause", type=float, default=0.1, help="seconds between turns (0.1)")
    p.add_argument(
        "--raw", type=int, default=2000, help="raw NATS samples of each kind (2000); 0: skip"
    )
    p.add_argument(
        "--raw-idle",
        type=int,
        default=100,
        help="raw NATS samples after 100 ms idle, one-way and request/reply (100; 20 s)",
    )
    p.add_argument("--no-voice", action="store_true", help="no WebRTC peer: text only, no TTS")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (if found) the session, gateway, llm and tts at 500 Hz during the turns: where"
        " each spends its busy time per turn (adds load: figures of such a run are not the clean"
        " ones)",
    )
    return p.parse_args(argv)


async def measure(
    stack: LocalStack, args: argparse.Namespace, state: dict[str, Any], work: Path
) -> None:
    if args.raw > 0:
        peer_file = work / "peer.json"
        peer = Helper("bus_peer", ["bench.bus_peer", stack.nats_url, str(peer_file)], say)
        try:
            peer.wait_ready(30)
            say(
                f"[raw] {args.raw} request/reply round trips, {args.raw} x2 one-way publishes,"
                f" {args.raw} Redis GETs"
            )
            state["raw_window"] = [time.time()]
            state["raw"] = await raw_nats(stack.nats_url, args.raw, args.raw_idle)
            state["raw"]["redis_get_ms"] = await raw_redis(stack.redis_url, args.raw)
            state["raw_window"].append(time.time())
        finally:
            peer.stop()
        state["peer_file"] = peer_file
    await asyncio.to_thread(stack.start_services)
    base = stack.base_url
    agent_id = await register_agent(base, PLAIN)
    clock = Clock.now()
    spies: dict[str, tuple[Any, Path]] = {}
    exe = pyspy.find() if args.profile else None
    if args.profile and exe is None:
        say("[profile] py-spy not found (pip install py-spy, or PY_SPY=path): no profile")
    if exe is not None:
        for kind in ("session", "gateway", "llm", "tts"):
            raw = stack.log_dir / f"{kind}-pyspy-bus.txt"
            proc = pyspy.record(stack.by_kind[kind].pid, None, raw, exe, 500, False)
            spies[kind] = (proc, raw)
    lag = LoopLag()
    lag.start()
    state["lag"] = lag
    state["turns_window"] = [time.time()]
    say(
        f"[turns] {args.turns} typed turns ({args.warmup} warm-up), {args.sessions} session(s) "
        f"at once, {'with' if not args.no_voice else 'without'} a WebRTC peer"
    )
    per = [
        args.turns // args.sessions + (1 if i < args.turns % args.sessions else 0)
        for i in range(args.sessions)
    ]
    results = await asyncio.gather(
        *(
            client_turns(base, agent_id, args, n, args.warmup, clock, f"s{i + 1}")
            for i, n in enumerate(per)
        )
    )
    lag.stop()
    state["turns_window"].append(time.time())
    state["profiles"] = {}
    for kind, (proc, raw) in spies.items():
        await asyncio.to_thread(pyspy.stop, proc)
        if raw.exists():
            prof = pyspy.summarize(raw)
            busy_s = prof.get("main_thread_samples", 0) / 500.0
            n = max(1, args.warmup + args.turns)
            state["profiles"][kind] = {
                **prof,
                "main_busy_ms_per_turn": round(busy_s * 1000.0 / n, 2),
                "raw": shown(raw),
            }
    for turns, errors in results:
        state["turns"].extend(turns)
        state["errors"].extend(errors)


def window(samples: list[tuple[float, float]], span: list[float] | None) -> list[float]:
    if not span or len(span) < 2:
        return []
    return [(got - sent) * 1000.0 for sent, got in samples if span[0] <= sent <= span[1]]


def analyse(state: dict[str, Any], tap_file: Path) -> dict[str, Any]:
    rows, probes = read_tap(tap_file)
    out: dict[str, Any] = {"tap_messages": len(rows)}
    if state.get("raw"):
        out["raw"] = raw_results(state["raw"], state["peer_file"], rows)
    ix = index_rows(rows)
    turn_points = [points(t, ix) for t in state["turns"]]
    samples = hop_samples(turn_points)
    out["hops"] = {
        h.key: {
            **report.percentiles(samples[h.key]),
            # both messages came in one recv() of the tap: back-to-back writes, or the tap late
            "same_recv": sum(1 for v in samples[h.key] if v == 0.0),
            "label": h.label,
            "kind": h.kind,
        }
        for h in HOPS
    }
    for h in HOPS:
        s = out["hops"][h.key]
        s["target"] = verdict(s) if h.kind in ("bus", "rtt", "work") else "info"
    out["observer"] = {
        "tap_probe_raw_ms": report.percentiles(window(probes, state.get("raw_window"))),
        "tap_probe_turns_ms": report.percentiles(window(probes, state.get("turns_window"))),
        "client_loop_lag_ms": report.percentiles(state["lag"].samples if state.get("lag") else []),
    }
    out["turn_points"] = turn_points
    out["samples"] = {k: [round(v, 3) for v in vs] for k, vs in samples.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.sessions = max(1, args.sessions)
    webrtc = None if args.no_voice else "bench/run.sh bus"
    with Benchmark("bus_overhead", args, webrtc=webrtc) as bench:
        env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
        stack = bench.local_stack(env=env)
        tap_file = bench.work / "tap.jsonl"
        state: dict[str, Any] = {"turns": [], "errors": []}
        with bench.measuring():
            stack.start_servers()
            tap = bench.helper("tap", ["bench.nats_tap", stack.nats_url, str(tap_file)])
            tap.wait_ready(30)
            say(f"[setup] raw-socket tap subscribed to '>' on {stack.nats_url}")
            bench.run_async(measure(stack, args, state, bench.work))
        if state["turns"] or state.get("raw"):
            write(state, bench, tap_file)
    return bench.rc


def write(state: dict[str, Any], bench: Benchmark, tap_file: Path) -> None:
    res = analyse(state, tap_file)
    record = bench.record(
        engines=FAKE_ENGINES,
        targets_ms={"p50": TARGET_P50_MS, "p99": TARGET_P99_MS},
        errors=state["errors"],
        profiles=state.get("profiles", {}),
        **res,
    )
    say("")
    extra = f", {len(state['turns'])} turns, {res['tap_messages']} bus messages seen"
    say(bench.headline("bus overhead", extra))
    print_tables(res)
    print_profiles(state.get("profiles", {}))
    bench.publish(record)
    png = bench.args.out / "bus_overhead-latest.png"
    bench.plot(
        lambda title: draw(res, state.get("raw") or {}, title, png),
        "bus overhead per hop, fake engines",
    )
    if state["errors"]:
        say(f"\n{len(state['errors'])} failed turns (all in the JSON)")


if __name__ == "__main__":
    sys.exit(main())
