"""A slow or failing language model: an OpenAI-compatible server that stalls, errors, then
recovers (a small real HTTP server in the test), behind the real llm service.

Invariant protected: within the session's timeout the user gets a short written and spoken
apology (plus an `llm_unavailable` error event), the turn ends normally, and the session goes on:
the next turn is answered once the model answers again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.servers import free_port
from harness.services import Stack
from tests.test_voice_e2e import voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

APOLOGY = "Sorry, the assistant cannot answer right now."


class ModelServer:
    """Speaks enough of the OpenAI chat API: streams a fixed answer, stalls, or fails (500)."""

    def __init__(self) -> None:
        self.mode = "ok"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                if server.mode == "error":
                    self._json(500, {"error": {"message": "model crashed", "type": "server"}})
                    return
                if server.mode == "stall":
                    time.sleep(20)
                    self._json(504, {"error": {"message": "too late"}})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for word in ["The", " sky", " is", " blue."]:
                    chunk = {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {"index": 0, "delta": {"content": word}, "finish_reason": None}
                        ],
                    }
                    self._chunk(f"data: {json.dumps(chunk)}\n\n")
                self._chunk("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    server = ModelServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def stack(procs_module, model):  # type: ignore[no-untyped-def]
    s = Stack(procs_module)
    s.start(
        "session",
        env={
            "VA_LLM_FIRST_TOKEN_TIMEOUT_S": "2",
            "VA_LLM_ATTEMPTS": "1",
            "VA_APOLOGY_TEXT": APOLOGY,
        },
    )
    s.start(
        "llm",
        env={
            "VA_ENGINE": "openai",
            "VA_OPENAI_BASE_URL": model.url,
            "VA_OPENAI_MODEL": "m",
            "VA_WARMUP": "false",
        },
    )
    s.start("asr")
    s.start("tts")
    s.start("gateway")
    return s


@pytest.mark.parametrize("mode", ["stall", "error"])
async def test_a_failing_model_gets_an_apology_and_the_session_goes_on(stack, model, mode) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, {"llm": {"temperature": 0.0}})
    try:
        model.mode = mode
        t0 = time.monotonic()
        await client.send({"type": "user.text", "text": "What color is the sky?"})
        _, final = await client.wait_event("transcript.final", 10, after=t0)
        tid = final["turn_id"]
        _, err = await client.wait_event("error", 15, turn_id=tid)
        assert err["code"] == "llm_unavailable" and err["message"]
        t_done, done = await client.wait_event("reply.done", 30, turn_id=tid)
        assert done["text"] == APOLOGY and not done["interrupted"]
        assert t_done - t0 < 12, "the apology took too long"
        assert client.first_audible_after(t0) is not None, "the apology was not spoken"

        model.mode = "ok"
        t1 = time.monotonic()
        await client.send({"type": "user.text", "text": "And now?"})
        _, again = await client.wait_event("transcript.final", 10, after=t1)
        _, done2 = await client.wait_event("reply.done", 30, turn_id=again["turn_id"])
        assert done2["text"] == "The sky is blue."
        await asyncio.sleep(0.2)
    finally:
        model.mode = "ok"
        await client.close()
