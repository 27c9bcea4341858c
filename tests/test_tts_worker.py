"""The tts worker's jobs leave nothing behind.

Invariant protected: a reply's text subscription (`va.tts.in.<session>.<reply>`) ends with its
job, also when the job is cancelled (an interrupt right after the claim) before it ever ran, so
that its `finally` never did: the soak found one such subscription, and its task, left after
every session had ended.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from services.common import bus
from services.common.messages import TTSRequest
from services.tts.engines.fake import FakeTTSEngine
from services.tts.settings import TtsSettings
from services.tts.worker import TtsWorker

pytestmark = pytest.mark.asyncio


async def test_a_job_cancelled_before_it_ran_leaves_no_subscription(nats_url: str) -> None:
    worker = TtsWorker(TtsSettings(nats_url=nats_url), FakeTTSEngine())
    nc = await nats.connect(nats_url)
    await worker.start(nc)
    await nc.flush()
    before = len(nc._subs)
    sid, rid = bus.new_id(), bus.new_id()
    announce = worker.claimed

    async def cancel_then_claimed(*args: str) -> object:
        # nothing has been awaited since the job was created: it has not taken a step yet
        for job in worker.jobs.matching(sid, rid):
            job.task.cancel()
        return await announce(*args)

    worker.claimed = cancel_then_claimed  # type: ignore[method-assign]
    try:
        req = TTSRequest(session_id=sid, turn_id=bus.new_id(), reply_id=rid)
        await worker._on_claim(req, None)  # type: ignore[arg-type]
        assert len(nc._subs) == before + 1  # the reply's text subscription
        for _ in range(100):
            if len(nc._subs) == before and not len(worker.jobs):
                break
            await asyncio.sleep(0.02)
        assert len(worker.jobs) == 0
        assert len(nc._subs) == before, "the cancelled job's text subscription was left"
    finally:
        await worker.drain(1.0)
        await nc.close()
