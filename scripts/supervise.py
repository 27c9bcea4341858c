#!/usr/bin/env python3
"""Run the five services of the voice assistant as one unit (scripts/run.sh calls this).

    python scripts/supervise.py run      # infra, services, wait for /readyz, print the URL, wait
    python scripts/supervise.py stop     # stop a running `run` (from another terminal)
    python scripts/supervise.py status

`run` makes sure NATS and Redis answer (scripts/infra.py: uses the ones running, else starts its
own), starts `python -m services.<name>` for each service with VA_HTTP_PORT set, logs to
.run/logs/<name>.log and pids in .run/<name>.pid, and waits until every GET /readyz answers 200.
Then it prints the local URL and waits. SIGINT (Ctrl-C) or SIGTERM (`stop`) stops the services
(SIGTERM, then SIGKILL after VA_STOP_TIMEOUT s) and then the NATS/Redis it started itself. If a
service dies, the tail of its log is printed and everything is stopped: a half-running assistant
is harder to understand than a stopped one.

Settings (environment): VA_SERVICES (default "session asr llm tts gateway"), VA_PORT_OFFSET
(default 0: ports 8080 gateway, 8081 asr, 8082 llm, 8083 tts, 8084 session), VA_READY_TIMEOUT
(default 600 s: a first start may load models), VA_STOP_TIMEOUT (default 30 s: services drain
their work first), NATS_URL / REDIS_URL (or VA_*).

VA_LAN=1 (`scripts/run.sh --lan`) also serves the gateway over https to the network, on
VA_TLS_PORT (8443 + offset): with the user's VA_TLS_CERT / VA_TLS_KEY, else with a certificate
from the local authority services/gateway/tls.py makes once; without VA_API_KEYS it makes an
agents API key once (kept beside the authority) and prints it. `stop` and `status` need only the
standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra  # noqa: E402  (a sibling script, not a package)

REPO = infra.REPO
RUN_DIR = infra.RUN_DIR
LOG_DIR = RUN_DIR / "logs"
DEFAULT_PORTS = {"gateway": 8080, "asr": 8081, "llm": 8082, "tts": 8083, "session": 8084}
# VA_PORT_OFFSET moves all five (e.g. 1000: 9080-9084), for a second copy beside the first.
PORTS = {
    name: port + int(os.environ.get("VA_PORT_OFFSET", "0")) for name, port in DEFAULT_PORTS.items()
}
READY_MARK = RUN_DIR / "ready"
SUPERVISOR_PID = RUN_DIR / "supervise.pid"


def say(message: str) -> None:
    print(f"run: {message}", flush=True)


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def pidfile(self) -> Path:
        return RUN_DIR / f"{self.name}.pid"

    def ready(self) -> bool:
        return infra.http_answers(f"http://127.0.0.1:{self.port}/readyz", timeout=2)


class Stop(Exception):
    """A signal asked us to stop."""


class Fatal(Exception):
    """Cannot start: the message says why."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def service_names() -> list[str]:
    names = os.environ.get("VA_SERVICES", "session asr llm tts gateway").split()
    unknown = [n for n in names if n not in PORTS]
    if unknown:
        raise Fatal(f"unknown service(s) in VA_SERVICES: {' '.join(unknown)}")
    return names


def running_supervisor() -> int | None:
    pid = infra._read_pid(SUPERVISOR_PID)
    if pid and pid != os.getpid() and infra.pid_alive(pid):
        if "supervise.py" in infra.pid_cmdline(pid):
            return pid
    return None


def start_service(svc: Service, env: dict[str, str]) -> None:
    svc.log = LOG_DIR / f"{svc.name}.log"
    child_env = dict(env, VA_HTTP_PORT=str(svc.port), PYTHONUNBUFFERED="1")
    with open(svc.log, "ab") as log:
        log.write(f"\n===== {time.strftime('%F %T')} start services.{svc.name} =====\n".encode())
        log.flush()
        svc.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{svc.name}"],
            cwd=REPO,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the services in order
        )
    svc.pidfile.write_text(f"{svc.proc.pid}\n")
    say(
        f"started {svc.name} (pid {svc.proc.pid}, port {svc.port}, log {svc.log.relative_to(REPO)})"
    )


