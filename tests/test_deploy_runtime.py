"""What the images hold, run here: each image's Python steps and the TURN setup's media path.

Invariants:
- the requirement lock of each image installs offline into a fresh venv with
  deploy/docker/pyenv.sh (the very script its Dockerfile runs); the service imports and loads its
  default model from the installed packages; it needs no system library the slim base lacks
  (unless its Dockerfile installs the package); started with the image's environment and
  command it answers /readyz and its HEALTHCHECK, and exits 0 on SIGTERM within its grace period
  (slow: ~20-40 s per service; the wheels come from .run/deploy-wheels, which
  `deploy/docker/pyenv.sh wheels KIND .run/deploy-wheels` fills where the index is reachable);
- WebRTC through coturn as the manifests configure it: a browser behind NAT that knows only
  coturn's STUN address gets audio both ways with a gateway pod it cannot reach (needs root,
  iproute2, iptables and coturn; skipped otherwise).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.llm.models import models_dir
from tests.deploy_lib import (
    DOCKER,
    K8S,
    KINDS,
    REPO,
    REQUIREMENTS,
    by_kind,
    env_of,
    exec_form,
    kustomize_command,
    pod_spec,
    read_dockerfile,
    read_pins,
    render,
    wheels_present,
)

# --- each image's Python environment (slow) ------------------------------------------------
# Drain on SIGTERM: stop_accepting + up to 20 s of work in flight + 5 s of HTTP shutdown + the
# NATS drain (services/common/service.py).
MIN_STAGE_GRACE_S = 30
# Shared libraries python:3.11-slim-bookworm has (libc6, libgcc-s1, libstdc++6, zlib1g, and
# what CPython itself links); anything else must be installed by the Dockerfile.
SLIM_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libmvec.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
    "libffi.so.8",
    "libbz2.so.1.0",
    "liblzma.so.5",
    "libsqlite3.so.0",
    "libuuid.so.1",
    "libexpat.so.1",
}
APT_LIBS = {"libgomp1": {"libgomp.so.1"}}  # Debian package -> the libraries it provides


WHEELS = Path(os.environ.get("VA_DEPLOY_WHEELS", REPO / ".run" / "deploy-wheels"))


def _run(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _ensure_wheels(kind: str) -> None:
    pins = read_pins(REQUIREMENTS / f"{kind}.txt")
    nodeps = REQUIREMENTS / f"{kind}-nodeps.txt"
    if nodeps.exists():
        pins |= read_pins(nodeps)
    if not wheels_present(WHEELS, pins):
        return
    proc = subprocess.run(
        ["bash", str(DOCKER / "pyenv.sh"), "wheels", kind, str(WHEELS)],
        capture_output=True,
        text=True,
        timeout=1800,
        # no retries: without an index (inside scripts/netns-run) fail in seconds, not minutes
        env={**os.environ, "PYTHON": sys.executable, "PIP_RETRIES": "0", "PIP_TIMEOUT": "10"},
    )
    missing = wheels_present(WHEELS, pins)
    if missing:
        pytest.fail(
            f"no wheels for {missing[:5]}... in {WHEELS} and pyenv.sh could not fetch them "
            f"(no package index here, e.g. inside scripts/netns-run?). Run "
            f"`deploy/docker/pyenv.sh wheels {kind} {WHEELS}` where the index is reachable "
            f"(scripts/install.sh does it).\n{proc.stderr[-2000:]}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _system_libs(venv: Path) -> tuple[set[str], list[str]]:
    """Shared libraries the venv's packages load from the system, and unresolved ones."""
    system: set[str] = set()
    missing: list[str] = []
    (site,) = venv.glob("lib/python3*/site-packages")
    sos = [p for p in site.rglob("*.so*") if p.is_file() and ".so" in p.name]
    for i in range(0, len(sos), 200):
        out = subprocess.run(
            ["ldd", *map(str, sos[i : i + 200])], capture_output=True, text=True
        ).stdout
        needing = sos[i]
        for line in out.splitlines():
            if line.endswith(":"):
                needing = Path(line[:-1])
            m = re.match(r"\s+(\S+) => (\S+)", line)
            if not m:
                continue
            lib, where = m.groups()
            if where == "not" and not any(needing.parent.glob(f"{lib}.*")):
                # (a versioned copy beside it is the package's own, which it loads by path
                # first: moonshine_cpp's libonnxruntime.so.1.22.1; step 1 loads it for real)
                missing.append(lib)
            elif where.startswith(("/lib", "/usr/lib")):
                system.add(lib)
    return system, missing


