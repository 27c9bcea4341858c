"""The test harness itself works: every integration test stands on it.

Invariants: the `nats_url` fixture is a real NATS server with JetStream (a message published is
received; a stream stores a message); `redis_url` is a real Redis that keeps what is set and is
never the shared server's default database; `procs` starts a service process, waits for its
/readyz, reports one that dies with its log, and stops what it started; scripts/netns-run gives a
command a namespace with the veth addresses up and connected, and out of reach of the host.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest
import redis.asyncio as aioredis

from harness.paths import REPO
from harness.servers import free_port
from harness.services import ServiceError, ServiceProcs

NETNS_RUN = REPO / "scripts" / "netns-run"
FAKE_SERVICE = [sys.executable, str(Path(__file__).with_name("fake_service.py"))]


async def test_nats_publish_subscribe_round_trip(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        subject = f"va.test.{uuid.uuid4().hex}"
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"hello")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hello"
    finally:
        await nc.close()


async def test_nats_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()
    name = f"VA_TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"va.test.js.{name}"
    try:
        await js.account_info()  # raises when JetStream is not enabled
        await js.add_stream(name=name, subjects=[subject], max_msgs=10)
        ack = await js.publish(subject, b"stored")
        assert ack.stream == name and ack.seq == 1
        stored = await js.get_msg(name, seq=1)
        assert stored.data == b"stored"
    finally:
        try:
            await js.delete_stream(name)
        except Exception:  # the stream may never have been created
            pass
        await nc.close()


async def test_redis_set_get(clean_redis: str) -> None:
    client = aioredis.from_url(clean_redis, decode_responses=True)
    try:
        key = f"va:test:{uuid.uuid4().hex}"
        await client.set(key, "value", ex=60)
        assert await client.get(key) == "value"
        # The machine's shared Redis (port 6379) is used only through a test database.
        url = urlsplit(clean_redis)
        assert url.path not in ("", "/", "/0") or url.port != 6379, clean_redis
    finally:
        await client.aclose()


def test_service_procs_start_ready_stop(nats_url: str, redis_url: str, tmp_path: Path) -> None:
    sp = ServiceProcs(nats_url, redis_url, log_dir=tmp_path)
    port = free_port()
    svc = sp.start("fake", port=port, argv=FAKE_SERVICE, timeout=60)
    try:
        assert svc.port == port and svc.alive() and svc.ready()
        assert svc.env["VA_NATS_URL"] == nats_url and svc.env["VA_HTTP_PORT"] == str(port)
        svc.kill(signal.SIGTERM)
        assert svc.wait(30) == 0  # a graceful stop on SIGTERM
        assert not svc.ready()
    finally:
        sp.stop_all()


def test_service_procs_reports_a_dying_service(
    nats_url: str, redis_url: str, tmp_path: Path
) -> None:
    sp = ServiceProcs(nats_url, redis_url, log_dir=tmp_path)
    try:
        with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*model file missing"):
            sp.start("fake", argv=FAKE_SERVICE, env={"FAKE_SERVICE_FAIL": "model file missing"})
    finally:
        sp.stop_all()


def test_procs_fixture_stops_at_teardown(procs: ServiceProcs) -> None:
    svc = procs.start("fake", argv=FAKE_SERVICE, timeout=60)
    procs.stop_all()
    assert svc.proc.returncode is not None


def test_netns_run_has_the_veth_addresses_up() -> None:
    probe = textwrap.dedent(
        """
        import os, socket, subprocess
        links = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
        server = socket.create_server(("10.203.0.2", 0))
        client = socket.create_connection(
            ("10.203.0.2", server.getsockname()[1]), timeout=5, source_address=("10.203.0.1", 0)
        )
        conn, peer = server.accept()
        client.sendall(b"ping")
        print("GOT", conn.recv(4).decode(), "FROM", peer[0])
        print("VA_NETNS", os.environ.get("VA_NETNS"), "NATS_URL", os.environ.get("NATS_URL"))
        print(links)
        """
    )
    out = subprocess.run(
        [str(NETNS_RUN), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "NATS_URL": "nats://x:1"},
    )
    assert out.returncode == 0, out.stderr
    assert "GOT ping FROM 10.203.0.1" in out.stdout
    assert "VA_NETNS 1 NATS_URL None" in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("hv")}
    assert "UP" in lines["hv0@hv1"].split() and "10.203.0.1/24" in lines["hv0@hv1"]
    assert "UP" in lines["hv1@hv0"].split() and "10.203.0.2/24" in lines["hv1@hv0"]


def test_netns_run_passes_the_exit_status_through() -> None:
    out = subprocess.run([str(NETNS_RUN), "sh", "-c", "exit 7"], timeout=60)
    assert out.returncode == 7


def test_services_run_on_the_event_loop_that_va_event_loop_names(
    nats_url: str, redis_url: str, tmp_path: Path
) -> None:
    """uvloop by default (a dependency), asyncio's own loop on request; a name that is neither
    stops the service at start with the setting's error."""
    sp = ServiceProcs(nats_url, redis_url, log_dir=tmp_path)
    try:
        for choice, loop in (("auto", "uvloop"), ("asyncio", "asyncio")):
            svc = sp.start("session", env={"VA_EVENT_LOOP": choice}, timeout=60)
            assert f"({loop} event loop)" in svc.log.read_text()
            svc.kill(signal.SIGTERM)
            assert svc.wait(30) == 0
        with pytest.raises(ServiceError, match=r"(?s)exited with code 1.*event_loop"):
            sp.start("session", env={"VA_EVENT_LOOP": "tokio"}, timeout=60)
    finally:
        sp.stop_all()