def stop_services(services: list[Service], timeout: float) -> None:
    live = [s for s in services if s.proc is not None and s.proc.poll() is None]
    for s in live:
        say(f"stopping {s.name} (pid {s.proc.pid})")  # type: ignore[union-attr]
        with contextlib.suppress(ProcessLookupError):
            s.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    for s in live:
        assert s.proc is not None
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{s.name} did not stop within {timeout:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait()
    for s in services:
        with contextlib.suppress(FileNotFoundError):
            s.pidfile.unlink()


def died(services: list[Service]) -> Service | None:
    for s in services:
        if s.proc is not None and s.proc.poll() is not None:
            return s
    return None


def report_death(s: Service) -> None:
    assert s.proc is not None
    say(f"{s.name} exited with code {s.proc.returncode}; last lines of {s.log.relative_to(REPO)}:")
    print(infra.log_tail(s.log, 40), flush=True)


def lan_setup(env: dict[str, str]) -> list[str]:
    """VA_LAN=1: the gateway's https listener for other devices (certificate, key, API key in
    `env`); returns what to print once it is ready."""
    sys.path.insert(0, str(REPO))
    from services.gateway import tls  # the venv's python runs `run`

    port = int(env.get("VA_TLS_PORT") or 8443 + int(env.get("VA_PORT_OFFSET", "0")))
    env.update(VA_TLS_PORT=str(port), VA_TLS_HOST=env.get("VA_TLS_HOST") or "0.0.0.0")
    lines = []
    if env.get("VA_TLS_CERT") or env.get("VA_TLS_KEY"):
        for var in ("VA_TLS_CERT", "VA_TLS_KEY"):
            path = Path(env.get(var, ""))
            if not env.get(var) or not path.is_file() or not os.access(path, os.R_OK):
                why = "not set" if not env.get(var) else f"{path}: missing or unreadable"
                raise Fatal(f"--lan with your own certificate needs {var} ({why})")
        addresses = [f"https://{a}:{port}/" for a in tls.lan_addresses(tls.host_addresses())]
        lines.append(f"your certificate: {env['VA_TLS_CERT']}")
    else:
        issued = tls.ensure()
        env.update(
            VA_TLS_CERT=str(issued.cert), VA_TLS_KEY=str(issued.key), VA_TLS_CA=str(issued.ca_cert)
        )
        addresses = tls.urls(issued, port)
        public = [str(a) for a in tls.host_addresses() if not tls.is_local(a)]
        if public:
            lines.append(
                f"left out of the certificate (not local-network addresses; your own "
                f"certificate can name them): {', '.join(public)}"
            )
        made = "made now" if issued.made_ca else "made earlier"
        lines.append(f"local certificate authority ({made}): {issued.ca_cert}")
        if issued.made_ca:
            lines.append(
                tls.TRUST_HELP.format(ca=issued.ca_cert, port=port, key=issued.dir / "ca.key")
            )
        else:
            lines.append("devices trust it once (`python -m services.gateway.tls` shows how)")
    if not env.get("VA_API_KEYS"):
        key_file = tls.default_dir() / "api-key"
        if not key_file.exists():
            key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(24) + "\n")
        env["VA_API_KEYS"] = key_file.read_text().strip()
        lines.append(
            f"agents API key (X-API-Key, needed now that the network can reach it): "
            f"{env['VA_API_KEYS']} (in {key_file}; VA_API_KEYS sets your own)"
        )
    lines.append("open from other devices: " + "  ".join(addresses))
    return lines


def check_ports_free(services: list[Service], extra: dict[str, int] | None = None) -> None:
    taken = [f"{s.name}:{s.port}" for s in services if infra.port_in_use("127.0.0.1", s.port)]
    taken += [f"{n}:{p}" for n, p in (extra or {}).items() if infra.port_in_use("127.0.0.1", p)]
    if taken:
        raise Fatal(
            f"port(s) already in use: {', '.join(taken)} (another copy running? "
            "`scripts/run.sh stop`, free them, or set VA_PORT_OFFSET)"
        )


