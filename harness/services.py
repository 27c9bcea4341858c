"""The services as real processes, as tests and benchmarks run them.

`ServiceProcs.start("llm", env={...})` runs `python -m services.llm` the way scripts/run.sh does
(VA_NATS_URL, VA_REDIS_URL, VA_HTTP_PORT set), logs to tests/artifacts/logs/ (or the log folder
given), and returns once GET /readyz answers 200 — or fails with the tail of the log if the
process dies or is not ready in time. `stop_all()` sends SIGTERM, then SIGKILL after 10 s.
`start_stack` starts the five (replicas as asked), each waited for in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import LOG_DIR, REPO
from .servers import free_port, infra, log_tail, stop_process

# The order the five are started in (a stack waits for each; the benchmarks' for all together).
KINDS = ("session", "llm", "asr", "tts", "gateway")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80] or "test"


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
        return stop_process(self.proc, timeout)


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


class Stack:
    """The services started so far, by kind (replicas in start order)."""

    def __init__(self, procs: ServiceProcs) -> None:
        self.procs = procs
        self.by_kind: dict[str, list[ServiceProc]] = {k: [] for k in KINDS}

    @property
    def base_url(self) -> str:
        return self.by_kind["gateway"][0].url

    def start(self, kind: str, env: dict[str, str] | None = None, **kw: Any) -> ServiceProc:
        sp = self.procs.start(kind, env=env, **kw)
        self.by_kind[kind].append(sp)
        return sp

    def replica(self, worker_id: str) -> ServiceProc:
        """The process whose worker id (kind-host-pid-xxxx) is `worker_id`."""
        pid = int(worker_id.split("-")[-2])
        for procs in self.by_kind.values():
            for sp in procs:
                if sp.pid == pid:
                    return sp
        raise KeyError(worker_id)


def start_stack(
    procs: ServiceProcs,
    replicas: dict[str, int] | None = None,
    env: dict[str, dict[str, str]] | None = None,
) -> Stack:
    """The five services (the embedded defaults unless `env` says otherwise), each ready before
    the next starts."""
    stack = Stack(procs)
    replicas = replicas or {}
    env = env or {}
    for kind in KINDS:
        for _ in range(replicas.get(kind, 1)):
            stack.start(kind, env=env.get(kind))
    return stack
