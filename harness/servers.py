"""Throwaway servers: free ports, and a nats-server or redis-server started on one of them.

The NATS/Redis start-up and probes come from scripts/infra.py, shared with the run command. A
server is stopped again when waiting for it to answer fails or is interrupted (Ctrl-C during
start-up leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .paths import LOG_DIR, REPO


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


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL to its whole process group (each process here starts its own
    session) after `timeout` s; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@dataclass
class LocalServer:
    """A nats-server or redis-server started for this run."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process(self.proc, 10.0)


def _started(
    name: str, url: str, proc: subprocess.Popen[bytes], log: Path, answers: Callable[[str], Any]
) -> LocalServer:
    """Wait (30 s at most) until `url` answers; stop the server if it never does."""
    server = LocalServer(name, url, proc, log)
    try:
        infra.wait_until(lambda: bool(answers(url)), name, 30, proc, log)
    except BaseException:
        infra.stop_pid(proc.pid, timeout=5.0, group=True)
        raise
    return server


def start_local_nats(
    data_dir: Path, log_dir: Path = LOG_DIR, monitor_port: int | None = None
) -> LocalServer:
    """nats-server -js on a free port, JetStream data in `data_dir`/jetstream; with
    `monitor_port`, its HTTP monitoring (/connz) there."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    log = log_dir / "nats-server.log"
    proc = infra.start_nats(
        "127.0.0.1", port, data_dir / "jetstream", log, monitor_port=monitor_port
    )
    return _started("nats-server", url, proc, log, infra.nats_info)


def start_local_redis(data_dir: Path, log_dir: Path = LOG_DIR) -> LocalServer:
    """redis-server on a free port, nothing persisted."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = log_dir / "redis-server.log"
    proc = infra.start_redis("127.0.0.1", port, data_dir / "redis", log, persistent=False)
    return _started("redis-server", url, proc, log, infra.redis_answers)
