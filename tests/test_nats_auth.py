"""Each service connects to NATS with its own credentials and may use only its own subjects.

Invariants protected: nats-server runs the configuration docker-compose and Kubernetes ship
(deploy/nats/nats.conf including auth.conf; only the ports and the store folder are moved for the
test); under it the five services still carry a voice turn end to end (the permission lists are
complete), a service's credentials are refused outside its subjects, and a wrong password is
refused outright.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError

from harness.paths import LOG_DIR
from harness.servers import free_port, infra
from harness.services import KINDS, ServiceProcs, Stack
from tests.test_voice_e2e import PLAIN, clip, voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

NATS_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nats"
PASSWORDS = {kind: f"pw-{kind}-secret" for kind in KINDS}


@pytest.fixture(scope="module")
def auth_nats(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("nats-auth")
    (folder / "auth.conf").write_text((NATS_CONF / "auth.conf").read_text())  # included beside
    shipped = (NATS_CONF / "nats.conf").read_text()
    assert "store_dir: /data" in shipped and "include ./auth.conf" in shipped
    # nats-server refuses -sd beside store_dir: the one edit made to the shipped file
    (folder / "nats.conf").write_text(shipped.replace("/data", str(folder / "data")))
    port, monitor = free_port(), free_port()
    env = dict(
        os.environ,
        POD_NAME="va-nats-test",
        **{f"VA_NATS_PASS_{k.upper()}": v for k, v in PASSWORDS.items()},
    )
    log = LOG_DIR / "nats-auth.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # Flags override the file's listen address and monitoring port.
    cmd = [
        infra.find_nats_server(),
        "-c",
        str(folder / "nats.conf"),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        str(monitor),
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"nats://127.0.0.1:{port}"
    infra.wait_until(lambda: infra.nats_info(url) is not None, "nats-server", 30, proc, log)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def stack(auth_nats, redis_url):  # type: ignore[no-untyped-def]
    procs = ServiceProcs(auth_nats, redis_url, prefix="nats-auth")
    s = Stack(procs)
    try:
        for kind in KINDS:
            s.start(kind, env={"VA_NATS_USER": kind, "VA_NATS_PASSWORD": PASSWORDS[kind]})
        yield s
    finally:
        procs.stop_all()


async def test_a_voice_turn_works_with_per_service_permissions(stack) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, PLAIN)
    try:
        pcm, rate = clip("What color is the sky?")
        client.speaker.play(pcm, rate)
        _, final = await client.wait_event("transcript.final", 30)
        _, done = await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
        assert done["text"] and not done["interrupted"]
        assert client.first_audible_after(0) is not None
        await client.send({"type": "interrupt"})
    finally:
        await client.close()
    for kind in KINDS:
        log = stack.by_kind[kind][0].log.read_text()
        assert "Permissions Violation" not in log, f"{kind} needed a subject it may not use"


async def test_credentials_are_refused_outside_their_subjects(auth_nats) -> None:  # type: ignore[no-untyped-def]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        auth_nats, user="llm", password=PASSWORDS["llm"], error_cb=on_error, allow_reconnect=False
    )
    try:
        await nc.publish("va.llm.out.s1.r1", b"{}")  # its own subject: fine
        await nc.publish("va.events.s1", b'{"type":"reply.done"}')  # the client's events: no
        await nc.subscribe("va.asr.utt.>")  # someone else's audio: no
        await nc.flush()
        for _ in range(50):
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    text = " ".join(errors).lower()
    assert "permissions violation for publish" in text and "va.events.s1" in text, errors
    assert "permissions violation for subscription" in text and "va.asr.utt" in text, errors
    assert not any("va.llm.out" in e for e in errors)

    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            auth_nats,
            user="llm",
            password="wrong",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )
