"""A bus observer with as little overhead as can be had in Python: a raw-socket NATS subscriber
in a process of its own that stamps every message with `time.time()` the moment `recv()` returns.

    python -m bench.nats_tap NATS_URL OUT.jsonl [--subject '>'] [--probe-ms 20]

It runs at real-time priority when it may (see `raise_priority`).
It prints `ready` once the server has confirmed the subscription (a PONG after the SUB), records
until SIGTERM or SIGINT, then writes one JSON line per message to OUT and prints `done N`:
`[t, subject, reply_to, headers, payload, size]` where `headers` holds only the `Va-*` (and
`Bench-*`) headers and `payload` is the text of a JSON payload (binary audio frames keep only
their `size`).

Why not nats-py: its messages reach a callback through the client's read task, a per-
subscription queue and the event loop, so the stamp would include the observer's own loop lag.
Here the only work between the kernel and the stamp is the `recv()` wake-up; parsing happens
after stamping. A message that shares a `recv()` with the one before gets the same stamp.

Observer lag is measured, not assumed: a second socket in this process publishes a probe on
`bench.tap.probe` every `--probe-ms` with its send time; the tap's receive time minus that is a
full client->server->client trip plus the tap's wake-up, under whatever load the machine has at
the time. Those samples come back as lines `["probe", sent, received]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

PROBE_SUBJECT = "bench.tap.probe"
CONNECT = {
    "verbose": False,
    "pedantic": False,
    "headers": True,
    "no_responders": True,
    "protocol": 1,
    "name": "bench-tap",
    "lang": "python-raw",
    "version": "0",
}


def open_socket(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("nats-server closed the connection")
        buf += chunk
    if not buf.startswith(b"INFO "):
        raise ConnectionError(f"not a NATS server: {buf[:80]!r}")
    sock.sendall(b"CONNECT " + json.dumps(CONNECT).encode() + b"\r\n")
    return sock


def parse_headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.lower().startswith((b"va-", b"bench-")):
            out[key.decode()] = value.strip().decode()
    return out


class Tap:
    def __init__(self, url: str, subject: str, probe_ms: float) -> None:
        self.url = url
        self.subject = subject
        self.probe_ms = probe_ms
        self.stop = threading.Event()
        # (stamp, subject, reply_to, raw header block or None, payload bytes or None, size)
        self.records: list[tuple[float, str, str, bytes | None, bytes | None, int]] = []
        self.probes: list[tuple[float, float]] = []

    def run(self) -> None:
        sock = open_socket(self.url)
        sock.sendall(f"SUB {self.subject} 1\r\nPING\r\n".encode())
        sock.settimeout(0.2)
        if self.probe_ms > 0:
            threading.Thread(target=self._probe, daemon=True, name="probe").start()
        buf = b""
        ready = False
        while not self.stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            t = time.time()
            if not chunk:
                break
            buf += chunk
            buf, pong, ping = self._parse(buf, t)
            if pong and not ready:
                ready = True
                print("ready", flush=True)
            if ping:  # the server's keep-alive
                sock.sendall(b"PONG\r\n")
        sock.close()

    def _parse(self, buf: bytes, t: float) -> tuple[bytes, bool, bool]:
        """Consume the complete protocol lines (and payloads) at the start of `buf`; returns
        the rest, and whether a PONG and a PING came."""
        pos = 0
        pong = ping = False
        n = len(buf)
        while pos < n:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = buf[pos:eol]
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                parts = line.split(b" ")
                if parts[0] == b"MSG":
                    subject = parts[1].decode()
                    reply = parts[3].decode() if len(parts) == 5 else ""
                    hlen, total = 0, int(parts[-1])
                else:
                    subject = parts[1].decode()
                    reply = parts[3].decode() if len(parts) == 6 else ""
                    hlen, total = int(parts[-2]), int(parts[-1])
                start = eol + 2
                end = start + total
                if end + 2 > n:
                    break  # the payload is not all here yet
                header = buf[start : start + hlen] if hlen else None
                payload = buf[start + hlen : end]
                self._record(t, subject, reply, header, payload)
                pos = end + 2
                continue
            if line == b"PING":
                ping = True
            elif line == b"PONG":
                pong = True
            elif line.startswith(b"-ERR"):
                print(f"server error: {line.decode(errors='replace')}", file=sys.stderr)
            pos = eol + 2
        return buf[pos:], pong, ping

    def _record(
        self, t: float, subject: str, reply: str, header: bytes | None, payload: bytes
    ) -> None:
        if subject == PROBE_SUBJECT:
            self.probes.append((float(payload), t))
            return
        text = payload if payload[:1] == b"{" and len(payload) < 65536 else None
        self.records.append((t, subject, reply, header, text, len(payload)))

    def _probe(self) -> None:
        sock = open_socket(self.url)
        head = f"PUB {PROBE_SUBJECT} ".encode()
        while not self.stop.wait(self.probe_ms / 1000.0):
            stamp = f"{time.time():.6f}".encode()
            sock.sendall(head + str(len(stamp)).encode() + b"\r\n" + stamp + b"\r\n")
        sock.close()

    def write(self, out: Path) -> int:
        with open(out, "w") as fh:
            for t, subject, reply, header, text, size in self.records:
                row = [
                    round(t, 6),
                    subject,
                    reply,
                    parse_headers(header) if header else None,
                    text.decode("utf-8", "replace") if text is not None else None,
                    size,
                ]
                fh.write(json.dumps(row) + "\n")
            for sent, got in self.probes:
                fh.write(json.dumps(["probe", sent, round(got, 6)]) + "\n")
        return len(self.records)


def read(path: Path) -> tuple[list[list[object]], list[tuple[float, float]]]:
    """(message rows, probe (sent, received) pairs) of a tap's output file."""
    rows: list[list[object]] = []
    probes: list[tuple[float, float]] = []
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            if row[0] == "probe":
                probes.append((float(row[1]), float(row[2])))
            else:
                rows.append(row)
    return rows, probes


def raise_priority() -> str:
    """Real-time scheduling (SCHED_FIFO 10) when allowed, else a lower nice value: on a busy
    machine the tap then wakes up when its data arrives instead of when a core is free, so its
    stamps stay close to the arrival. It sleeps in recv() nearly all the time (and the kernel
    keeps 5 % of each second for other tasks whatever real-time tasks do)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO 10"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except OSError:
        return "normal"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nats_tap", description=__doc__)
    p.add_argument("url")
    p.add_argument("out", type=Path)
    p.add_argument("--subject", default=">")
    p.add_argument("--probe-ms", type=float, default=20.0, help="0: no probes")
    p.add_argument("--normal-priority", action="store_true", help="do not raise the tap's priority")
    args = p.parse_args(argv)
    if not args.normal_priority:
        print(f"priority: {raise_priority()}", flush=True)
    tap = Tap(args.url, args.subject, args.probe_ms)

    def stop(signum: int, frame: FrameType | None) -> None:
        tap.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tap.run()
    n = tap.write(args.out)
    print(f"done {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