def run() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    LOG_DIR.mkdir(exist_ok=True)
    other = running_supervisor()
    if other:
        say(f"already running (pid {other}); stop it first with `scripts/run.sh stop`")
        return 1
    SUPERVISOR_PID.write_text(f"{os.getpid()}\n")
    with contextlib.suppress(FileNotFoundError):
        READY_MARK.unlink()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    ready_timeout = float(os.environ.get("VA_READY_TIMEOUT", "600"))
    stop_timeout = float(os.environ.get("VA_STOP_TIMEOUT", "30"))
    services: list[Service] = []
    started_infra: list[str] = []
    code = 0
    try:
        services = [Service(n, PORTS[n]) for n in service_names()]
        env = dict(os.environ)
        lan = lan_setup(env) if env.get("VA_LAN") == "1" else []
        check_ports_free(services, {"gateway https": int(env["VA_TLS_PORT"])} if lan else None)
        nats_url, redis_url = infra.configured_urls()
        infra.ensure(nats_url, redis_url, RUN_DIR, say=print, started=started_infra)
        env.update(
            VA_NATS_URL=nats_url, NATS_URL=nats_url, VA_REDIS_URL=redis_url, REDIS_URL=redis_url
        )
        for s in services:
            start_service(s, env)

        say(f"waiting for /readyz of {len(services)} service(s) (up to {ready_timeout:.0f} s)")
        t0 = time.monotonic()
        pending = list(services)
        last_note = t0
        while pending:
            if (dead := died(services)) is not None:
                report_death(dead)
                return 1
            pending = [s for s in pending if not s.ready()]
            now = time.monotonic()
            if pending and now - t0 > ready_timeout:
                say(f"not ready after {ready_timeout:.0f} s: {' '.join(s.name for s in pending)}")
                for s in pending:
                    print(f"--- {s.log.relative_to(REPO)}\n{infra.log_tail(s.log, 20)}")
                return 1
            if pending and now - last_note >= 15:
                names = " ".join(s.name for s in pending)
                say(f"still waiting for {names} ({now - t0:.0f} s)")
                last_note = now
            time.sleep(0.25)

        READY_MARK.write_text(f"{os.getpid()}\n")
        say(f"all {len(services)} service(s) ready in {time.monotonic() - t0:.1f} s")
        if any(s.name == "gateway" for s in services):
            print(f"\n  Voice assistant: http://127.0.0.1:{PORTS['gateway']}/\n", flush=True)
            for line in lan:
                print("\n".join(f"  {part}" for part in line.splitlines()), flush=True)
        say("Ctrl-C (or `scripts/run.sh stop`) stops it; logs in .run/logs/")
        while True:
            if (dead := died(services)) is not None:
                report_death(dead)
                code = 1
                break
            time.sleep(0.5)
    except Stop as why:
        say(f"{why}: stopping")
    except (infra.InfraError, Fatal) as exc:
        say(f"ERROR: {exc}")
        code = 1
    finally:
        # A second Ctrl-C must not cut the orderly stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(FileNotFoundError):
            READY_MARK.unlink()
        stop_services(services, stop_timeout)
        if started_infra:
            infra.stop(RUN_DIR, tuple(started_infra), say=print)
        with contextlib.suppress(FileNotFoundError):
            SUPERVISOR_PID.unlink()
        say("stopped")
    return code


def stop() -> int:
    """Stop a running supervisor (it stops its services), or leftovers of one that died."""
    pid = running_supervisor()
    if pid:
        say(f"asking the supervisor (pid {pid}) to stop")
        os.kill(pid, signal.SIGTERM)
        timeout = float(os.environ.get("VA_STOP_TIMEOUT", "30")) + 30
        deadline = time.monotonic() + timeout
        while infra.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if infra.pid_alive(pid):
            say(f"supervisor still running after {timeout:.0f} s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
    # leftovers: a supervisor killed with SIGKILL leaves its services and servers behind
    leftovers = 0
    for name in PORTS:
        pf = RUN_DIR / f"{name}.pid"
        spid = infra._read_pid(pf)
        if spid and infra.pid_alive(spid) and f"services.{name}" in infra.pid_cmdline(spid):
            say(f"stopping leftover {name} (pid {spid})")
            leftovers += 1
            infra.stop_pid(spid, timeout=float(os.environ.get("VA_STOP_TIMEOUT", "30")), group=True)
        with contextlib.suppress(FileNotFoundError):
            pf.unlink()
    infra.stop(RUN_DIR, say=print)
    for f in (SUPERVISOR_PID, READY_MARK):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    if not pid and not leftovers:
        say("no supervisor or service was running")
    return 0


def status() -> int:
    pid = running_supervisor()
    print(f"supervisor: {'pid ' + str(pid) if pid else 'not running'}")
    code = 0 if pid else 1
    for name in service_names():
        svc = Service(name, PORTS[name])
        spid = infra._read_pid(svc.pidfile)
        state = "ready" if svc.ready() else "not ready"
        print(f"{name:8} port {svc.port}  pid {spid or '-'}  {state}")
        if state != "ready":
            code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["run", "stop", "status"])
    args = ap.parse_args(argv)
    return {"run": run, "stop": stop, "status": status}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
