"""One session turn in this process, against a real NATS (and a real TTS replica with its fake
engine).

Invariants protected:
- an interrupt stops a turn ahead of the output already queued for it: no `reply.delta` and no
  text for the TTS after the interrupt arrived, however many LLM deltas wait in the inbox;
- the session hears the TTS's segments and done markers, never its audio (which only the
  gateway plays): one reply's dozens of audio chunks cost the session replica nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import nats
import pytest

from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    ClaimAck,
    Interrupt,
    LLMDelta,
    TTSDone,
    TTSRequest,
    TTSSegment,
    TTSText,
    TurnSubmit,
)
from services.session.settings import SessionSettings
from services.session.turns import Turn
from services.tts.engines.fake import FakeTTSEngine
from services.tts.settings import TtsSettings
from services.tts.worker import TtsWorker

pytestmark = pytest.mark.asyncio


def _turn(nc: Any, nats_url: str, sid: str, *, voice: bool) -> Turn:
    submit = TurnSubmit(session_id=sid, turn_id="t1", text="Hi there", source="text", voice=voice)
    settings = SessionSettings(nats_url=nats_url)
    return Turn(nc, None, settings, submit, "R1", AgentConfig())  # type: ignore[arg-type]


async def test_an_interrupt_overtakes_the_llm_output_queued_before_it(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    client = await nats.connect(nats_url)
    try:
        sid = secrets.token_hex(8)
        seen: list[dict[str, Any]] = []

        async def on_event(msg: Any) -> None:
            seen.append(json.loads(msg.data))

        async def on_tts_text(msg: Any) -> None:
            seen.append(json.loads(msg.data))

        await client.subscribe(subjects.events(sid), cb=on_event)
        await client.subscribe(subjects.tts_in(sid, "R1"), cb=on_tts_text)
        await client.flush()
        turn = _turn(nc, nats_url, sid, voice=True)
        turn.st.tts_done = turn.st.playback_done = False
        stream = "R1a1"
        turn.stages.llm_stream = stream
        # The LLM wrote faster than the turn forwarded: 40 deltas wait when the interrupt comes.
        for i in range(40):
            turn.inbox.put_nowait((stream, LLMDelta(reply_id=stream, seq=i + 1, text=f"word{i} ")))
        turn.interrupt(Interrupt(session_id=sid, reply_id="R1", reason="barge_in", spoken_text=""))
        await asyncio.wait_for(turn._loop(), 5)
        await nc.flush()
        await client.flush()
        await asyncio.sleep(0.1)
        assert turn.st.interrupted and turn.st.text == []
        assert [e["type"] for e in seen] == [], "output was forwarded after the interrupt"
    finally:
        await client.close()
        await nc.close()


async def test_the_session_hears_tts_segments_and_done_but_no_audio(nats_url: str) -> None:
    tts_nc = await nats.connect(nats_url)
    session_nc = await nats.connect(nats_url)
    client = await nats.connect(nats_url)
    engine = FakeTTSEngine(chunk_ms=20)
    worker = TtsWorker(TtsSettings(nats_url=nats_url, engine="fake"), engine)
    try:
        await worker.start(tts_nc)
        sid = secrets.token_hex(8)
        chunks = 0

        async def on_audio(msg: Any) -> None:
            nonlocal chunks
            chunks += 1

        await client.subscribe(subjects.tts_out(sid, subjects.TtsPart.AUDIO), cb=on_audio)
        await client.flush()
        turn = _turn(session_nc, nats_url, sid, voice=True)
        await turn.open()
        await bus.request(
            client,
            subjects.TTS_CLAIM,
            TTSRequest(session_id=sid, turn_id="t1", reply_id="R1"),
            ClaimAck,
            timeout=10,
        )
        text = "The capital of France is Paris. It has been so for a very long time."
        await bus.publish(
            client, subjects.tts_in(sid, "R1"), TTSText(reply_id="R1", seq=1, text=text, final=True)
        )
        got: list[Any] = []
        while not (got and isinstance(got[-1], TTSDone)):
            got.append(await asyncio.wait_for(turn.inbox.get(), 10))
        await client.flush()
        await asyncio.sleep(0.1)
        assert chunks >= 20, "the fake engine should have sent dozens of audio chunks"
        assert all(isinstance(m, TTSSegment | TTSDone) for m in got), got
        assert len([m for m in got if isinstance(m, TTSSegment)]) == 2
        delivered = sum(sub.delivered for sub in turn._subs)
        assert delivered == len(got), f"the session was sent {delivered - len(got)} audio chunks"
        await turn.release()
    finally:
        await worker.jobs.wait_all(0.0)
        await client.close()
        await session_nc.close()
        await tts_nc.close()
