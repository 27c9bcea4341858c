"""What the machine does while a benchmark level runs, sampled from threads of the (otherwise
idle) benchmark process: CPU and RSS of every process of interest (psutil), the whole machine's
busy time, and how long the gateway takes to answer GET /healthz. The gateway serves HTTP on the
same event loop as its media and bus work, so that answer time is a direct reading of its event-
loop lag, taken from outside without touching its code.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil


@dataclass
class Sample:
    t: float
    cpu_s: dict[str, float]  # name -> user+system seconds since start (summed over its pids)
    rss: dict[str, int]  # name -> bytes (summed over its pids)
    busy_s: float  # the machine's busy CPU seconds since boot
    steal_s: float  # time the hypervisor gave this VM's CPUs to someone else


@dataclass
class Monitor:
    """`groups()` returns name -> pids; it is called at every sample, so a group can change
    (client processes of a new level)."""

    groups: Callable[[], dict[str, list[int]]]
    health_url: str | None = None
    interval_s: float = 0.5
    health_interval_s: float = 0.1
    samples: list[Sample] = field(default_factory=list)
    health: list[tuple[float, float | None]] = field(default_factory=list)  # (t, ms or None)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._sample_loop, daemon=True, name="monitor")]
        if self.health_url:
            self._threads.append(
                threading.Thread(target=self._health_loop, daemon=True, name="healthz")
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def sample(self) -> Sample:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, pids in self.groups().items():
            c, r = 0.0, 0
            for pid in pids:
                try:
                    p = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                    with p.oneshot():
                        ct = p.cpu_times()
                        c += ct.user + ct.system
                        r += p.memory_info().rss
                except psutil.Error:
                    continue
            cpu[name], rss[name] = c, r
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq
        s = Sample(time.time(), cpu, rss, busy, t.steal)
        self.samples.append(s)
        return s

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def _health_loop(self) -> None:
        assert self.health_url is not None
        parts = urlsplit(self.health_url)
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            t0 = time.perf_counter()
            wall = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(
                        parts.hostname or "127.0.0.1", parts.port, timeout=5
                    )
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                self.health.append((wall, (time.perf_counter() - t0) * 1000.0))
            except (OSError, http.client.HTTPException):
                self.health.append((wall, None))
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
            self._stop.wait(self.health_interval_s)
        if conn is not None:
            conn.close()

    # -- a window's figures ----------------------------------------------------------------------
    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """CPU (% of one core) and peak RSS (MiB) per group over [t0, t1], the machine's busy
        cores, what other programs used, and the gateway's /healthz answer times."""
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        dt = b.t - a.t
        cpu = {
            k: round((b.cpu_s.get(k, 0.0) - a.cpu_s.get(k, 0.0)) / dt * 100.0, 1) for k in b.cpu_s
        }
        rss = {k: round(max(s.rss.get(k, 0) for s in inside) / 2**20, 1) for k in b.rss}
        busy = (b.busy_s - a.busy_s) / dt
        ours = sum(cpu.values()) / 100.0
        health = [ms for t, ms in self.health if t0 <= t <= t1]
        ok = [ms for ms in health if ms is not None]
        return {
            "seconds": round(dt, 1),
            "cpu_pct": cpu,
            "rss_mib": rss,
            "machine_busy_cores": round(busy, 2),
            "others_cores": round(max(0.0, busy - ours), 2),
            "steal_cores": round((b.steal_s - a.steal_s) / dt, 2),
            "healthz_ms": {
                "n": len(health),
                "failed": len(health) - len(ok),
                "p50": round(float(np.percentile(ok, 50)), 1) if ok else None,
                "p99": round(float(np.percentile(ok, 99)), 1) if ok else None,
                "max": round(max(ok), 1) if ok else None,
            },
        }
