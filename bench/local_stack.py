"""A throwaway deployment for a benchmark: nats-server, redis-server and the five services as real
processes on this machine, started with progress lines and always stopped on the way out.

The test helpers (tests/procs.py) start the services; NATS and Redis are started here through the
same scripts/infra.py functions, but the process handle is recorded *before* waiting for the
server to answer, so a Ctrl-C during start-up still stops it (tests/procs.py's start_local_*
only returns the handle once the server answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from tests.procs import REPO, ServiceProc, ServiceProcs, free_port, infra

# The order tests/stack.py uses; all five are started at once and waited for together.
KINDS = ("session", "llm", "asr", "tts", "gateway")


class LocalStack:
    def __init__(
        self,
        work_dir: Path,
        log_dir: Path,
        say: Callable[[str], None],
        env: dict[str, dict[str, str]] | None = None,
        gateways: int = 1,
    ) -> None:
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.say = say
        # Extra environment per service kind, e.g. {"llm": {"VA_ENGINE": "fake"}}.
        self.env = env or {}
        # Another command for a kind (an experimental variant of a service), e.g.
        # {"gateway": [sys.executable, "-m", "my_gateway_variant"]}.
        self.argv: dict[str, list[str]] = {}
        self.nats_url = ""
        self.nats_monitor_url = ""  # nats-server's HTTP monitoring (/connz?subs=1)
        self.redis_url = ""
        self.servers: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.procs: ServiceProcs | None = None
        self.by_kind: dict[str, ServiceProc] = {}
        # More than one gateway: the others ("gateway-2", ...) and nginx in front of them all
        # (deploy/nginx/gateways.conf: a session's requests always reach the same gateway).
        self.gateways = gateways
        self.extra_gateways: dict[str, ServiceProc] = {}
        self.front: subprocess.Popen[bytes] | None = None
        self.front_url = ""

    @property
    def base_url(self) -> str:
        return self.front_url or self.by_kind["gateway"].url

    @property
    def gateway_procs(self) -> dict[str, ServiceProc]:
        return {"gateway": self.by_kind["gateway"], **self.extra_gateways}

    # -- start -----------------------------------------------------------------------------------
    def start(self, ready_timeout: float = 300.0) -> None:
        self.start_servers()
        self.start_services(ready_timeout)

    def start_servers(self) -> None:
        """nats-server and redis-server only (a benchmark may measure the bare bus first)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        monitor = free_port()
        self.nats_monitor_url = f"http://127.0.0.1:{monitor}"
        self.nats_url = self._server(
            "nats-server",
            lambda port: infra.start_nats(
                "127.0.0.1",
                port,
                self.work_dir / "jetstream",
                self.log_dir / "nats-server.log",
                monitor_port=monitor,
            ),
            "nats://127.0.0.1:{port}",
            infra.nats_info,
        )
        self.redis_url = self._server(
            "redis-server",
            lambda port: infra.start_redis(
                "127.0.0.1",
                port,
                self.work_dir / "redis",
                self.log_dir / "redis-server.log",
                persistent=False,
            ),
            "redis://127.0.0.1:{port}/0",
            infra.redis_answers,
        )

    def start_services(self, ready_timeout: float = 300.0) -> None:
        """The five services, started at once and waited for together."""
        if not self.nats_url:
            self.start_servers()
        # The services' own default model unless `env` names one (not the tests' fast one).
        self.procs = ServiceProcs(
            self.nats_url, self.redis_url, log_dir=self.log_dir, llm_model=None
        )
        t0 = time.monotonic()
        for kind in KINDS:
            sp = self.procs.start(
                kind, env=self.env.get(kind), argv=self.argv.get(kind), wait_ready=False
            )
            self.by_kind[kind] = sp
            self.say(
                f"[setup] services.{kind} started (pid {sp.pid}, port {sp.port}, "
                f"log {shown(sp.log)})"
            )
        for i in range(2, self.gateways + 1):
            sp = self.procs.start("gateway", env=self.env.get("gateway"), wait_ready=False)
            self.extra_gateways[f"gateway-{i}"] = sp
            self.say(f"[setup] gateway {i} started (pid {sp.pid}, port {sp.port})")
        waiting = {**self.by_kind, **self.extra_gateways}
        last_note = time.monotonic()
        while waiting:
            for kind, sp in list(waiting.items()):
                if sp.ready():
                    self.say(f"[setup] services.{kind} ready after {time.monotonic() - t0:.1f} s")
                    del waiting[kind]
                elif not sp.alive():
                    raise RuntimeError(
                        f"services.{kind} exited with code {sp.proc.returncode}; "
                        f"last lines of {sp.log}:\n{sp.log_tail()}"
                    )
            if time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"not ready within {ready_timeout:.0f} s: {sorted(waiting)}")
            if waiting and time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                self.say(
                    f"[setup] still loading: {', '.join(sorted(waiting))} "
                    f"({time.monotonic() - t0:.0f} s, load {load_text()})"
                )
            time.sleep(0.2)
        if self.gateways > 1:
            self._start_front()

    def _start_front(self) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.log_dir / "nginx.log"
        self.front = infra.start_gateway_front(
            port,
            [sp.port for sp in self.gateway_procs.values()],
            self.work_dir / "nginx",
            log,
        )
        infra.wait_until(lambda: infra.http_answers(f"{url}/readyz"), "nginx", 30, self.front, log)
        self.front_url = url
        self.say(
            f"[setup] nginx on {url} (pid {self.front.pid}) in front of {self.gateways} "
            "gateways, sessions hashed on their id"
        )

    def _server(
        self,
        name: str,
        spawn: Callable[[int], subprocess.Popen[bytes]],
        url_template: str,
        answers: Callable[[str], Any],
    ) -> str:
        port = free_port()
        url = url_template.format(port=port)
        proc = spawn(port)
        self.servers.append((name, proc))
        log = self.log_dir / f"{name}.log"
        infra.wait_until(lambda: bool(answers(url)), name, 30, proc, log)
        self.say(f"[setup] {name} on {url} (pid {proc.pid})")
        return url

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Services first (they drain their NATS connection), then Redis and NATS."""
        self.stop_services()
        for name, proc in reversed(self.servers):
            if proc.poll() is None:
                self.say(f"[cleanup] stopping {name}")
                infra.stop_pid(proc.pid, timeout=5.0, group=True)
            with contextlib.suppress(Exception):
                proc.wait(1)
        self.servers.clear()

    def stop_services(self) -> None:
        """The five services only (NATS and Redis stay for the next set of services)."""
        if self.front is not None:
            infra.stop_pid(self.front.pid, timeout=5.0, group=True)
            self.front, self.front_url = None, ""
        if self.procs is not None and self.procs.procs:
            self.say("[cleanup] stopping the services")
            self.procs.stop_all(timeout=10.0)
        self.by_kind.clear()
        self.extra_gateways.clear()

    def pids(self) -> dict[str, int]:
        """Process ids by name: the five services (and more gateways), nats-server,
        redis-server (and nginx)."""
        out = {kind: sp.pid for kind, sp in self.by_kind.items()}
        out.update({name: sp.pid for name, sp in self.extra_gateways.items()})
        out.update({name: proc.pid for name, proc in self.servers})
        if self.front is not None:
            out["nginx"] = self.front.pid
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each service process has used so far."""
        out: dict[str, float] = {}
        for kind, sp in self.by_kind.items():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(sp.pid).cpu_times()
                out[kind] = round(t.user + t.system, 2)
        return out

    def cpu_split(self) -> tuple[float, float]:
        """(CPU seconds the whole machine has been busy, CPU seconds of this benchmark: its own
        process, the services, NATS and Redis), both since boot; the difference over a turn is
        what other programs took from it."""
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq  # guest time is inside user
        pids = [os.getpid(), *self.pids().values()]
        ours = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                pt = psutil.Process(pid).cpu_times()
                ours += pt.user + pt.system
        return busy, ours


