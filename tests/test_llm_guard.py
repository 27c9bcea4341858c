"""A reply that starts to repeat itself is cut at the repeat, in any language; a reply that
only reuses words is not (services/llm/guard.py)."""

from __future__ import annotations

import pytest

from services.llm.guard import LoopGuard


def cut_at(text: str, step: int = 3) -> int | None:
    """Where the guard stops a reply streamed `step` characters at a time (None: never)."""
    guard = LoopGuard()
    for i in range(0, len(text), step):
        if guard.feed(text[i : i + step]):
            return i + step
    return None


@pytest.mark.parametrize(
    ("start", "unit"),
    [
        ("Sure! ", "en este lado de la familia, "),
        ("Well. ", "Paris is lovely. I like it a lot. "),
        ("", "161 "),
        ("Voilà. ", "Le Grand Paris est une très grande ville. Elle "),
    ],
)
def test_a_looping_reply_is_cut_before_its_third_copy(start: str, unit: str) -> None:
    text = start + unit * 6
    at = cut_at(text)
    assert at is not None
    assert at <= len(start) + 3 * len(unit), f"cut late, at {at} of {len(text)}"


@pytest.mark.parametrize(
    "text",
    [
        "The capital of France is Paris. It is a big city with many museums and many parks.",
        "Spiders have eight legs, insects have six legs, and octopuses have eight arms.",
        "To sleep better, keep a regular schedule, avoid screens before bed, and keep the "
        "room dark and cool. A short walk in the evening helps too.",
        "Nueve por tres es veintisiete. Es una multiplicación sencilla.",
        "Yes, yes! The sun is a star.",
    ],
)
def test_an_ordinary_reply_is_never_cut(text: str) -> None:
    assert cut_at(text) is None
    assert cut_at(text, step=1) is None


def test_the_reason_is_kept_and_later_pieces_stay_cut() -> None:
    guard = LoopGuard()
    assert guard.feed("la familia la familia la familia ")
    assert guard.reason
    assert guard.feed("anything")


async def test_the_llm_service_cuts_a_looping_reply(nats_url: str) -> None:
    """Through the llm worker: the loop ends the reply (llm.done says why), not max_tokens."""
    import asyncio

    import nats

    from services.common import bus, subjects
    from services.common.messages import ChatMessage, ClaimAck, LLMDone, LLMParams, LLMRequest
    from services.llm.engines.fake import FakeLLMEngine
    from services.llm.settings import LlmSettings
    from services.llm.worker import LlmWorker

    engine = FakeLLMEngine(reply="Bueno, " + "en este lado de la familia, " * 40)
    worker = LlmWorker(LlmSettings(nats_url=nats_url, warmup=False), engine)
    nc, client = await nats.connect(nats_url), await nats.connect(nats_url)
    done: asyncio.Future[LLMDone] = asyncio.get_running_loop().create_future()

    async def out(msg) -> None:  # type: ignore[no-untyped-def]
        if b'"llm.done"' in msg.data and not done.done():
            done.set_result(LLMDone.model_validate_json(msg.data))

    try:
        await worker.start(nc)
        await nc.flush()
        await client.subscribe(subjects.llm_out("s1", "r1"), cb=out)
        await client.flush()
        request = LLMRequest(
            session_id="s1",
            turn_id="t1",
            reply_id="r1",
            messages=[ChatMessage(role="user", content="Hola")],
            params=LLMParams(max_tokens=400),
        )
        await bus.request(client, subjects.LLM_CLAIM, request, ClaimAck, timeout=5)
        result = await asyncio.wait_for(done, 10)
    finally:
        await worker.drain(1.0)
        await nc.close()
        await client.close()
    assert result.stopped and "repeated" in result.stopped
    assert result.text.count("en este lado de la familia") == 2
