"""An asr replica in this process, on a real NATS, with an engine whose passes take their time.

Invariants protected: when the user speaks on after a pause (`resume`), the speculative pass
started at the pause is cancelled, not left running unseen: no task is left waiting on it, a peek
still waiting for its text is answered at once (`speech_resumed`), and the end of the turn runs
a final pass over all the speech instead of reusing the dropped one.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Sequence

import nats
import numpy as np
import pytest
from nats.aio.client import Client as NATS

from services.asr.engines.fake import FakeASREngine
from services.asr.settings import AsrSettings
from services.asr.worker import AsrWorker
from services.common import bus, subjects
from services.common.messages import (
    AsrClaim,
    AsrControl,
    AsrEnd,
    AsrResult,
    ClaimAck,
    ErrorCode,
    now_ms,
)
from tests.test_gateway_turns import tone, until

TEXT = "what is the capital of France"


class SlowEngine(FakeASREngine):
    """Each pass waits for `go` (a Whisper pass that takes its time); `running` counts the passes
    under way."""

    def __init__(self) -> None:
        super().__init__(TEXT)
        self.go = threading.Event()
        self.go.set()  # the warm-up pass at start goes through
        self.running = 0

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        self.running += 1
        try:
            self.go.wait(10)
            return super().transcribe(audio, language, hot_words)
        finally:
            self.running -= 1


@pytest.fixture
async def replica(nats_url: str) -> AsyncIterator[tuple[NATS, SlowEngine]]:
    nc = await nats.connect(nats_url)
    engine = SlowEngine()
    worker = AsrWorker(AsrSettings(engine="fake"), engine)
    await worker.start(nc)
    try:
        yield nc, engine
    finally:
        engine.go.set()
        await worker.drain(1.0)
        await nc.close()


def passes_in_tasks() -> int:
    """Tasks running a pass of their own (a speculative pass: the others are awaited inline)."""
    return sum(
        getattr(t.get_coro(), "__qualname__", "") == "AsrWorker._transcribe"
        for t in asyncio.all_tasks()
    )


async def test_speaking_on_cancels_the_speculative_pass(
    replica: tuple[NATS, SlowEngine],
) -> None:
    nc, engine = replica
    sid, tid = secrets.token_hex(8), secrets.token_hex(8)
    await bus.request(
        nc, subjects.ASR_CLAIM, AsrClaim(session_id=sid, turn_id=tid, partials=False), ClaimAck
    )
    subject = subjects.asr_utterance(sid, tid)
    await nc.publish(subject, tone(600))
    engine.go.clear()
    peek = asyncio.ensure_future(
        bus.request(
            nc,
            subject,
            AsrEnd(speech_end_ms=now_ms()),
            AsrResult,
            timeout=5.0,
            headers=AsrControl.PEEK.headers(),
        )
    )
    await until(lambda: engine.running == 1)  # the speculative pass is under way
    await bus.publish(nc, subject, AsrEnd(speech_end_ms=now_ms()), AsrControl.RESUME.headers())

    with pytest.raises(bus.RemoteError) as answer:
        await asyncio.wait_for(peek, 1.0)  # at once, not when the dropped pass ends
    assert answer.value.error.code == ErrorCode.SPEECH_RESUMED
    await until(lambda: passes_in_tasks() == 0, timeout=1.0)

    await nc.publish(subject, tone(300))  # the user spoke on
    engine.go.set()
    result = await bus.request(
        nc,
        subject,
        AsrEnd(speech_end_ms=now_ms(), reuse_speculative=True),
        AsrResult,
        timeout=5.0,
        headers=AsrControl.END.headers(),
    )
    assert result.text == TEXT and result.audio_ms == pytest.approx(900, abs=1)
