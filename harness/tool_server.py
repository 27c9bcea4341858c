"""A real HTTP tool server for tests and the tools benchmark: a few endpoints an agent's tools
can be bound to, each request recorded (path, JSON body, headers).

- `POST /weather` {"city"}: the weather there (made up, but the same for a city every time).
- `POST /timer` {"minutes", "label"?}: starts a timer (a side effect: counted per
  `Idempotency-Key`, so a repeat shows).
- `POST /order` {"item", "quantity"}: places an order (side effect).
- `POST /convert` {"amount", "from", "to"}: converts a currency.
- `POST /slow`: answers after `slow_s` (longer than a tool's timeout: an unknown outcome).
- `POST /redirect`: a 302 to /weather (never followed).
- `POST /big`: an answer of `big_bytes`.
- `POST /fail`: HTTP 503.
`delay_s` delays every answer (a call that takes its time: the filler).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RATES = {"usd": 1.0, "eur": 0.92, "gbp": 0.79, "jpy": 151.0, "chf": 0.88}
SKIES = ["sunny", "cloudy", "raining", "snowing", "windy"]


def weather(city: str) -> dict[str, Any]:
    h = zlib.crc32(city.strip().lower().encode())
    return {"city": city, "sky": SKIES[h % len(SKIES)], "temperature_c": 5 + h % 20}


@dataclass
class Request:
    path: str
    body: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class ToolServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[Request] = []
        self.delay_s = 0.0
        self.slow_s = 10.0
        self.big_bytes = 100_000
        self.received = threading.Event()  # set at every request
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                server.requests.append(Request(self.path, body, dict(self.headers.items())))
                server.received.set()
                time.sleep(server.delay_s)
                status, answer = server.answer(self.path, body)
                if status == 302:
                    self.send_response(302)
                    self.send_header("location", "/weather")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        args = body if isinstance(body, dict) else {}
        if path == "/weather":
            return 200, weather(str(args.get("city", "")))
        if path == "/timer":
            return 200, {
                "started": True,
                "minutes": args.get("minutes"),
                "label": args.get("label"),
            }
        if path == "/order":
            return 200, {"ordered": args.get("item"), "quantity": args.get("quantity", 1)}
        if path == "/convert":
            src, dst = str(args.get("from", "")).lower(), str(args.get("to", "")).lower()
            if src not in RATES or dst not in RATES:
                return 400, {"error": "unknown currency"}
            value = float(args.get("amount", 0)) / RATES[src] * RATES[dst]
            return 200, {"amount": round(value, 2), "currency": dst.upper()}
        if path == "/slow":
            time.sleep(self.slow_s)
            return 200, {"late": True}
        if path == "/redirect":
            return 302, None
        if path == "/big":
            return 200, b"x" * self.big_bytes
        if path == "/fail":
            return 503, {"error": "the service is down"}
        return 404, {"error": "no such endpoint"}

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
