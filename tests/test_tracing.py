"""One conversation turn is one trace across the five services (as separate processes).

An OTLP/HTTP receiver in the test stands in for Jaeger. Invariants protected: every stage's span
(end of turn, ASR, session turn, LLM, TTS, first audio) belongs to the turn's trace with the
right parent links and carries its figures; an interrupted turn shows the interruption; user
text never appears in spans by default; every service serves Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness.paths import REPO
from harness.servers import free_port
from harness.services import start_stack
from tests.test_voice_e2e import PLAIN, STORYTELLER, clip, voice_client

pytestmark = pytest.mark.webrtc
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the module's stack fixture

ARTIFACTS = Path(__file__).parent / "artifacts"


class Receiver:
    """A minimal OTLP/HTTP (protobuf) trace receiver."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.add(req)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, req: ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in req.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in rs.resource.attributes
                        if a.key == "service.name"
                    ),
                    "?",
                )
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        attrs = {}
                        for a in sp.attributes:
                            v = a.value
                            attrs[a.key] = (
                                v.string_value or v.int_value or v.double_value or v.bool_value
                            )
                        self.spans.append(
                            {
                                "service": service,
                                "name": sp.name,
                                "trace": sp.trace_id.hex(),
                                "id": sp.span_id.hex(),
                                "parent": sp.parent_span_id.hex(),
                                "start": sp.start_time_unix_nano,
                                "end": sp.end_time_unix_nano,
                                "attrs": attrs,
                            }
                        )

    def trace_of(self, turn_id: str) -> list[dict[str, Any]]:
        with self.lock:
            roots = [
                s
                for s in self.spans
                if s["name"] == "turn" and s["attrs"].get("va.turn_id") == turn_id
            ]
            if not roots:
                return []
            return [s for s in self.spans if s["trace"] == roots[0]["trace"]]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver():  # type: ignore[no-untyped-def]
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def stack(procs_module, receiver):  # type: ignore[no-untyped-def]
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    return start_stack(
        procs_module, env={k: otel for k in ("session", "llm", "asr", "tts", "gateway")}
    )


def tree(spans: list[dict[str, Any]]) -> str:
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_parent.setdefault(s["parent"], []).append(s)
    ids = {s["id"] for s in spans}
    lines: list[str] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        ms = (span["end"] - span["start"]) / 1e6
        figures = {
            k.removeprefix("va."): v
            for k, v in span["attrs"].items()
            if k.endswith(("_ms", "_s", "factor", "tokens", "outcome", "reason"))
        }
        lines.append(
            f"{'  ' * depth}{span['name']} [{span['service']}] {ms:.0f} ms"
            + (f" {figures}" if figures else "")
        )
        for child in sorted(by_parent.get(span["id"], []), key=lambda s: s["start"]):
            walk(child, depth + 1)

    for root in sorted((s for s in spans if s["parent"] not in ids), key=lambda s: s["start"]):
        walk(root, 0)
    return "\n".join(lines)


def ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[str]:
    by_id = {s["id"]: s for s in spans}
    names = []
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
        names.append(span["name"])
    return names


async def wait_for_spans(
    receiver: Receiver, turn_id: str, names: set[str], timeout: float = 20
) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        spans = receiver.trace_of(turn_id)
        if names <= {s["name"] for s in spans}:
            return spans
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"missing spans {names - {s['name'] for s in spans}}:\n" + tree(spans)
            )
        await asyncio.sleep(0.3)


