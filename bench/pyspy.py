"""py-spy around a running service, for saying *why* a level saturates: where the gateway's
event loop spends its time, and how much of the time it is busy at all.

py-spy is not a dependency of the project: it is used when found (`PY_SPY` environment variable,
then PATH, then the venv's bin), e.g. after `pip install py-spy`. Sampling is `--nonblocking`
(the process is never stopped) at 50 Hz, with idle threads included, so the event-loop thread's
samples split into "waiting in select()" (idle) and everything else (busy: running Python, or
waiting for the GIL, which for an event loop is just as much a stall).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Leaf frames of a thread that waits rather than works.
IDLE_LEAVES = (
    "select (selectors.py",
    "wait (threading.py",
    "get (queue.py",
    "_wait_for_tstate_lock",
    "sleep (",
    "acquire (",
    "poll (",
    "accept (",
    "_worker (concurrent/futures/thread.py",  # an executor thread in SimpleQueue.get (C)
    # uvloop: its loop is C code under Runner.run, so a sample with no Python frame above it is
    # the loop waiting for I/O (or its own C bookkeeping, which py-spy cannot tell apart)
    "Runner.run (asyncio/runners.py",
    "run_until_complete (",
)
# Frames every event-loop stack has: left out of the inclusive ranking.
PLUMBING = (
    "(runners.py)",
    "(base_events.py)",
    "(events.py)",
    "(<frozen runpy>)",
    "<module> (",
)


def find() -> str | None:
    env = os.environ.get("PY_SPY")
    if env and Path(env).exists():
        return env
    found = shutil.which("py-spy")
    if found:
        return found
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else None


def record(
    pid: int,
    seconds: int | None,
    out: Path,
    exe: str,
    rate: int = 50,
    idle: bool = True,
) -> subprocess.Popen[bytes]:
    """Start sampling `pid` into `out` (collapsed stacks); returns at once. With `seconds`
    None it runs until `stop()`. Without `idle`, only samples of running threads are kept, so
    a thread's sample count / rate is its busy time."""
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--threads"]
    if seconds is not None:
        cmd += ["--duration", str(seconds)]
    if idle:
        cmd.append("--idle")
    cmd += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """End a `record` started without a duration: py-spy writes its file on SIGINT."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dump(pid: int, exe: str) -> str:
    """One snapshot of every thread's stack (py-spy dump)."""
    try:
        out = subprocess.run(
            [exe, "dump", "--nonblocking", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"py-spy dump failed: {exc}"
    return out.stdout + out.stderr


def short(frame: str) -> str:
    """`Class.method (path/to/file.py:123)` -> `Class.method (file.py)`."""
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({loc.rsplit('/', 1)[-1]})" if loc else name


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: per thread, the share of samples it was busy; for the main
    (event-loop) thread, the busy share and the functions that took it, by leaf (self) and by
    inclusive time (any frame on the stack), both as % of all main-thread samples."""
    per_thread: Counter[str] = Counter()
    busy_thread: Counter[str] = Counter()
    main_leaf: Counter[str] = Counter()
    main_incl: Counter[str] = Counter()
    main_total = main_busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
        rest = frames[1:]
        leaf = rest[-1] if rest else ""
        idle = any(m in leaf for m in IDLE_LEAVES)
        per_thread[thread] += count
        if not idle:
            busy_thread[thread] += count
        if thread == "MainThread":
            main_total += count
            if not idle:
                main_busy += count
                main_leaf[short(leaf)] += count
                for f in set(map(short, rest)):
                    if not any(m in f for m in PLUMBING):
                        main_incl[f] += count
    if not main_total:
        return {"main_thread_samples": 0}

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / main_total, 1)) for k, v in c.most_common(top)]

    # Threads of one kind (e.g. the executor's ThreadPoolExecutor-0_0.._n) summed.
    kinds: Counter[str] = Counter()
    kinds_busy: Counter[str] = Counter()
    for name, n in per_thread.items():
        kind = name.rstrip("0123456789_").rstrip("-") or name
        kinds[kind] += n
        kinds_busy[kind] += busy_thread[name]
    return {
        "main_thread_samples": main_total,
        "main_thread_busy_pct": round(100.0 * main_busy / main_total, 1),
        "main_top_self_pct": pct(main_leaf),
        "main_top_inclusive_pct": pct(main_incl),
        # busy samples of each kind of thread, in % of the main thread's sample count (one
        # thread's worth of time): 100 means one core's worth of that kind of work
        "threads_busy_pct_of_one": {
            k: round(100.0 * kinds_busy[k] / main_total, 1) for k, _ in kinds.most_common()
        },
    }
