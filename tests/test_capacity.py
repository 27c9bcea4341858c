"""An ASR replica at capacity makes a turn wait, not fail.

Invariant protected: when every ASR replica refuses a claim for capacity, the gateway keeps
asking (every 100 ms, up to `VA_CLAIM_TIMEOUT_S`) also after the user has stopped speaking, and
again from the end of the turn; the turn is transcribed once a replica frees, with no error
event. Here one ASR replica holds one utterance at a time (`VA_MAX_CONCURRENT=1`, fake engines)
and a second session's short question ends while the first session's long one still holds it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.services import start_stack
from tests.test_voice_e2e import PLAIN, clip, voice_client

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    fake = {"VA_ENGINE": "fake"}
    return start_stack(
        procs_module, env={"asr": {**fake, "VA_MAX_CONCURRENT": "1"}, "llm": fake, "tts": fake}
    )


async def test_a_question_that_ends_while_asr_is_full_is_transcribed_late(stack) -> None:  # type: ignore[no-untyped-def]
    long_q = await voice_client(stack.base_url, PLAIN)
    short_q = await voice_client(stack.base_url, PLAIN)
    try:
        pcm_long, rate = clip(
            "Please tell me what the weather will be like tomorrow morning in the mountains."
        )
        pcm_short, rate_short = clip("Hi there.")
        assert len(pcm_long) / rate > len(pcm_short) / rate_short + 1.5
        mark = time.monotonic()
        long_q.speaker.play(pcm_long, rate)
        await asyncio.sleep(0.5)  # the long question holds the replica's one place
        short_q.speaker.play(pcm_short, rate_short)
        await short_q.speaker.done.wait()
        assert not long_q.speaker.done.is_set(), "the long question ended first"
        for client in (long_q, short_q):
            _, final = await client.wait_event("transcript.final", 30, after=mark)
            assert final["text"] and final["source"] == "voice"
            await client.wait_event("reply.done", 30, turn_id=final["turn_id"])
        for client in (long_q, short_q):
            errors = [ev for _, ev in client.events if ev.get("type") == "error"]
            assert not errors, errors
    finally:
        await long_q.close()
        await short_q.close()