@pytest.fixture
def image_venv(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    kind: str = request.param
    _ensure_wheels(kind)
    with tempfile.TemporaryDirectory(prefix=f"va-image-{kind}-") as tmp:
        venv = Path(tmp) / "venv"
        _run(
            ["bash", str(DOCKER / "pyenv.sh"), "install", kind, str(WHEELS), str(venv)],
            timeout=900,
            env={**os.environ, "PYTHON": sys.executable},
        )
        yield kind, venv


def _image_env(kind: str, venv: Path) -> dict[str, str]:
    """The runtime environment the Dockerfile sets, pointed at this venv."""
    _, (_, runtime) = read_dockerfile(DOCKER / f"{kind}.Dockerfile")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VA_", "OTEL_"))}
    env.pop("VIRTUAL_ENV", None)
    for key, value in env_of(runtime).items():
        env[key] = value.replace("/opt/venv", str(venv)).replace("$PATH", os.environ["PATH"])
    env["PYTHONPATH"] = str(REPO)  # the image's WORKDIR /app holds services/
    if "VA_MODELS_DIR" in env:  # the image fetches its model into /models; here: the install's
        env["VA_MODELS_DIR"] = str(models_dir())
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("image_venv", KINDS, indirect=True)
def test_image_python_env(
    image_venv: tuple[str, Path], nats_url: str, redis_url: str, tmp_path: Path
) -> None:
    kind, venv = image_venv
    env = _image_env(kind, venv)
    python = str(venv / "bin" / "python")

    # 1. the Dockerfile's last build step: imports + the default model, hub downloads off
    out = _run([python, str(DOCKER / "check.py"), kind], timeout=300, env=env, cwd=tmp_path)
    assert out.stdout.startswith(f"ok {kind}:"), out.stdout

    # 2. no shared library the slim base lacks, unless the Dockerfile installs its package
    _, (_, runtime) = read_dockerfile(DOCKER / f"{kind}.Dockerfile")
    apt = " ".join(r for r in runtime.args("RUN") if "apt-get install" in r)
    allowed = SLIM_LIBS | {lib for pkg, libs in APT_LIBS.items() if pkg in apt for lib in libs}
    system, missing = _system_libs(venv)
    assert not missing, f"unresolved shared libraries: {missing}"
    assert system <= allowed, f"libraries the image lacks: {sorted(system - allowed)}"

    # 3. the image's command starts, answers /readyz, and drains to exit 0 on SIGTERM
    port = _free_port()
    env.update(
        VA_NATS_URL=nats_url,
        VA_REDIS_URL=redis_url,
        VA_HTTP_HOST="127.0.0.1",
        VA_HTTP_PORT=str(port),
    )
    (cmd,) = runtime.args("CMD")
    argv = exec_form(cmd)
    argv[0] = python
    log = tmp_path / f"{kind}.log"
    with log.open("w") as out_f:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out_f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{kind} exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{kind} never ready: {log.read_text()[-3000:]}"
            time.sleep(0.3)
        health = _run([python, str(DOCKER / "healthcheck.py")], timeout=30, env=env)
        assert health.returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=MIN_STAGE_GRACE_S) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- WebRTC media through the TURN server, as the manifests configure it (needs root) ----------
def _tool(name: str) -> str:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which(name, path=path) or name


def _netns_tools() -> str | None:
    """Why the TURN check cannot run here, or None."""
    for tool in ("ip", "iptables", "turnserver"):
        if _tool(tool) == tool:
            return f"{tool} not found (apt-get install iproute2 iptables coturn)"
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, NAT)"
    return None