class Helper:
    """A benchmark's own helper process (`python -m bench.<module> ...`) that prints `ready` on
    a line of its own when it is; its other output goes on to `say` (prefixed) as it comes."""

    def __init__(
        self, name: str, args: list[str], say: Callable[[str], None], stdin: bool = False
    ) -> None:
        self.name = name
        self.say = say
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,  # a Ctrl-C reaches it through stop(), once
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"{name}-out")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            if line == "ready":
                self._ready.set()
            elif line:
                self.say(f"  [{self.name}] {line}")

    def send(self, line: str) -> None:
        """A line on its standard input (started with `stdin=True`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}: "
                    + " | ".join(self.lines[-10:])
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s")

    def wait(self, timeout: float) -> int | None:
        """Wait for it to end by itself (None if it is still running after `timeout`)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (it writes its results and exits), SIGKILL after `timeout` s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(2.0)
        return self.proc.returncode


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt in the synchronous parts (start-up,
    clean-up), so `finally` blocks run; restores the previous handlers afterwards. SIGINT is set
    explicitly: a shell starts a background job with SIGINT ignored, and Python then installs no
    handler of its own. While the event loop runs, `cancel_on_signals` takes over."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, raise_interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


async def cancel_on_signals(main: Coroutine[Any, Any, None]) -> str | None:
    """Run `main`; a stop signal cancels it (cleanly, at an await) instead of raising
    KeyboardInterrupt wherever the loop happens to be: an exception raised inside one of aiortc's
    tasks can be lost there, and the run goes on. Returns the signal's name, or None."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    got: list[str] = []

    def stop(sig: signal.Signals) -> None:
        got.append(sig.name)
        task.cancel()

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        loop.add_signal_handler(s, stop, s)
    try:
        await task
    except asyncio.CancelledError:
        if not got:
            raise
    finally:
        for s, handler in previous.items():
            loop.remove_signal_handler(s)
            signal.signal(s, handler)
    return got[0] if got else None


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C must not leave processes behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# -- machine description ---------------------------------------------------------------------------
def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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


# -- what every benchmark script shares -----------------------------------------------------------
# Fake engines for asr, llm and tts (instant): what is left is transport, VAD, bus and Python.
FAKE_ENGINES: dict[str, dict[str, str]] = {k: {"VA_ENGINE": "fake"} for k in ("asr", "llm", "tts")}
# Many sessions from one address in a few minutes: the gateway's per-address limits would refuse.
LOAD_GATEWAY_ENV = {"VA_SESSION_CREATE_RATE": "100000/minute", "VA_WS_MESSAGE_RATE": "1000/second"}


def say(line: str) -> None:
    """A progress or result line, at once (the output is often piped to a log)."""
    print(line, flush=True)


def arg_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m bench.<module>` options, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{module}",
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
