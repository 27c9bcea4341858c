"""Test helpers that run real processes: free ports, throwaway NATS/Redis servers, and services.

`ServiceProcs.start("llm", env={...})` runs `python -m services.llm` the way scripts/run.sh does
(VA_NATS_URL, VA_REDIS_URL, VA_HTTP_PORT set), logs to tests/artifacts/logs/, and returns once
GET /readyz answers 200 — or fails with the tail of the log if the process dies or is not ready in
time. `stop_all()` (the fixtures call it at teardown) sends SIGTERM, then SIGKILL after 10 s.

The NATS/Redis start-up and probes come from scripts/infra.py, shared with the run command.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
LOG_DIR = ARTIFACTS / "logs"


def _load_infra() -> ModuleType:
    spec = importlib.util.spec_from_file_location("va_infra", REPO / "scripts" / "infra.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["va_infra"] = module
    spec.loader.exec_module(module)
    return module


infra = _load_infra()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice; tiny race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    return str(infra.log_tail(path, lines))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80] or "test"


# --- throwaway servers -------------------------------------------------------------------------


@dataclass
class LocalServer:
    """A nats-server or redis-server started for this test run."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_local_nats(data_dir: Path, log_dir: Path = LOG_DIR) -> LocalServer:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    log = log_dir / "nats-server.log"
    proc = infra.start_nats("127.0.0.1", port, data_dir / "jetstream", log)
    infra.wait_until(lambda: infra.nats_info(url) is not None, "nats-server", 30, proc, log)
    return LocalServer("nats-server", url, proc, log)


def start_local_redis(data_dir: Path, log_dir: Path = LOG_DIR) -> LocalServer:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = log_dir / "redis-server.log"
    proc = infra.start_redis("127.0.0.1", port, data_dir / "redis", log, persistent=False)
    infra.wait_until(lambda: infra.redis_answers(url), "redis-server", 30, proc, log)
    return LocalServer("redis-server", url, proc, log)


# --- services ----------------------------------------------------------------------------------


class ServiceError(AssertionError):
    """A service did not come up; the message carries the tail of its log."""


@dataclass
class ServiceProc:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the service process (SIGKILL by default: a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def ready(self) -> bool:
        return bool(infra.http_answers(f"{self.url}/readyz", timeout=2))

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL (to its whole process group) after `timeout` s."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


# The model of the tests' llm services: SmolLM2 answers badly but fast, and most tests check
# the pipeline, not the answer. Tests of answers (test_voice_e2e.py, test_answers.py) ask for the
# default profile by name.
TEST_LLM_MODEL = os.environ.get("VA_TEST_LLM_MODEL", "smollm2-135m")


class ServiceProcs:
    """Starts services as real processes against the test run's NATS and Redis."""

    def __init__(
        self,
        nats_url: str,
        redis_url: str,
        log_dir: Path = LOG_DIR,
        prefix: str = "",
        llm_model: str | None = TEST_LLM_MODEL,
    ) -> None:
        self.nats_url = nats_url
        self.llm_model = llm_model  # VA_MODEL of every llm started without one in `env`
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.prefix = _safe(prefix) if prefix else ""
        self.procs: list[ServiceProc] = []

    def start(
        self,
        kind: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 120.0,
        argv: list[str] | None = None,
        wait_ready: bool = True,
    ) -> ServiceProc:
        """Run `python -m services.<kind>` and wait until its /readyz answers 200.

        `env` adds to (and overrides) the settings above; `argv` replaces the command (the
        harness's own tests run a stand-in service that way).
        """
        port = port or free_port()
        child_env = dict(os.environ)
        child_env.update(
            VA_NATS_URL=self.nats_url,
            NATS_URL=self.nats_url,
            VA_REDIS_URL=self.redis_url,
            REDIS_URL=self.redis_url,
            VA_HTTP_HOST="127.0.0.1",
            VA_HTTP_PORT=str(port),
            PYTHONUNBUFFERED="1",
        )
        if kind == "llm" and self.llm_model:
            child_env["VA_MODEL"] = self.llm_model
        child_env.update(env or {})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = "-".join(p for p in (self.prefix, kind, str(port)) if p)
        log = self.log_dir / f"{stem}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv or [sys.executable, "-m", f"services.{kind}"],
                cwd=REPO,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        sp = ServiceProc(kind, port, proc, log, child_env)
        self.procs.append(sp)
        if wait_ready:
            self.wait_ready(sp, timeout)
        return sp

    async def astart(self, kind: str, **kwargs: object) -> ServiceProc:
        """`start` for async tests: waits in a thread, so the test's event loop keeps running."""
        return await asyncio.to_thread(self.start, kind, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, sp: ServiceProc, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not sp.ready():
            if sp.proc.poll() is not None:
                raise ServiceError(
                    f"services.{sp.kind} exited with code {sp.proc.returncode} before it was "
                    f"ready; last lines of {sp.log}:\n{sp.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"services.{sp.kind} not ready within {timeout:.0f} s on port {sp.port}; "
                    f"last lines of {sp.log}:\n{sp.log_tail()}"
                )
            time.sleep(0.1)

    def stop_all(self, timeout: float = 10.0) -> None:
        # SIGTERM to all first, so they drain in parallel; then wait for each.
        for sp in self.procs:
            if sp.alive():
                sp.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for sp in self.procs:
            try:
                sp.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sp.proc.pid, signal.SIGKILL)
                sp.proc.wait()
        self.procs.clear()
