"""Shared fixtures: a real NATS server (with JetStream), a real Redis, and service processes.

Where the servers come from (VA_TEST_INFRA=auto, the default, picks the first that applies):

1. docker — a Docker engine answers: testcontainers' NatsContainer(jetstream=True) and
   RedisContainer, thrown away after the run (falls through to 3 if they fail to start);
2. env    — NATS_URL / REDIS_URL (or VA_NATS_URL / VA_REDIS_URL) are set: those servers. Redis is
   then shared with whoever else uses it, so the tests use only database VA_TEST_REDIS_DB (default
   9) whatever the URL says, and flush only that one;
3. local  — nats-server -js and redis-server started here on free ports, data in a temp dir,
   stopped at the end. Always this inside scripts/netns-run (VA_NETNS=1), where the host's servers
   and Docker's mapped ports are out of reach.

VA_TEST_INFRA=docker|env|local forces one. Fixtures:

- `nats_url`, `redis_url` (session): URLs of those servers;
- `clean_redis` (function): `redis_url`, with its database flushed first;
- `procs` (function) / `procs_module` (module): a `ServiceProcs` whose `start(kind, env=...,
  port=...)` runs `python -m services.<kind>` against them and waits for /readyz; every process
  started is stopped at teardown (SIGTERM, SIGKILL after 10 s). Logs: tests/artifacts/logs/.

Tests marked `webrtc` are skipped unless they run inside scripts/netns-run (scripts/test.sh
runs the whole suite there when it can).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from harness.paths import LOG_DIR
from harness.servers import free_port, start_local_nats, start_local_redis
from harness.services import ServiceProcs

__all__ = ["free_port"]

TEST_REDIS_DB = int(os.environ.get("VA_TEST_REDIS_DB", "9"))


def _env_url(name: str) -> str | None:
    return os.environ.get(f"VA_{name}") or os.environ.get(name) or None


@functools.cache
def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@functools.cache
def infra_mode() -> str:
    forced = os.environ.get("VA_TEST_INFRA", "auto")
    if forced not in ("auto", "docker", "env", "local"):
        raise pytest.UsageError(f"VA_TEST_INFRA={forced!r}: use auto, docker, env or local")
    if forced != "auto":
        return forced
    if os.environ.get("VA_NETNS") == "1":
        return "local"
    if _docker_answers():
        return "docker"
    if _env_url("NATS_URL") or _env_url("REDIS_URL"):
        return "env"
    return "local"


def pytest_report_header(config: pytest.Config) -> str:
    where = {
        "docker": "testcontainers (Docker)",
        "env": f"servers from NATS_URL / REDIS_URL (Redis: only db {TEST_REDIS_DB})",
        "local": "nats-server + redis-server started for this run",
    }[infra_mode()]
    netns = ", inside scripts/netns-run" if os.environ.get("VA_NETNS") == "1" else ""
    return f"infra: {where}{netns}; logs in {LOG_DIR}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VA_NETNS") == "1":
        return
    skip = pytest.mark.skip(reason="webrtc: needs a private network namespace (scripts/netns-run)")
    for item in items:
        if "webrtc" in item.keywords:
            item.add_marker(skip)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _flushdb(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mode = infra_mode()
    if mode == "docker":
        try:
            from testcontainers.community.nats import NatsContainer

            container = NatsContainer(jetstream=True)
            container.start()
        except Exception as exc:
            if os.environ.get("VA_TEST_INFRA") == "docker":
                raise
            warnings.warn(f"NATS container failed ({exc}); starting nats-server", stacklevel=1)
        else:
            try:
                yield container.nats_uri()
            finally:
                container.stop()
            return
    elif mode == "env":
        url = _env_url("NATS_URL")
        if url:
            yield url
            return
    server = start_local_nats(Path(tmp_path_factory.mktemp("nats")))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mode = infra_mode()
    if mode == "docker":
        try:
            from testcontainers.community.redis import RedisContainer

            container = RedisContainer()
            container.start()
        except Exception as exc:
            if os.environ.get("VA_TEST_INFRA") == "docker":
                raise
            warnings.warn(f"Redis container failed ({exc}); starting redis-server", stacklevel=1)
        else:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(container.port)
            try:
                yield f"redis://{host}:{port}/0"
            finally:
                container.stop()
            return
    elif mode == "env":
        url = _env_url("REDIS_URL")
        if url:
            # A shared server: our own database only, emptied of what an earlier run left.
            url = _with_db(url, TEST_REDIS_DB)
            _flushdb(url)
            yield url
            return
    server = start_local_redis(Path(tmp_path_factory.mktemp("redis")))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """`redis_url` with its database emptied first (it is the tests' own: see the module doc)."""
    _flushdb(redis_url)
    return redis_url


@pytest.fixture
def procs(nats_url: str, redis_url: str, request: pytest.FixtureRequest) -> Iterator[ServiceProcs]:
    sp = ServiceProcs(nats_url, redis_url, prefix=request.node.name)
    try:
        yield sp
    finally:
        sp.stop_all()


@pytest.fixture(scope="module")
def procs_module(
    nats_url: str, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[ServiceProcs]:
    sp = ServiceProcs(nats_url, redis_url, prefix=Path(str(request.node.name)).stem)
    try:
        yield sp
    finally:
        sp.stop_all()