@ON_MODULE_LOOP
async def test_a_voice_turn_is_one_trace(stack, receiver) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, PLAIN)
    try:
        pcm, rate = clip("What color is the sky?")
        client.speaker.play(pcm, rate)
        _, final = await client.wait_event("transcript.final", 30)
        await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
    finally:
        await client.close()
    expected = {
        "turn",
        "end_of_turn",
        "asr.final",
        "session.turn",
        "llm.generate",
        "tts.synthesize",
        "first_audio",
        "process va.session.turn",
        "process va.llm.claim",
        "process va.tts.claim",
        "process va.asr.claim",
    }
    spans = await wait_for_spans(receiver, final["turn_id"], expected - {"asr.final"})
    text = tree(spans)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "trace-voice-turn.txt").write_text(text + "\n")
    print("\n" + text)

    assert len({s["trace"] for s in spans}) == 1
    assert {s["service"] for s in spans} >= {
        "va-gateway",
        "va-asr",
        "va-session",
        "va-llm",
        "va-tts",
    }
    by_name = {s["name"]: s for s in spans}
    root = by_name["turn"]
    assert root["parent"] == "" and root["attrs"]["va.outcome"] == "done"
    asr = by_name.get("asr.final") or by_name["asr.speculative"]
    assert asr["attrs"]["va.asr.duration_ms"] > 0 and "turn" in ancestors(spans, asr)
    llm = by_name["llm.generate"]
    assert {"session.turn", "turn"} <= set(ancestors(spans, llm))
    assert llm["attrs"]["va.llm.time_to_first_token_ms"] > 0
    assert llm["attrs"]["va.llm.tokens_per_s"] > 0
    tts = by_name["tts.synthesize"]
    assert {"session.turn", "turn"} <= set(ancestors(spans, tts))
    assert tts["attrs"]["va.tts.time_to_first_audio_ms"] > 0
    assert tts["attrs"]["va.tts.real_time_factor"] > 0
    assert by_name["first_audio"]["attrs"]["va.end_of_speech_to_first_audio_ms"] > 0
    assert by_name["first_audio"]["parent"] == root["id"]
    assert by_name["end_of_turn"]["parent"] == root["id"]
    # No user text in spans unless turned on.
    for s in spans:
        assert "va.text" not in s["attrs"]
        assert not any("sky" in str(v).lower() for v in s["attrs"].values()), s


@ON_MODULE_LOOP
async def test_an_interruption_shows_in_the_trace_it_cut(stack, receiver) -> None:  # type: ignore[no-untyped-def]
    client = await voice_client(stack.base_url, STORYTELLER)
    try:
        await client.send({"type": "user.text", "text": "Tell me a story about a brave knight."})
        _, final = await client.wait_event("transcript.final", 10)
        await client.wait_event("agent.state", 60, state="speaking", turn_id=final["turn_id"])
        await asyncio.sleep(1.0)
        await client.send({"type": "interrupt"})
        _, done = await client.wait_event("reply.done", 30, turn_id=final["turn_id"])
        assert done["interrupted"]
    finally:
        await client.close()
    spans = await wait_for_spans(
        receiver, final["turn_id"], {"turn", "interrupt", "llm.generate", "tts.synthesize"}
    )
    (ARTIFACTS / "trace-interrupted-turn.txt").write_text(tree(spans) + "\n")
    by_name = {s["name"]: s for s in spans}
    assert by_name["turn"]["attrs"]["va.outcome"] == "interrupted"
    assert by_name["interrupt"]["attrs"]["va.interrupt.reason"] == "client"
    assert by_name["interrupt"]["parent"] == by_name["turn"]["id"]


def test_every_service_serves_prometheus_metrics(stack) -> None:  # type: ignore[no-untyped-def]
    for kind, procs in stack.by_kind.items():
        with urllib.request.urlopen(f"{procs[0].url}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert "va_stage_latency_seconds" in body and "va_in_flight" in body, kind
    with urllib.request.urlopen(f"{stack.by_kind['session'][0].url}/metrics") as resp:
        assert 'va_turns_total{outcome="done",service="session"}' in resp.read().decode()


def test_every_autoscaling_query_names_a_series_its_service_exports(stack) -> None:  # type: ignore[no-untyped-def]
    """KEDA scales asr, llm and tts on a Prometheus query: each names a metric and a service
    label that the service really serves on /metrics (after the turns above), not a typo that
    would leave the autoscaler at zero."""
    path = REPO / "deploy/k8s/components/keda/scaledobjects.yaml"
    queries = [
        (so["spec"]["scaleTargetRef"]["name"], t["metadata"]["query"])
        for so in yaml.safe_load_all(path.read_text())
        if so and so.get("kind") == "ScaledObject"
        for t in so["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    assert {kind for kind, _ in queries} == {"asr", "llm", "tts"}
    for kind, query in queries:
        with urllib.request.urlopen(f"{stack.by_kind[kind][0].url}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        series = re.findall(r'([a-z_]+)\{service="([a-z]+)"\}', query)
        assert series, query
        for name, service in series:
            assert service == kind, query
            assert re.search(rf'^{name}\{{[^}}]*service="{service}"', body, re.M), (query, kind)
