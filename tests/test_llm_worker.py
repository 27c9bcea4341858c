"""The llm worker is where the bus's vocabulary stops: the engines take their own small types.

Invariants protected: no engine module (`services/llm/engine.py`, `services/llm/engines/`)
imports the message vocabulary or anything else of the bus (`services.common`), so an engine
neither knows nor changes with the wire format; a request on the bus reaches the engine as
`ChatTurn`s and `GenParams` with its roles, texts and sampling parameters intact, and a prefill
asks the engine for one token and says nothing. A replica that generates one reply at a time
refuses (`busy`) a reply it could only start later than `admission_wait_s`, and takes it once
the reply ahead is nearly done.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common.messages import (
    ChatMessage,
    ClaimAck,
    ErrorCode,
    LLMDone,
    LLMParams,
    LLMRequest,
)
from services.llm.admission import Admission
from services.llm.engine import ChatTurn, GenParams, Tool, ToolCall
from services.llm.engines.fake import FakeLLMEngine
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker

LLM = Path(__file__).resolve().parent.parent / "services" / "llm"
ENGINE_MODULES = [LLM / "engine.py", *sorted((LLM / "engines").glob("*.py"))]


def imported(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", ENGINE_MODULES, ids=lambda p: p.name)
def test_an_engine_module_imports_nothing_of_the_bus(path: Path) -> None:
    bus_modules = {m for m in imported(path) if m.startswith("services.common")}
    assert not bus_modules, f"{path.name} imports {sorted(bus_modules)}"


class RecordingEngine(FakeLLMEngine):
    """The fake engine, keeping the sampling parameters of each stream too."""

    def __init__(self) -> None:
        super().__init__("Paris.")
        self.params: list[GenParams] = []

    def stream(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> AsyncGenerator[str | ToolCall, None]:
        self.params.append(params)
        return super().stream(messages, params, background, tools)


@pytest.fixture
async def llm(nats_url: str) -> AsyncIterator[tuple[NATS, RecordingEngine]]:
    engine = RecordingEngine()
    worker = LlmWorker(LlmSettings(nats_url=nats_url, warmup=False), engine)
    nc, client = await nats.connect(nats_url), await nats.connect(nats_url)
    await worker.start(nc)
    await nc.flush()
    try:
        yield client, engine
    finally:
        await worker.drain(1.0)
        await nc.close()
        await client.close()


async def generate(client: NATS, request: LLMRequest, timeout: float = 10) -> LLMDone:
    done: asyncio.Future[LLMDone] = asyncio.get_running_loop().create_future()

    async def out(msg: Msg) -> None:
        if b'"llm.done"' in msg.data and not done.done():
            done.set_result(LLMDone.model_validate_json(msg.data))

    sub = await client.subscribe(subjects.llm_out(request.session_id, request.reply_id), cb=out)
    await client.flush()
    try:
        for _ in range(50):  # background work waits until the last reply's job has ended
            try:
                await bus.request(client, subjects.LLM_CLAIM, request, ClaimAck, timeout=5)
                break
            except bus.RemoteError as exc:
                assert exc.error.code == ErrorCode.BUSY
                await asyncio.sleep(0.02)
        return await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()


async def test_a_request_reaches_the_engine_in_its_own_types(
    llm: tuple[NATS, RecordingEngine],
) -> None:
    client, engine = llm
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Capital of France?"),
    ]
    sampling = LLMParams(temperature=0.7, top_p=0.5, max_tokens=7)
    request = LLMRequest(
        session_id="s1", turn_id="t1", reply_id="r1", messages=messages, params=sampling
    )
    done = await generate(client, request)
    assert done.text == "Paris."
    assert engine.requests[-1] == [
        ChatTurn(role="system", content="Be brief."),
        ChatTurn(role="user", content="Capital of France?"),
    ]
    assert engine.params[-1] == GenParams(temperature=0.7, top_p=0.5, max_tokens=7)

    prefill = request.model_copy(update={"reply_id": "r2", "purpose": "prefill"})
    done = await generate(client, prefill)
    assert done.text == "" and engine.params[-1] == GenParams(0.7, 0.5, 1)


def test_admission_counts_the_replies_ahead_less_what_they_have_run() -> None:
    adm = Admission(parallel=1, wait_s=1.0)
    assert adm.admits(0.0)  # nothing known, nothing held
    adm.begin("r1", 0.0)
    assert adm.admits(0.0)  # no typical time yet: only max_queued limits
    adm.end("r1", 4.0, finished=True)
    assert adm.typical_s == 4.0
    adm.begin("r2", 10.0)
    assert adm.expected_start_s(10.5) == 3.5 and not adm.admits(10.5)
    assert adm.admits(13.5)  # r2 nearly done
    adm.begin("r3", 13.5)  # admitted: two ahead now
    assert adm.expected_start_s(13.5) == 0.5 + 4.0
    adm.end("r2", 14.0, finished=False)  # cut: says nothing of the typical time
    assert adm.typical_s == 4.0
    adm.end("r3", 18.0, finished=True)  # on the engine since r2 left: 4 s
    assert adm.typical_s == 4.0
    assert Admission(parallel=1, wait_s=0).admits(0.0)


async def test_a_replica_refuses_a_reply_it_would_start_late_then_takes_it(
    nats_url: str,
) -> None:
    engine = FakeLLMEngine("one two three four five six seven eight nine ten", delay_s=0.1)
    engine.parallel = 1  # as the embedded engine: one reply at a time
    worker = LlmWorker(LlmSettings(nats_url=nats_url, warmup=False, admission_wait_s=0.3), engine)
    nc, client = await nats.connect(nats_url), await nats.connect(nats_url)
    await worker.start(nc)

    def reply(rid: str) -> LLMRequest:
        return LLMRequest(
            session_id="s1",
            turn_id=rid,
            reply_id=rid,
            messages=[ChatMessage(role="user", content="Count.")],
        )

    try:
        await generate(client, reply("r1"))  # ~1 s: the typical reply
        await bus.request(client, subjects.LLM_CLAIM, reply("r2"), ClaimAck, timeout=2)
        with pytest.raises(bus.RemoteError) as refused:
            await bus.request(client, subjects.LLM_CLAIM, reply("r3"), ClaimAck, timeout=2)
        assert refused.value.error.code == ErrorCode.BUSY
        assert "would start in" in refused.value.error.message
        await asyncio.sleep(0.9)  # r2 nearly done
        done = await generate(client, reply("r3"))
        assert done.text.startswith("one")
    finally:
        await worker.drain(2.0)
        await nc.close()
        await client.close()
