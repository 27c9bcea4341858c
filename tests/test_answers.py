"""The default model answers right, in the user's language, and remembers what the user said
after it has left the LLM window: typed turns through the real gateway, session and llm
services on the default profile (a smoke test; bench/run.sh quality measures it in full)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as redis

from bench.quality import Conversation
from bench.quality_checks import judge
from services.llm.models import DEFAULT_PROFILE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def base_url(procs_module) -> str:  # type: ignore[no-untyped-def]
    procs_module.start("llm", env={"VA_MODEL": DEFAULT_PROFILE}, timeout=300)
    procs_module.start("session")
    return procs_module.start("gateway").url


async def conversation(base_url: str, agent: dict[str, Any] | None = None) -> Conversation:
    c = Conversation(base_url)
    await c.open(agent)
    return c


@pytest.mark.parametrize(
    ("question", "lang", "accept", "reject"),
    [
        ("What is the capital of France?", "en", ["paris"], ["lisbon", "portugal"]),
        ("How many legs does a spider have?", "en", ["eight", "8"], ["four", "4", "six", "6"]),
        ("How many continents are there?", "en", ["seven", "7"], ["161", "six", "five"]),
        ("¿Cuál es la capital de Alemania?", "es", ["berlín", "berlin"], ["múnich", "munich"]),
        ("Combien de jours y a-t-il dans une semaine ?", "fr", ["sept", "7"], ["huit", "six"]),
    ],
)
async def test_a_question_gets_the_right_answer_in_its_language(
    base_url: str, question: str, lang: str, accept: list[str], reject: list[str]
) -> None:
    c = await conversation(base_url)
    try:
        got = await c.ask(question, 60)
    finally:
        await c.close()
    verdict = judge({"accept": accept, "reject": reject}, got["reply"], lang)
    assert verdict["passed"], (got, verdict)


async def test_a_name_given_early_is_remembered_after_it_left_the_window(
    base_url: str, redis_url: str
) -> None:
    c = await conversation(base_url, {"history_max_turns": 3})
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await c.ask("Hi! My name is Dana and I live in Lisbon.", 60)
        for question in (
            "What's a good name for a cat?",
            "How far away is the moon?",
            "Give me a quick tip for staying focused.",
        ):
            got = await c.ask(question, 60)
            await asyncio.sleep(1 + len(got["reply"].split()) / 2.5)  # the user hears it
        # The first turn has left the window; what it said lives on in the summary, made in
        # the background after the turn (its timing is the benchmark's business, not this test's).
        for _ in range(600):
            summary = await store.get(f"va:summary:{c.sid}")
            if summary and json.loads(summary)["upto"] >= 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no summary of the turns that left the window")
        got = await c.ask("Remind me, what's my name and where do I live?", 60)
    finally:
        await c.close()
        await store.aclose()
    reply = got["reply"].lower()
    assert "dana" in reply and "lisbon" in reply, got