class _Net:
    """Four network namespaces: a browser behind a masquerading NAT, the "internet" with the TURN
    node (coturn on its node address, no forwarding into the cluster), and a gateway pod that the
    browser cannot reach at all."""

    def __init__(self) -> None:
        tag = f"va{os.getpid() % 100000}"
        self.ns = {k: f"{tag}{k}" for k in ("b", "n", "r", "g")}
        self.tag = tag

    def ip(self, *args: str, ns: str | None = None) -> None:
        cmd = [_tool("ip"), *(["-n", self.ns[ns]] if ns else []), *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def exec(self, ns: str, *cmd: str) -> list[str]:
        return [_tool("ip"), "netns", "exec", self.ns[ns], *cmd]

    def up(self) -> None:
        for ns in self.ns.values():
            subprocess.run([_tool("ip"), "netns", "add", ns], check=True, capture_output=True)
        for k in self.ns:
            self.ip("link", "set", "lo", "up", ns=k)
        links = [
            ("b", "10.9.0.2/24", "n", "10.9.0.1/24"),
            ("n", "10.9.1.3/24", "r", "10.9.1.1/24"),
            ("r", "10.9.2.1/24", "g", "10.9.2.2/24"),
        ]
        for i, (a, a_ip, b, b_ip) in enumerate(links):
            left, right = f"{self.tag}{i}a", f"{self.tag}{i}b"
            self.ip("link", "add", left, "type", "veth", "peer", "name", right)
            self.ip("link", "set", left, "netns", self.ns[a])
            self.ip("link", "set", right, "netns", self.ns[b])
            self.ip("addr", "add", a_ip, "dev", left, ns=a)
            self.ip("addr", "add", b_ip, "dev", right, ns=b)
            self.ip("link", "set", left, "up", ns=a)
            self.ip("link", "set", right, "up", ns=b)
        self.ip("route", "add", "default", "via", "10.9.0.1", ns="b")
        self.ip("route", "add", "default", "via", "10.9.2.1", ns="g")
        self.ip("route", "add", "default", "via", "10.9.1.3", ns="r")  # the internet drops
        for ns, value in (("n", "1"), ("r", "0")):
            subprocess.run(
                self.exec(ns, _tool("sysctl"), "-q", "-w", f"net.ipv4.ip_forward={value}"),
                check=True,
            )
        nat_out, nat_in = f"{self.tag}1a", f"{self.tag}0b"
        for rule in (
            f"-t nat -A POSTROUTING -o {nat_out} -j MASQUERADE",
            f"-A FORWARD -i {nat_out} -o {nat_in} -m conntrack --ctstate ESTABLISHED,RELATED "
            "-j ACCEPT",
            f"-A FORWARD -i {nat_out} -o {nat_in} -j DROP",  # nothing unsolicited gets in
        ):
            subprocess.run(self.exec("n", _tool("iptables"), *rule.split()), check=True)

    def down(self) -> None:
        for ns in self.ns.values():
            subprocess.run([_tool("ip"), "netns", "del", ns], capture_output=True)


@pytest.mark.timeout(120)
def test_webrtc_media_through_turn(tmp_path: Path) -> None:
    """A browser behind NAT, with only coturn's STUN address, gets audio both ways with a gateway
    it cannot reach, relayed by coturn started with the manifest's own command line, the gateway
    using the manifest's VA_ICE_SERVERS."""
    why = _netns_tools() or (None if kustomize_command() else "no kustomize or kubectl")
    if why:
        pytest.skip(why)
    docs = render(K8S / "overlays" / "dev")
    turn = pod_spec(by_kind(docs, "Deployment")["turn"])
    gateway = pod_spec(by_kind(docs, "Deployment")["gateway"])
    assert turn is not None and gateway is not None
    (script,) = turn["containers"][0]["args"]
    turn_cm = next(
        c
        for c in by_kind(docs, "ConfigMap").values()
        if c["metadata"]["name"].startswith("va-turn")
    )
    secret = next(iter(by_kind(docs, "Secret").values()))
    password = base64.b64decode(secret["data"]["TURN_PASSWORD"]).decode()
    env = {e["name"]: e.get("value", "") for e in gateway["containers"][0]["env"]}
    ice = env["VA_ICE_SERVERS"].replace("$(TURN_PASSWORD)", password)
    ice = ice.replace("turn:turn:", "turn:10.9.1.1:")  # the Service -> the TURN node's address
    signal_dir = tmp_path / "signal"
    signal_dir.mkdir()
    net = _Net()
    procs: list[subprocess.Popen[str]] = []
    try:
        net.up()
        turn_env = {
            **os.environ,
            **turn_cm["data"],
            "HOST_IP": "10.9.1.1",
            "TURN_PASSWORD": password,
        }
        procs.append(
            subprocess.Popen(
                net.exec("r", "sh", "-c", script),
                env=turn_env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        probe = "import socket; s=socket.socket(); s.settimeout(1); s.connect(('10.9.2.2', 9))"
        direct = subprocess.run(
            net.exec("b", sys.executable, "-c", probe), capture_output=True, text=True
        )
        assert "unreachable" in direct.stderr or "timed out" in direct.stderr, direct.stderr
        time.sleep(0.5)
        peer = str(Path(__file__).with_name("turn_peer.py"))
        browser_ice = json.dumps([{"urls": "stun:10.9.1.1:3478"}])
        sides = {
            "gateway": subprocess.Popen(
                net.exec("g", sys.executable, peer, "gateway", str(signal_dir), ice),
                stdout=subprocess.PIPE,
                text=True,
            ),
            "browser": subprocess.Popen(
                net.exec("b", sys.executable, peer, "browser", str(signal_dir), browser_ice),
                stdout=subprocess.PIPE,
                text=True,
            ),
        }
        procs += sides.values()
        results = {
            role: json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
            for role, p in sides.items()
        }
        answer = (signal_dir / "answer").read_text()
        assert "typ relay" in answer, "the gateway advertises a relay address on coturn"
        for role, result in results.items():
            assert result["frames"] >= 25 and result["state"] == "connected", (role, results)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        net.down()
