"""One TTS replica: claims reply syntheses, speaks clauses as soon as they are complete.

- `va.tts.claim` (queue group "tts"): a `TTSRequest`. The replica subscribes to the reply's text
  subject `va.tts.in.{sid}.{rid}` and then answers `ClaimAck`, so no text is lost.
- Text arrives as `tts.text` pieces (the LLM's deltas, forwarded by the session). A clause
  splitter hands the first clause to the engine while the LLM is still writing.
- Output: per clause a `tts.segment` (its text, index and sample rate) on `va.tts.out.{sid}.ctl`,
  then raw PCM16 chunks (each with its `AudioChunkHeader`: reply, turn, segment, rate) on
  `va.tts.out.{sid}.audio`, and finally `tts.done` on `.ctl`. The gateway hears both halves on one
  subscription (in publish order); the session only the control half.
- `va.ctl.interrupt.*` (every replica): cancels the matching synthesis within 100 ms; no audio
  is published after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.aio import get_within
from services.common.messages import (
    AudioChunkHeader,
    BadMessage,
    ClaimAck,
    ErrorCode,
    RpcError,
    TTSDone,
    TTSRequest,
    TTSSegment,
    TTSText,
    decode,
)
from services.common.metrics import IN_FLIGHT, STAGE_SECONDS
from services.common.replies import ReplyWorker

from .audio import trim_leading_silence
from .engine import TTSEngine
from .settings import TtsSettings
from .text import ClauseSplitter

log = logging.getLogger(__name__)


@dataclass
class _SynthStats:
    """Figures of one reply's synthesis, for its span."""

    first_audio_ms: float | None = None
    synth_s: float = 0.0
    audio_s: float = 0.0
    cancelled: bool = False


# About ClauseSplitter's max_chars (200) of plain words: the longest single run a reply makes.
WARMUP_TEXT = (
    "Ready to speak with you now and to answer any question you may have about the weather, "
    "the news, a recipe for dinner tonight, the history of a city, or a good book to read next "
    "week while on holiday"
)


