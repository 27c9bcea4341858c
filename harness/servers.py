"""Throwaway servers: free ports, and a nats-server or redis-server started on one of them.

The NATS/Redis start-up and probes come from scripts/infra.py, shared with the run command. A
server is stopped again when waiting for it to answer fails or is interrupted (Ctrl-C during
start-up leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

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

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def stop(self) -> None:
        stop_process(self.proc, 10.0)

    def kill(self) -> None:
        """SIGKILL its process group: a crash, nothing drained or written on the way out."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


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


@dataclass
class NatsCluster:
    """nats-servers clustered on loopback (core NATS routes; the services use no JetStream)."""

    servers: list[LocalServer]
    monitor_ports: list[int]

    @property
    def url(self) -> str:
        """Every server, as the services take it (VA_NATS_URL, a comma list)."""
        return ",".join(s.url for s in self.servers)

    def serving(self, client_prefix: str) -> int | None:
        """Which live server a client whose connection name starts with `client_prefix` (a
        worker id: `gateway-`, `session-`) is connected to."""
        for i, (server, port) in enumerate(zip(self.servers, self.monitor_ports, strict=True)):
            if server.proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/connz?limit=4096", timeout=2
                ) as resp:
                    conns = json.load(resp).get("connections") or []
            except OSError:
                continue
            if any(str(c.get("name", "")).startswith(client_prefix) for c in conns):
                return i
        return None

    def routed(self) -> bool:
        """Every live server has a route to every other live one."""
        live = [
            p
            for s, p in zip(self.servers, self.monitor_ports, strict=True)
            if s.proc.poll() is None
        ]
        for port in live:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/routez", timeout=2) as resp:
                    if int(json.load(resp).get("num_routes", 0)) < len(live) - 1:
                        return False
            except OSError:
                return False
        return True

    def kill(self, i: int) -> None:
        """SIGKILL server `i`: a crash, nothing drained."""
        self.servers[i].kill()

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def start_nats_cluster(n: int = 3, log_dir: Path = LOG_DIR, name: str = "va") -> NatsCluster:
    """`n` nats-servers on free loopback ports, routed to each other in one cluster, each with
    its HTTP monitoring (/connz, /routez); returns once every route is up."""
    ports = [free_port() for _ in range(n)]
    cluster_ports = [free_port() for _ in range(n)]
    monitors = [free_port() for _ in range(n)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    servers: list[LocalServer] = []
    try:
        for i in range(n):
            log = log_dir / f"nats-{name}-{i}.log"
            cmd = [
                infra.find_nats_server(),
                "-n", f"{name}-{i}",
                "-a", "127.0.0.1",
                "-p", str(ports[i]),
                "-m", str(monitors[i]),
                "--cluster_name", name,
                "--cluster", f"nats://127.0.0.1:{cluster_ports[i]}",
                "--routes", routes,
            ]  # fmt: skip
            proc = infra._spawn(cmd, log)
            servers.append(
                _started(
                    f"nats-{name}-{i}", f"nats://127.0.0.1:{ports[i]}", proc, log, infra.nats_info
                )
            )
        cluster = NatsCluster(servers, monitors)
        infra.wait_until(cluster.routed, "nats cluster routes", 30)
        return cluster
    except BaseException:
        for s in servers:
            s.stop()
        raise


@dataclass
class RedisSentinelGroup:
    """A Redis primary, its replicas and the sentinels that watch them (Sentinel's own failover:
    a primary down for `down_after_ms` is replaced by a replica the sentinels promote)."""

    nodes: list[LocalServer]  # the primary first, then the replicas (roles change on failover)
    sentinels: list[LocalServer]
    master: str = "mymaster"

    @property
    def sentinel_list(self) -> str:
        """VA_REDIS_SENTINELS: host:port, comma list."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels name it now (None: none knows one)."""
        import redis

        for s in self.sentinels:
            if s.proc.poll() is not None:
                continue
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis.from_url(s.url, socket_timeout=1, decode_responses=True)
                addr = client.sentinel_get_master_addr_by_name(self.master)
                client.close()
                if isinstance(addr, (tuple, list)) and addr:
                    return int(addr[1])
        return None

    def primary(self) -> LocalServer:
        port = self.primary_port()
        return next(n for n in self.nodes if n.port == port)

    def ready(self) -> bool:
        """Every replica is in sync with the primary and every sentinel knows the others."""
        import redis

        try:
            primary = redis.Redis.from_url(self.nodes[0].url, socket_timeout=1)
            info = primary.info("replication")
            primary.close()
            synced = sum(
                1
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
            if synced < len(self.nodes) - 1:
                return False
            for s in self.sentinels:
                client = redis.Redis.from_url(s.url, socket_timeout=1)
                peers = client.sentinel_sentinels(self.master)
                client.close()
                if not isinstance(peers, list) or len(peers) < len(self.sentinels) - 1:
                    return False
        except redis.RedisError:
            return False
        return True

    def stop(self) -> None:
        for s in [*self.sentinels, *self.nodes]:
            s.stop()


def start_redis_sentinel_group(
    data_dir: Path,
    log_dir: Path = LOG_DIR,
    replicas: int = 1,
    sentinels: int = 3,
    down_after_ms: int = 1000,
) -> RedisSentinelGroup:
    """A primary and `replicas` replicas (append-only files in `data_dir`) on free loopback
    ports, and `sentinels` sentinels (quorum: a majority) monitoring them; returns once every
    replica is in sync and the sentinels know each other."""
    started: list[LocalServer] = []
    try:
        nodes: list[LocalServer] = []
        for i in range(1 + replicas):
            port = free_port()
            url = f"redis://127.0.0.1:{port}/0"
            log = log_dir / f"redis-node-{i}.log"
            folder = data_dir / f"redis-node-{i}"
            cmd = [
                infra.find_redis_server(),
                "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                "--save", "", "--appendonly", "yes", "--daemonize", "no",
            ]  # fmt: skip
            if nodes:
                cmd += ["--replicaof", "127.0.0.1", str(nodes[0].port)]
            folder.mkdir(parents=True, exist_ok=True)
            node = _started(
                f"redis-node-{i}", url, infra._spawn(cmd, log), log, infra.redis_answers
            )
            nodes.append(node)
            started.append(node)
        primary_port = nodes[0].port
        watchers: list[LocalServer] = []
        for i in range(sentinels):
            port = free_port()
            conf = data_dir / f"sentinel-{i}.conf"  # sentinel rewrites it: its own file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {data_dir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {primary_port} {sentinels // 2 + 1}\n"
                f"sentinel down-after-milliseconds mymaster {down_after_ms}\n"
                "sentinel failover-timeout mymaster 10000\n"
                "sentinel parallel-syncs mymaster 1\n"
            )
            log = log_dir / f"redis-sentinel-{i}.log"
            proc = infra._spawn([infra.find_redis_server(), str(conf), "--sentinel"], log)
            url = f"redis://127.0.0.1:{port}"
            watcher = _started(f"redis-sentinel-{i}", url, proc, log, infra.redis_answers)
            watchers.append(watcher)
            started.append(watcher)
        group = RedisSentinelGroup(nodes, watchers)
        infra.wait_until(group.ready, "redis replicas and sentinels", 60)
        return group
    except BaseException:
        for s in started:
            s.stop()
        raise
