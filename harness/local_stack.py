"""A throwaway deployment, as the benchmarks run it: nats-server, redis-server and the five
services as real processes on this machine (more gateways behind nginx when asked), started with
progress lines and always stopped on the way out; the CPU each has used.

The servers come from `harness.servers` and the services from `harness.services`, as in the
tests; here the five start at once and are waited for together.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .paths import shown
from .servers import (
    LocalServer,
    NatsCluster,
    RedisSentinelGroup,
    free_port,
    infra,
    start_local_nats,
    start_local_redis,
    start_nats_cluster,
    start_redis_sentinel_group,
)
from .services import KINDS, ServiceProc, ServiceProcs

# Fake engines for asr, llm and tts (instant): what is left is transport, VAD, bus and Python.
FAKE_ENGINES: dict[str, dict[str, str]] = {k: {"VA_ENGINE": "fake"} for k in ("asr", "llm", "tts")}
# Many sessions from one address in a few minutes: the gateway's per-address limits would refuse.
LOAD_GATEWAY_ENV = {"VA_SESSION_CREATE_RATE": "100000/minute", "VA_WS_MESSAGE_RATE": "1000/second"}


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (guest time is inside user)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) these processes have used so far (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def load_text() -> str:
    """The load averages, as printed in progress lines."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class LocalStack:
    def __init__(
        self,
        work_dir: Path,
        log_dir: Path,
        say: Callable[[str], None],
        env: dict[str, dict[str, str]] | None = None,
        gateways: int = 1,
        nats_servers: int = 1,
        redis_sentinel: bool = False,
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
        self.servers: list[LocalServer] = []
        self.procs: ServiceProcs | None = None
        self.by_kind: dict[str, ServiceProc] = {}
        # More than one gateway: the others ("gateway-2", ...) and nginx in front of them all
        # (deploy/nginx/gateways.conf: a session's requests always reach the same gateway).
        self.gateways = gateways
        self.extra_gateways: dict[str, ServiceProc] = {}
        self.front: subprocess.Popen[bytes] | None = None
        self.front_url = ""
        # More than one NATS server: a cluster on loopback, the services given every URL.
        self.nats_servers = nats_servers
        self.cluster: NatsCluster | None = None
        # Redis as a primary, a replica and three sentinels, which the session service follows.
        self.redis_sentinel = redis_sentinel
        self.sentinels: RedisSentinelGroup | None = None

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
        if self.nats_servers > 1:
            self.cluster = start_nats_cluster(self.nats_servers, self.log_dir)
            for i, server in enumerate(self.cluster.servers):
                self._up(server)
                if i == 0:
                    self.nats_monitor_url = f"http://127.0.0.1:{self.cluster.monitor_ports[0]}"
            self.nats_url = self.cluster.url
        else:
            monitor = free_port()
            self.nats_monitor_url = f"http://127.0.0.1:{monitor}"
            self.nats_url = self._up(start_local_nats(self.work_dir, self.log_dir, monitor))
        if self.redis_sentinel:
            self.sentinels = start_redis_sentinel_group(self.work_dir, self.log_dir)
            for server in [*self.sentinels.nodes, *self.sentinels.sentinels]:
                self._up(server)
            self.redis_url = self.sentinels.nodes[0].url
            session = self.env.setdefault("session", {})
            session["VA_REDIS_SENTINELS"] = self.sentinels.sentinel_list
        else:
            self.redis_url = self._up(start_local_redis(self.work_dir, self.log_dir))

    def _up(self, server: LocalServer) -> str:
        self.servers.append(server)
        self.say(f"[setup] {server.name} on {server.url} (pid {server.proc.pid})")
        return server.url

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

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Services first (they drain their NATS connection), then Redis and NATS."""
        self.stop_services()
        for server in reversed(self.servers):
            if server.proc.poll() is None:
                self.say(f"[cleanup] stopping {server.name}")
                infra.stop_pid(server.proc.pid, timeout=5.0, group=True)
            with contextlib.suppress(Exception):
                server.proc.wait(1)
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
        out.update({server.name: server.proc.pid for server in self.servers})
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
        return machine_busy_s(), cpu_s([os.getpid(), *self.pids().values()])
