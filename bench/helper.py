"""A benchmark's own helper process (the NATS tap, the bus peer, simulated clients): started as
`python -m bench.<module> ...`, ready when it prints `ready`, stopped with SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from harness.paths import REPO
from harness.servers import stop_process


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
        code = stop_process(self.proc, timeout)
        self._reader.join(2.0)
        return code
