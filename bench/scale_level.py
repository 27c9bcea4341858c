"""Scale: one level run: N simulated users in client processes (bench/scale_client.py), idle
first, then talking for a while, the machine monitored and, at --profile-level, the gateway
sampled by py-spy."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from harness.local_stack import LocalStack, load_text
from harness.paths import shown

from . import pyspy
from .helper import Helper
from .monitor import Monitor
from .runner import say
from .scale_figures import summarize_level
from .scenarios import QUESTIONS

GRACE_S = 30.0  # a level's turns under way at its end may finish within this
TEXTS = QUESTIONS[:5]


def client_counts(sessions: int, per_proc: int) -> list[int]:
    """`sessions` users spread evenly over processes of `per_proc` at most."""
    procs = math.ceil(sessions / max(1, per_proc))
    return [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]


def start_clients(
    counts: list[int], spec: dict[str, Any], seed: int, stem: Path
) -> list[tuple[Helper, Path]]:
    """One client process (bench/scale_client.py) per count, each given `spec` with its number
    of sessions and its own seed; each with the file it writes its results to."""
    workers = []
    for i, count in enumerate(counts):
        spec_file = stem.with_name(f"{stem.name}-{i}.json")
        out_file = stem.with_name(f"{stem.name}-{i}-out.json")
        spec_file.write_text(json.dumps(spec | {"sessions": count, "seed": seed * 100 + i}))
        helper = Helper(
            f"clients {i + 1}/{len(counts)}",
            ["bench.scale_client", str(spec_file), str(out_file)],
            say,
            stdin=True,
        )
        workers.append((helper, out_file))
    return workers


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
        counts = client_counts(self.n, self.args.sessions_per_proc)
        t_connect = time.time()
        say(
            f"[{self.part} {self.n}] connecting {self.n} session(s) in {len(counts)} client "
            f"process(es) (load {load_text()})"
        )
        spec = {
            "base_url": self.stack.base_url,
            "agent_id": self.agent_id,
            "texts": list(TEXTS),
            "pause_s": [0.5, 1.5],
            "first_offset_s": 6.0 if self.part == "fake" else 9.0,
            "grace_s": GRACE_S,
            "dtx": self.args.dtx,
        }
        self.workers = start_clients(
            counts, spec, self.args.seed, self.work / f"{self.part}-{self.n}"
        )
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
