"""What a benchmark's results begin with: this machine (CPU model, cores, memory, the CPU
reference: how fast it is right now), the commit and its uncommitted changes, the load before and
after, and when the run began (`BenchRun`)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from harness.local_stack import load_text
from harness.paths import REPO, shown


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_reference_ms() -> float:
    """How fast this machine is right now: the best of five timings of a fixed pure-Python
    workload, in ms. This machine's speed was seen to change by 1.6x within an hour (a shared
    host), with the same code: runs whose references differ much are not comparable."""
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        sum(range(2_000_000))
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000.0, 1)


def machine_info() -> dict[str, Any]:
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_reference_ms": cpu_reference_ms(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        # What differs from the commit: services under concurrent edit change the figures.
        "git_modified": [line.split(maxsplit=1)[-1] for line in (status or "").splitlines()],
    }


@dataclass
class BenchRun:
    """When, where and on what commit one benchmark run happens: what every result file and
    headline of the benchmarks begins with."""

    name: str  # the module under bench/ ("scale", "soak", ...)
    started: datetime
    machine: dict[str, Any]

    @classmethod
    def begin(cls, name: str, say: Callable[[str], None]) -> BenchRun:
        """Before the services start: the code they run is the tree as it is now (a commit made
        while the benchmark runs does not change them)."""
        machine = machine_info() | {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
        say(
            f"[setup] {machine['cpu_model']} x{machine['nproc']} (cpu reference"
            f" {machine['cpu_reference_ms']} ms), load {load_text()}, commit "
            f"{str(machine['git_commit'])[:10]}"
            f"{' + uncommitted changes' if machine['git_dirty'] else ''}"
        )
        return cls(name, datetime.now(UTC).astimezone(), machine)

    @property
    def stamp(self) -> str:
        return self.started.strftime("%Y%m%d-%H%M%S")

    @property
    def commit(self) -> str:
        return str(self.machine["git_commit"])[:10]

    def record(
        self, args: Any, interrupted: bool, log_dir: Path | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The result record's common head (the load now is the load after), then `fields`."""
        self.machine = self.machine | {
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_reference_ms_after": cpu_reference_ms(),
        }
        record: dict[str, Any] = {
            "benchmark": self.name,
            "date": self.started.isoformat(timespec="seconds"),
            "duration_s": round((datetime.now(UTC) - self.started).total_seconds(), 1),
            "complete": not interrupted,
            "command": [sys.executable, "-m", f"bench.{self.name}", *sys.argv[1:]],
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": self.machine,
        }
        if log_dir is not None:
            record["logs"] = shown(log_dir)
        return record | fields

    def headline(self, title: str, interrupted: bool = False, extra: str = "") -> str:
        """`title, date, commit, CPU, load before -> after[extra]` for the printed tables."""
        m = self.machine
        return (
            f"{title}, {self.started.isoformat(timespec='seconds')}, commit {self.commit}"
            f"{' (dirty)' if m['git_dirty'] else ''}, {m['cpu_model']} x{m['nproc']}, cpu reference"
            f" {m.get('cpu_reference_ms')} -> {m.get('cpu_reference_ms_after')} ms, load "
            f"{m['loadavg_before']} -> {m.get('loadavg_after')}{extra}"
            f"{'  [INTERRUPTED: partial]' if interrupted else ''}"
        )

    def plot_title(self, title: str) -> str:
        m = self.machine
        before, after = m["loadavg_before"][0], (m.get("loadavg_after") or [float("nan")])[0]
        return (
            f"{title} - {self.started.isoformat(timespec='seconds')} - {self.commit} - "
            f"{m['cpu_model']} x{m['nproc']} - load {before:.1f} -> {after:.1f}"
        )
