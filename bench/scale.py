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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack, load_text
from harness.paths import shown

from . import pyspy, report
from .helper import Helper
from .machine import BenchRun
from .monitor import Monitor
from .runner import arg_parser, say
from .scenarios import PLAIN, QUESTIONS, clip, register_agent
from .signals import signals_ignored, stopped_on_signals

REPO = Path(__file__).resolve().parent.parent
GAP_TARGET_MS = 60.0
TARGET_SESSIONS = 20
GRACE_S = 30.0  # a level's turns under way at its end may finish within this
GAP_HIST_BINS = 201  # bench/scale_client.py: 1 ms bins 0-200
TEXTS = QUESTIONS[:5]
SERVICES = ("gateway", "session", "asr", "llm", "tts", "nats-server", "redis-server")


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


# -- one level -----------------------------------------------------------------------------------
class Level:
    """N simulated users in client processes, talking for a while, with everything measured."""

    def __init__(
        self,
        part: str,
        sessions: int,
        seconds: float,
        args: argparse.Namespace,
        stack: LocalStack,
        agent_id: str,
        work: Path,
        log_dir: Path,
    ) -> None:
        self.part = part
        self.n = sessions
        self.seconds = seconds
        self.args = args
        self.stack = stack
        self.agent_id = agent_id
        self.work = work
        self.log_dir = log_dir
        self.workers: list[tuple[Helper, Path]] = []

    def client_pids(self) -> list[int]:
        return [h.proc.pid for h, _ in self.workers if h.proc.poll() is None]

    def run(self, monitor: Monitor) -> dict[str, Any]:
        per = max(1, self.args.sessions_per_proc)
        procs = math.ceil(self.n / per)
        counts = [self.n // procs + (1 if i < self.n % procs else 0) for i in range(procs)]
        t_connect = time.time()
        say(
            f"[{self.part} {self.n}] connecting {self.n} session(s) in {procs} client "
            f"process(es) (load {load_text()})"
        )
        first_offset = 6.0 if self.part == "fake" else 9.0
        for i, count in enumerate(counts):
            spec = {
                "base_url": self.stack.base_url,
                "agent_id": self.agent_id,
                "sessions": count,
                "texts": list(TEXTS),
                "seed": self.args.seed * 100 + i,
                "pause_s": [0.5, 1.5],
                "first_offset_s": first_offset,
                "grace_s": GRACE_S,
                "dtx": self.args.dtx,
            }
            spec_file = self.work / f"{self.part}-{self.n}-{i}.json"
            out_file = self.work / f"{self.part}-{self.n}-{i}-out.json"
            spec_file.write_text(json.dumps(spec))
            helper = Helper(
                f"clients {i + 1}/{procs}",
                ["bench.scale_client", str(spec_file), str(out_file)],
                say,
                stdin=True,
            )
            self.workers.append((helper, out_file))
        for helper, _ in self.workers:
            helper.wait_ready(60 + 5 * self.n)
        connect_s = round(time.time() - t_connect, 1)
        idle: dict[str, Any] = {}
        if self.args.idle_seconds > 0:
            # Connected and silent: the cost of just holding the sessions (media both ways).
            t0 = time.time() + 1.0
            time.sleep(1.0 + self.args.idle_seconds)
            idle = monitor.window(t0, time.time())
        start = time.time() + 1.0
        end = start + self.seconds
        for helper, _ in self.workers:
            helper.send(f"go {start:.3f} {end:.3f}")
        say(
            f"[{self.part} {self.n}] all connected in {connect_s} s; talking for "
            f"{self.seconds:.0f} s"
        )
        profile: dict[str, Any] | None = None
        if self.part == "fake" and self.n == self.args.profile_level:
            profile = self.profile(start, end)
        deadline = end + GRACE_S + 60
        for helper, _ in self.workers:
            if helper.wait(max(1.0, deadline - time.time())) is None:
                say(f"  ! {helper.name} did not finish: stopping it")
                helper.stop(5)
        # The window in which every session was talking (the tail, when turns finish, is not).
        win = monitor.window(start, end)
        outs = []
        for helper, out in self.workers:
            if out.exists():
                outs.append(json.loads(out.read_text()))
            else:
                say(f"  ! {helper.name}: no results (exit code {helper.proc.returncode})")
        lv = summarize_level(self.part, self.n, (start, end), connect_s, outs, win, profile)
        lv["idle_machine"] = idle
        return lv

    def profile(self, start: float, end: float) -> dict[str, Any] | None:
        exe = pyspy.find()
        if exe is None:
            say("  (py-spy not found: no profile of the gateway; pip install py-spy)")
            return None
        pid = self.stack.by_kind["gateway"].pid
        seconds = max(5, int(min(20.0, self.seconds - 8)))
        raw = self.log_dir / f"gateway-pyspy-{self.n}.txt"
        time.sleep(max(0.0, start + 5.0 - time.time()))  # turns under way
        say(f"[fake {self.n}] py-spy: sampling the gateway (pid {pid}) for {seconds} s")
        proc = pyspy.record(pid, seconds, raw, exe)
        dump_file = self.log_dir / f"gateway-pyspy-dump-{self.n}.txt"
        dump_file.write_text(pyspy.dump(pid, exe))
        try:
            proc.wait(seconds + 30)
        except Exception:
            proc.kill()
        if not raw.exists():
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            say(f"  ! py-spy wrote nothing: {err[-300:]}")
            return None
        out = pyspy.summarize(raw)
        out["raw"] = shown(raw)
        out["dump"] = shown(dump_file)
        out["seconds"] = seconds
        return out


# -- figures of a level --------------------------------------------------------------------------
def stall_near(stalls: list[tuple[float, float]], t: float, gap_ms: float) -> float:
    """The largest client event-loop stall that ended within the gap ending at `t`."""
    lo = t - gap_ms / 1000.0 - 0.02
    return max((lag for ts, lag in stalls if lo <= ts <= t + 0.02), default=0.0)


class GapTally:
    """One clock's reply-frame gaps over a level's sessions (bench/scale_client.py takes them on
    the wire and at the track): a 1 ms histogram, the large ones, those over the target."""

    def __init__(self, at_client: bool) -> None:
        # Only gaps timed at the client's recorder can be caused by the client's own stalls;
        # the kernel's receive stamps are taken before the client's event loop sees a packet.
        self.at_client = at_client
        self.hist = np.zeros(GAP_HIST_BINS, dtype=np.int64)
        self.over: list[float] = []
        self.big: list[list[dict[str, Any]]] = []  # per session
        self.worst: list[float] = []

    def add(
        self, s: dict[str, Any], prefix: str, stalls: list[tuple[float, float]]
    ) -> float | None:
        """A session's gaps; returns its longest."""
        summary = s.get(f"{prefix}gaps")
        if summary is not None:
            self.hist += np.asarray(summary["hist_1ms"], dtype=np.int64)
            self.over += summary["over_hist"]
        self.big.append(
            [
                {"at": at, "gap_ms": gap}
                | ({"client_stall_ms": stall_near(stalls, at, gap)} if self.at_client else {})
                for t in s["turns"]
                for at, gap in t.get(f"{prefix}big_gaps", [])
            ]
        )
        worst = max((t.get(f"{prefix}max_gap_ms") or 0.0 for t in s["turns"]), default=None)
        if worst is not None:
            self.worst.append(worst)
        return worst

    def figures(self, turns_on_track: int | None = None) -> dict[str, Any]:
        gaps = np.concatenate(
            [np.repeat(np.arange(GAP_HIST_BINS) + 0.5, self.hist), np.asarray(self.over)]
        )

        def pct(q: float) -> float | None:
            return round(float(np.percentile(gaps, q)), 1) if gaps.size else None

        big = [b for per_session in self.big for b in per_session]
        out = {
            "n": int(gaps.size),
            "p50": pct(50),
            "p99": pct(99),
            "p99.9": pct(99.9),
            "max": max(self.worst, default=None),
            "over_target": len(big),
            "sessions_over_target": sum(1 for b in self.big if b),
            "hist_1ms": self.hist.tolist(),
            "over_hist": self.over,
        }
        if self.at_client:
            out["explained_by_client_stall"] = sum(
                1 for b in big if b["client_stall_ms"] >= b["gap_ms"] - 40.0
            )
        if turns_on_track is not None:
            out["turns_timed_at_track"] = turns_on_track  # no kernel stamps: the track's times
        return out


def summarize_level(
    part: str,
    n: int,
    window: tuple[float, float],
    connect_s: float,
    outs: list[dict[str, Any]],
    win: dict[str, Any],
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    start, end = window
    seconds = end - start
    turns: list[dict[str, Any]] = []
    errors: list[str] = []
    sessions: list[dict[str, Any]] = []
    lag_p99, lag_max = [], []
    # the kernel's receive times (what the gateway delivered), and the decoded frames at the
    # recorder (plus the client's own stalls)
    wire, track = GapTally(at_client=False), GapTally(at_client=True)
    for o in outs:
        errors += o.get("connect_errors", [])
        lag = o.get("loop_lag_ms", {})
        if lag.get("p99") is not None:
            lag_p99.append(lag["p99"])
            lag_max.append(lag["max"])
        stalls = [(float(t), float(ms)) for t, ms in lag.get("stalls", [])]
        for s in o["sessions"]:
            errors += s["errors"]
            sessions.append(
                {
                    "session_id": s["session_id"],
                    "connect_s": s["connect_s"],
                    "turns": len(s["turns"]),
                    "errors": len(s["errors"]),
                    "max_gap_ms": wire.add(s, "", stalls),
                    "gaps_over_target": wire.big[-1],
                    "track_max_gap_ms": track.add(s, "track_", stalls),
                    "track_gaps_over_target": track.big[-1],
                }
            )
            turns += s["turns"]
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    metric_keys = (
        "asr_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "first_audio_ms",
        "end_of_turn_ms",
    )
    stages = {
        k: report.percentiles([t["metrics"][k] for t in turns if t["metrics"].get(k) is not None])
        for k in metric_keys
    }
    # Rates count turns by the share of each (question start -> last reply frame) that fell
    # inside the window: the window's CPU seconds are spent on exactly that much work.
    equiv = 0.0
    for t in turns:
        a, b = t.get("t_start"), t.get("reply_last_wall")
        if a is not None and b is not None and b > a:
            equiv += max(0.0, min(b, end) - max(a, start)) / (b - a)
    return {
        "part": part,
        "sessions": n,
        "seconds": round(seconds, 1),
        "connect_s": connect_s,
        "turns": len(turns),
        "turns_in_window": round(equiv, 1),
        "turns_per_s": round(equiv / seconds, 3) if seconds else None,
        "errors": errors,
        "voice_to_voice_ms": report.percentiles(v2v, (50, 95)),
        "stages_ms": stages,
        "gaps": wire.figures(sum(1 for t in turns if t.get("gap_clock") == "track")),
        "track_gaps": track.figures(),
        "silent_frames_inside_replies": sum(t.get("silent_frames_inside", 0) for t in turns),
        "reply_frames": sum(t.get("reply_frames", 0) for t in turns),
        "client_loop_lag_ms": {
            "p99_worst_proc": max(lag_p99) if lag_p99 else None,
            "max": max(lag_max) if lag_max else None,
        },
        "machine": win,
        "gateway_profile": profile,
        "per_session": sessions,
        "turn_records": turns,
    }


def level_line(lv: dict[str, Any]) -> str:
    g, m = lv["gaps"], lv.get("machine", {})
    cpu = m.get("cpu_pct", {})
    hz = m.get("healthz_ms", {})

    def f(v: Any, d: int = 0) -> str:
        return f"{v:.{d}f}" if isinstance(v, int | float) else "-"

    return (
        f"{lv['sessions']:>3} sessions: {lv['turns']} turns ({f(lv['turns_per_s'], 2)}/s), "
        f"v2v p50 {f(lv['voice_to_voice_ms']['p50'])} ms; frame gaps (wire) p50 "
        f"{f(g['p50'], 1)} p99 {f(g['p99'], 1)} max {f(g['max'], 1)} ms, {g['over_target']} over "
        f"60 ms in {g['sessions_over_target']} session(s) (at the track: max "
        f"{f(lv.get('track_gaps', g)['max'], 1)}, {lv.get('track_gaps', g)['over_target']} over); "
        f"gateway {f(gateway_cpu(cpu))} % CPU, "
        f"healthz p99 {f(hz.get('p99'), 1)} ms; clients {f(cpu.get('clients'))} %; machine "
        f"{f(m.get('machine_busy_cores'), 2)} cores busy, others {f(m.get('others_cores'), 2)}"
    )


# -- the parts -----------------------------------------------------------------------------------
def run_part(
    part: str,
    levels: list[int],
    seconds: float,
    args: argparse.Namespace,
    stack: LocalStack,
    work: Path,
    results: list[dict[str, Any]],
) -> None:
    import asyncio

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
    if os.environ.get("VA_NETNS") != "1":
        say("note: not inside scripts/netns-run; WebRTC may not connect (use bench/run.sh scale)")
    run = BenchRun.begin("scale", say)
    say("[setup] synthesizing the spoken questions with Piper (cached in tests/artifacts/)")
    for text in TEXTS:
        clip(text)
    results: list[dict[str, Any]] = []
    rc = 0
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="va-scale-") as tmp, stopped_on_signals():
        work = Path(tmp)
        fake_env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
        stack = LocalStack(
            work, args.out / "logs" / run.stamp, say, env=fake_env, gateways=args.gateways
        )
        try:
            stack.start_servers()
            if not args.skip_fake:
                say("[fake] services with VA_ENGINE=fake for asr, llm and tts")
                stack.start_services()
                run_part("fake", args.levels, args.seconds, args, stack, work, results)
                stack.stop_services()
            if not args.skip_real:
                say("[real] services with the default engines (Whisper, SmolLM2, Piper)")
                stack.env = {"gateway": LOAD_GATEWAY_ENV}
                stack.start_services()
                run_part("real", args.real_levels, args.real_seconds, args, stack, work, results)
        except KeyboardInterrupt as exc:
            interrupted, rc = True, 130
            say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping everything")
        except Exception as exc:
            interrupted, rc = True, 1
            say(f"\nbenchmark failed: {type(exc).__name__}: {exc}")
        finally:
            with signals_ignored():
                stack.stop()
        if results:
            write(results, args, stack, run, interrupted)
    return rc


# -- output --------------------------------------------------------------------------------------
def f0(v: Any, d: int = 0) -> str:
    return f"{v:.{d}f}" if isinstance(v, int | float) else "-"


def fake_tables(levels: list[dict[str, Any]]) -> str:
    lines = []
    head = (
        f"{'sessions':>8} {'turns':>6} {'turn/s':>6} {'v2v p50':>8} {'v2v p95':>8} "
        f"{'gap p50':>7} {'gap p99':>7} {'p99.9':>7} {'gap max':>7} {'>60ms':>6} {'sess>60':>7} "
        f"{'trk max':>7} {'trk>60':>6} {'client':>6} "
        f"{'silent':>6} {'gw hz p99':>9} {'hz max':>7} {'cl lag':>7} {'errors':>6}"
    )
    lines += [
        "fake engines: per level (ms; gaps between reply frames on the wire: the kernel's receive"
        " time of each frame's packet at the client; 'trk' = the same gaps when the decoded frame"
        " reached the client's recorder, which adds the client process's own stalls; 'client' ="
        " track gaps over 60 ms that a stall of the client's event loop explains; 'silent' ="
        " silent frames inside replies; 'gw hz' = gateway /healthz answer time; 'cl lag' ="
        " worst client-process event-loop lag)",
        head,
        "-" * len(head),
    ]
    for lv in levels:
        g, v, m = lv["gaps"], lv["voice_to_voice_ms"], lv.get("machine", {})
        tg = lv.get("track_gaps", g)
        hz = m.get("healthz_ms", {})
        lines.append(
            f"{lv['sessions']:>8} {lv['turns']:>6} {f0(lv['turns_per_s'], 2):>6} "
            f"{f0(v['p50']):>8} {f0(v['p95']):>8} {f0(g['p50'], 1):>7} {f0(g['p99'], 1):>7} "
            f"{f0(g['p99.9'], 1):>7} {f0(g['max'], 1):>7} {g['over_target']:>6} "
            f"{g['sessions_over_target']:>7} {f0(tg['max'], 1):>7} {tg['over_target']:>6} "
            f"{tg.get('explained_by_client_stall', '-'):>6} "
            f"{lv['silent_frames_inside_replies']:>6} {f0(hz.get('p99'), 1):>9} "
            f"{f0(hz.get('max'), 1):>7} {f0(lv['client_loop_lag_ms']['max'], 0):>7} "
            f"{len(lv['errors']):>6}"
        )
        if g.get("turns_timed_at_track"):
            lines.append(f"{'':>8} ({g['turns_timed_at_track']} turns without kernel stamps)")
    return "\n".join(lines)


def gateway_cpu(cpu: dict[str, float]) -> float:
    """All gateway processes together, % of one core."""
    return sum(v for k, v in cpu.items() if k == "gateway" or k.startswith("gateway-"))


def cpu_table(levels: list[dict[str, Any]], title: str) -> str:
    seen = {k for lv in levels for k in lv.get("machine", {}).get("cpu_pct", {})}
    more = sorted(k for k in seen if k.startswith("gateway-") or k == "nginx")
    names = [*SERVICES, *more, "clients", "bench"]
    head = (
        f"{'sessions':>8} {'gw idle':>8} {'cl idle':>8} "
        + " ".join(f"{n[:8]:>8}" for n in names)
        + f" {'busy':>6} {'others':>6} | RSS MiB: "
        + " ".join(f"{n[:7]:>7}" for n in ("gateway", "session", "asr", "llm", "tts", "clients"))
    )
    lines = [title, head, "-" * len(head)]
    for lv in levels:
        m = lv.get("machine", {})
        cpu, rss = m.get("cpu_pct", {}), m.get("rss_mib", {})
        idle = lv.get("idle_machine", {}).get("cpu_pct", {})
        gw_idle = gateway_cpu(idle) if idle else None
        lines.append(
            f"{lv['sessions']:>8} {f0(gw_idle):>8} {f0(idle.get('clients')):>8} "
            + " ".join(f"{f0(cpu.get(n)):>8}" for n in names)
            + f" {f0(m.get('machine_busy_cores'), 2):>6} {f0(m.get('others_cores'), 2):>6} | "
            + "          "
            + " ".join(
                f"{f0(rss.get(n)):>7}"
                for n in ("gateway", "session", "asr", "llm", "tts", "clients")
            )
        )
    return "\n".join(lines)


def cpu_per_turn(cpu: dict[str, float], seconds: float, turns: float) -> dict[str, str]:
    """CPU seconds each process spent per turn over the window, as text ("-" if unknown)."""
    out = {}
    for name in SERVICES:
        c = cpu.get(name)
        out[name] = f"{c / 100.0 * seconds / turns:.2f}" if c is not None and turns else "-"
    return out


def real_table(levels: list[dict[str, Any]]) -> str:
    head = (
        f"{'sessions':>8} {'turns':>6} {'turn/s':>6} {'v2v p50':>8} {'v2v p95':>8} "
        f"{'asr p50':>8} {'llm p50':>8} {'tts p50':>8} {'1st aud':>8} | CPU-s per turn: "
        f"{'asr':>6} {'llm':>6} {'tts':>6} {'gateway':>7} {'session':>7} | "
        f"{'svc CPU/sess':>12} {'gap max':>7} {'>60ms':>5}"
    )
    lines = [
        "real models: per level (ms; stage latencies from turn.metrics; CPU-s per turn = the"
        " stage's CPU over the window / turns; 'svc CPU/sess' = all services' CPU % / sessions)",
        head,
        "-" * len(head),
    ]
    for lv in levels:
        m = lv.get("machine", {})
        cpu = m.get("cpu_pct", {})
        st = lv["stages_ms"]

        secs = m.get("seconds") or lv["seconds"]
        per_turn = cpu_per_turn(cpu, secs, lv["turns_in_window"])
        svc = sum(cpu.get(n, 0.0) for n in SERVICES)
        lines.append(
            f"{lv['sessions']:>8} {lv['turns']:>6} {f0(lv['turns_per_s'], 2):>6} "
            f"{f0(lv['voice_to_voice_ms']['p50']):>8} {f0(lv['voice_to_voice_ms']['p95']):>8} "
            f"{f0(st['asr_ms']['p50']):>8} {f0(st['llm_first_token_ms']['p50']):>8} "
            f"{f0(st['tts_first_audio_ms']['p50']):>8} {f0(st['first_audio_ms']['p50']):>8} | "
            f"                {per_turn['asr']:>6} {per_turn['llm']:>6} {per_turn['tts']:>6} "
            f"{per_turn['gateway']:>7} {per_turn['session']:>7} | "
            f"{f0(svc / lv['sessions'], 0) + ' %':>12} {f0(lv['gaps']['max'], 1):>7} "
            f"{lv['gaps']['over_target']:>5}"
        )
    return "\n".join(lines)


def profile_text(levels: list[dict[str, Any]]) -> str:
    out = []
    for lv in levels:
        p = lv.get("gateway_profile")
        if not p or not p.get("main_thread_samples"):
            continue
        out.append(
            f"gateway py-spy at {lv['sessions']} sessions ({p['seconds']} s, "
            f"{p['main_thread_samples']} samples of its event-loop thread): busy "
            f"{p['main_thread_busy_pct']} % of the time; other threads busy (100 = one core): "
            + ", ".join(f"{k} {v}" for k, v in p["threads_busy_pct_of_one"].items() if v >= 1)
        )
        out.append("  event-loop thread, inclusive (% of all its samples):")
        out += [f"    {pct:5.1f}  {name}" for name, pct in p["main_top_inclusive_pct"]]
        out.append("  event-loop thread, self:")
        out += [f"    {pct:5.1f}  {name}" for name, pct in p["main_top_self_pct"][:10]]
        out.append(f"  raw stacks: {p['raw']}, one snapshot: {p['dump']}")
    return "\n".join(out)


def verdicts(levels: list[dict[str, Any]]) -> list[str]:
    fake = [lv for lv in levels if lv["part"] == "fake"]
    out = []
    at = next((lv for lv in fake if lv["sessions"] == TARGET_SESSIONS), None)
    if at is not None:
        g = at["gaps"]
        tg = at.get("track_gaps", g)
        ok = g["over_target"] == 0
        out.append(
            f"target (20 sessions, fake engines, no reply-frame gap over 60 ms at any client): "
            f"{'MET' if ok else 'MISSED'} - on the wire: max gap {f0(g['max'], 1)} ms, "
            f"{g['over_target']} gaps over 60 ms in {g['sessions_over_target']} of "
            f"{TARGET_SESSIONS} sessions; at the clients' recorders: max {f0(tg['max'], 1)} ms, "
            f"{tg['over_target']} over 60 ms ({tg.get('explained_by_client_stall', '-')} at a"
            " stall of the client's own event loop)"
        )
        if g.get("turns_timed_at_track"):
            out.append(
                f"  {g['turns_timed_at_track']} turns had no kernel receive stamps: their gaps"
                " were timed at the track"
            )
    held = [lv["sessions"] for lv in fake if lv["gaps"]["over_target"] == 0]
    broke = [lv["sessions"] for lv in fake if lv["gaps"]["over_target"] > 0]
    if fake:
        out.append(
            f"fake engines: no gap over 60 ms at {held or 'no level'}; gaps over 60 ms at "
            f"{broke or 'no level'}"
        )
        for lv in fake:
            cpu = lv.get("machine", {}).get("cpu_pct", {})
            if cpu:
                top = max(
                    ((k, v) for k, v in cpu.items() if k not in ("bench",)), key=lambda x: x[1]
                )
                hz = lv["machine"].get("healthz_ms", {})
                out.append(
                    f"  {lv['sessions']:>3} sessions: busiest {top[0]} {top[1]:.0f} % of a core, "
                    f"gateway {gateway_cpu(cpu):.0f} %, machine "
                    f"{lv['machine']['machine_busy_cores']:.2f} of 2 cores, gateway /healthz p99 "
                    f"{f0(hz.get('p99'), 1)} ms"
                )
    return out


def write(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    stack: LocalStack,
    run: BenchRun,
    interrupted: bool,
) -> None:
    fake = [lv for lv in results if lv["part"] == "fake"]
    real = [lv for lv in results if lv["part"] == "real"]
    record = run.record(
        args,
        interrupted,
        stack.log_dir,
        targets={"sessions": TARGET_SESSIONS, "max_gap_ms": GAP_TARGET_MS},
        gateway="services.gateway",
        gateways=args.gateways,
        dtx=args.dtx,
        verdicts=verdicts(results),
        levels=results,
    )
    say("")
    say(run.headline("scale", interrupted))
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
    for path in report.write_json(record, args.out, run.stamp, name="scale"):
        say(f"wrote {shown(path)}")
    try:
        from .scale_plot import draw

        what = "" if args.dtx else " (no DTX)"
        if args.gateways > 1:
            what += f" ({args.gateways} gateways behind nginx)"
        title = run.plot_title(f"scale{what}")
        png = draw(fake, real, title, args.out / "scale-latest.png")
        say(f"wrote {shown(png)}")
    except ImportError as exc:
        say(f"no plot ({exc}): pip install -e '.[bench]'")


if __name__ == "__main__":
    sys.exit(main())