class TtsWorker(ReplyWorker):
    kind = "tts"
    cancel_timeout_s = 0.1  # a cancelled synthesis stops within 100 ms

    def __init__(self, settings: TtsSettings, engine: TTSEngine) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.engine = engine

    async def start(self, nc: NATS) -> None:
        self.nc = nc
        await self.engine.load()
        # Warm the voice with a clause as long as the splitter makes: onnxruntime's memory arena
        # grows to the largest run it has seen and keeps it, so memory is flat from the start
        # (bench/run.sh soak) instead of creeping up as longer sentences come.
        async for _ in self.engine.synthesize(WARMUP_TEXT):
            pass
        await self.claim(nc, subjects.TTS_CLAIM, subjects.QUEUE_TTS, TTSRequest, self._on_claim)

    async def close(self) -> None:
        await self.engine.aclose()

    async def _on_claim(self, req: TTSRequest, msg: Msg) -> ClaimAck | RpcError:
        assert self.nc is not None
        subjects.check_token(req.session_id)
        subjects.check_token(req.reply_id)
        if len(self.jobs) >= self.cfg.max_concurrent:
            return RpcError(code=ErrorCode.BUSY, message="tts replica at capacity", status=503)
        texts: asyncio.Queue[object] = asyncio.Queue()

        async def on_text(m: Msg) -> None:
            try:
                texts.put_nowait(decode(TTSText, m.data))
            except BadMessage as exc:
                log.warning("bad tts.text on %s: %s", m.subject, exc)

        sub = await self.nc.subscribe(subjects.tts_in(req.session_id, req.reply_id), cb=on_text)
        job = self.jobs.start(
            req.session_id, req.turn_id, req.reply_id, self._speak(req, texts, sub)
        )
        # The job unsubscribes when it ends; one cancelled (interrupted) before its first step
        # never runs its `finally`, and the subscription would outlive it (the soak found one).
        job.task.add_done_callback(lambda _t: self.spawn(_unsubscribe(sub), "tts-unsubscribe"))
        return await self.claimed(req.session_id, req.turn_id, req.reply_id)

    async def _speak(
        self, req: TTSRequest, texts: asyncio.Queue[object], sub: Subscription
    ) -> None:
        IN_FLIGHT.labels("tts").set(len(self.jobs))
        attrs = {
            tm.ATTR_SESSION: req.session_id,
            tm.ATTR_TURN: req.turn_id,
            tm.ATTR_REPLY: req.reply_id,
            tm.ATTR_WORKER: self.worker_id,
        }
        try:
            with tm.tracer.start_as_current_span(
                "tts.synthesize",
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                stats = _SynthStats()
                try:
                    await self._speak_in(req, texts, sub, stats)
                finally:
                    span.set_attribute(tm.ATTR_INTERRUPTED, stats.cancelled)
                    if stats.first_audio_ms is not None:
                        span.set_attribute(tm.ATTR_TTS_FIRST_MS, stats.first_audio_ms)
                    if stats.audio_s > 0:
                        span.set_attribute(tm.ATTR_TTS_RTF, round(stats.synth_s / stats.audio_s, 3))
        finally:
            IN_FLIGHT.labels("tts").set(len(self.jobs) - 1)

    async def _speak_in(
        self,
        req: TTSRequest,
        texts: asyncio.Queue[object],
        sub: Subscription,
        stats: _SynthStats,
    ) -> None:
        assert self.nc is not None
        out = subjects.tts_out(req.session_id, subjects.TtsPart.CTL)
        splitter = ClauseSplitter(first_phrase_words=self.cfg.first_phrase_words)
        index = 0
        cancelled = False
        error: str | None = None
        try:
            expected = 1
            pending: dict[int, TTSText] = {}
            done = False
            while not done:
                try:
                    item = await get_within(texts, self.cfg.text_idle_timeout_s)
                except TimeoutError:
                    error = "no text arrived in time"
                    break
                assert isinstance(item, TTSText)
                pending[item.seq] = item
                while expected in pending:  # in order, whatever the delivery order
                    piece = pending.pop(expected)
                    expected += 1
                    clauses = splitter.feed(piece.text)
                    if piece.final:
                        clauses += splitter.flush()
                        done = True
                    for clause in clauses:
                        await self._speak_clause(req, out, index, clause, stats)
                        index += 1
        except asyncio.CancelledError:
            cancelled = stats.cancelled = True
        except Exception as exc:
            log.exception("tts failed for %s", req.reply_id)
            error = f"speech synthesis failed: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await bus.publish(
                self.nc,
                out,
                TTSDone(
                    reply_id=req.reply_id,
                    turn_id=req.turn_id,
                    segments=index,
                    cancelled=cancelled,
                    error=error,
                ),
            )
        if cancelled:
            raise asyncio.CancelledError

    async def _speak_clause(
        self, req: TTSRequest, out: str, index: int, clause: str, stats: _SynthStats
    ) -> None:
        assert self.nc is not None
        audio_out = subjects.tts_out(req.session_id, subjects.TtsPart.AUDIO)
        headers = AudioChunkHeader(
            reply_id=req.reply_id,
            turn_id=req.turn_id,
            segment=index,
            sample_rate=self.engine.sample_rate,
        ).encode()
        t0 = time.perf_counter()
        announced = False
        leading = index == 0  # the reply's first audio starts at its first sound
        stream = self.engine.synthesize(clause, req.voice)
        try:
            async for chunk in stream:
                stats.audio_s += len(chunk) / 2 / self.engine.sample_rate
                if leading:
                    chunk = trim_leading_silence(chunk, self.engine.sample_rate)
                    if not chunk:
                        continue
                    leading = False
                if not announced:
                    announced = True
                    first_ms = round((time.perf_counter() - t0) * 1000.0, 1)
                    if stats.first_audio_ms is None:
                        stats.first_audio_ms = first_ms
                        STAGE_SECONDS.labels("tts", "first_audio").observe(first_ms / 1000)
                    await bus.publish(
                        self.nc,
                        out,
                        TTSSegment(
                            reply_id=req.reply_id,
                            turn_id=req.turn_id,
                            index=index,
                            text=clause,
                            sample_rate=self.engine.sample_rate,
                            first_audio_ms=first_ms,
                        ),
                    )
                await self.nc.publish(audio_out, chunk, headers=headers)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            stats.synth_s += time.perf_counter() - t0


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(Exception):  # gone already: the job's own `finally` came first
        await sub.unsubscribe()
