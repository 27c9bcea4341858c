"""One ASR replica: claims utterances, collects their frames, emits partials and the final text.

Protocol (see docs/architecture.md):
1. The gateway sends an `AsrClaim` request on `va.asr.claim` (queue group "asr"): one replica
   answers with `ClaimAck` after subscribing to the utterance's subject, so no frame is lost.
2. The gateway publishes PCM16 16 kHz frames on `va.asr.utt.{sid}.{tid}`. Every
   `partial_interval_ms` the replica transcribes what it has and publishes `transcript.partial`.
3. `Va-Ctl: peek` (`AsrControl.PEEK`, sent early in the end-of-turn silence) starts a
   speculative final pass on the audio so far; `resume` (the user went on speaking) cancels it
   (a peek still waiting for it is answered `speech_resumed`).
   The request `end` returns the final `AsrResult` and ends the utterance: when its `AsrEnd` says
   `reuse_speculative`, the speculative pass's text is the answer (nothing but silence came
   after it), which saves most of a Whisper pass from the end-of-turn latency.
Frames and control share one subscription, so they are handled in the order they were sent.
Every pass's text (partial, speculative, final) goes through guard.clean, and the claim's hot
words go to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context
from opentelemetry.context import Context

from services.common import bus, subjects
from services.common import telemetry as tm
from services.common.claiming import ClaimingWorker
from services.common.messages import (
    AsrClaim,
    AsrControl,
    AsrEnd,
    AsrResult,
    BadMessage,
    ClaimAck,
    ErrorCode,
    RpcError,
    TranscriptPartial,
    decode,
)
from services.common.metrics import IN_FLIGHT, STAGE_SECONDS

from . import guard
from .engine import ASREngine
from .settings import AsrSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _outcome(task: asyncio.Task[tuple[str, float]]) -> tuple[str, float] | None:
    """A pass's text and time; None when it was dropped (cancelled). Waited for with
    `asyncio.wait`, so the pass's cancel is never taken for the waiter's own."""
    await asyncio.wait([task])
    return None if task.cancelled() else task.result()


@dataclass
class Utterance:
    claim: AsrClaim
    audio: bytearray = field(default_factory=bytearray)
    sub: Subscription | None = None
    partial_task: asyncio.Task[None] | None = None
    last_partial_len: int = 0
    last_partial_text: str = ""
    ctx: Context | None = None  # the turn's trace context, from the claim
    speculative: asyncio.Task[tuple[str, float]] | None = None  # final pass started at a pause
    paused: bool = False  # between a peek and a resume: no partials
    ended: bool = False
    deadline: float = 0.0


class AsrWorker(ClaimingWorker):
    """An utterance is not a job (no task holds it: the gateway's frames feed it until its
    `end`): the replica keeps its own table of them, counts its capacity by it and drains by it."""

    kind = "asr"

    def __init__(self, settings: AsrSettings, engine: ASREngine) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.engine = engine
        self._partial_lock = asyncio.Lock()
        self._utts: dict[str, Utterance] = {}
        self._warned_hot_words = False
        # The engine's own threads: only they ever run a pass, so its buffers (and the C
        # allocator's per-thread arenas) are the ones the warm-up made, not one set per thread
        # of asyncio's default pool.
        self._engine_threads = ThreadPoolExecutor(
            max_workers=engine.passes_at_once, thread_name_prefix="asr-engine"
        )

    async def _in_engine_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._engine_threads, fn, *args)

    async def start(self, nc: NATS) -> None:
        self.nc = nc
        t0 = time.perf_counter()
        threads = self.engine.passes_at_once
        await asyncio.gather(*(self._in_engine_thread(self.engine.warm_up) for _ in range(threads)))
        log.info("asr warm-up took %.0f ms", (time.perf_counter() - t0) * 1000)
        await self.claim(nc, subjects.ASR_CLAIM, subjects.QUEUE_ASR, AsrClaim, self._on_claim)
        self.spawn(self._reaper(), "asr-reaper")

    async def drain(self, timeout: float) -> None:
        await self.stop_accepting()
        end = time.monotonic() + timeout
        # Utterances end when their gateway sends `end` (or the reaper drops them): poll.
        while self._utts and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()

    # -- claim ---------------------------------------------------------------------------------
    async def _on_claim(self, claim: AsrClaim, msg: Msg) -> ClaimAck | RpcError:
        assert self.nc is not None
        subjects.check_token(claim.session_id)
        subjects.check_token(claim.turn_id)
        if len(self._utts) >= self.cfg.max_concurrent:
            return RpcError(code=ErrorCode.BUSY, message="asr replica at capacity", status=503)
        if claim.hot_words and not self.engine.takes_hot_words and not self._warned_hot_words:
            self._warned_hot_words = True
            log.warning("this ASR engine takes no hot words: the agent's are not used")
        utt = Utterance(claim=claim, deadline=time.monotonic() + self.cfg.max_utterance_s + 30)
        utt.ctx = context.get_current()
        key = claim.turn_id
        self._utts[key] = utt
        IN_FLIGHT.labels("asr").set(len(self._utts))

        async def on_msg(m: Msg) -> None:
            await self._on_utterance_msg(utt, m)

        utt.sub = await self.nc.subscribe(
            subjects.asr_utterance(claim.session_id, claim.turn_id), cb=on_msg
        )
        if claim.partials:
            utt.partial_task = self.spawn(self._partials(utt), f"asr-partials-{key}")
        return await self.claimed(claim.session_id, claim.turn_id)

    # -- frames and control -------------------------------------------------------------------
    async def _on_utterance_msg(self, utt: Utterance, msg: Msg) -> None:
        try:
            ctl = AsrControl.decode(msg.headers)
            end = None if ctl is None else decode(AsrEnd, msg.data)
        except BadMessage as exc:
            await bus.reply(msg, RpcError(code=ErrorCode.BAD_MESSAGE, message=str(exc)))
            return
        if end is None:  # no control word: an audio frame
            if utt.ended:
                return
            if len(utt.audio) + len(msg.data) > self.cfg.max_utterance_s * 32000:
                return  # over the limit: keep the first max_utterance_s
            if len(msg.data) % 2:
                log.warning("odd-length audio frame dropped on %s", msg.subject)
                return
            utt.audio.extend(msg.data)
            return
        if ctl is AsrControl.PEEK:
            utt.paused = True
            if utt.speculative is None:
                utt.speculative = self.spawn(
                    self._transcribe(utt, "speculative", tm.extract(msg.headers)),
                    f"asr-speculative-{utt.claim.turn_id}",
                )
            if msg.reply:
                self.spawn(self._answer_peek(utt, utt.speculative, msg), "asr-peek")
        elif ctl is AsrControl.RESUME:
            utt.paused = False
            self._drop_speculative(utt)
        elif ctl is AsrControl.END:
            utt.ended = True
            self.spawn(self._finish(utt, msg, end), f"asr-final-{utt.claim.turn_id}")
        elif ctl is AsrControl.CANCEL:
            utt.ended = True
            await self._release(utt)

    async def _transcribe(
        self, utt: Utterance, kind: str, ctx: Context | None = None
    ) -> tuple[str, float]:
        """One Whisper pass over the utterance so far (`kind`: partial, speculative or final).
        Partial passes run one at a time per replica; final passes never wait for them (the
        engine has a worker for each)."""
        pcm = np.frombuffer(bytes(utt.audio), dtype=np.int16).astype(np.float32) / 32768.0
        lang = utt.claim.language or self.cfg.language
        with tm.tracer.start_as_current_span(
            f"asr.{kind}",
            context=ctx,
            attributes={
                tm.ATTR_SESSION: utt.claim.session_id,
                tm.ATTR_TURN: utt.claim.turn_id,
                tm.ATTR_WORKER: self.worker_id,
                tm.ATTR_AUDIO_MS: len(pcm) / 16.0,
            },
        ) as span:
            t0 = time.perf_counter()
            heard = await self._in_engine_thread(
                self.engine.transcribe, pcm, lang, utt.claim.hot_words
            )
            text = guard.clean(heard)
            ms = (time.perf_counter() - t0) * 1000.0
            span.set_attribute(tm.ATTR_ASR_MS, round(ms, 1))
            if text != heard.strip():
                log.info("turn %s: a repeat or sound caption taken out", utt.claim.turn_id)
                span.set_attribute(tm.ATTR_ASR_CLEANED, True)
            if tm.content_enabled():
                span.set_attribute(tm.ATTR_TEXT, text)
        if kind != "partial":
            STAGE_SECONDS.labels("asr", kind).observe(ms / 1000)
        return text, ms

    def _drop_speculative(self, utt: Utterance) -> None:
        """The speculative pass no longer covers the speech (the user spoke on, or the utterance
        is gone): it is cancelled, not left running unseen. Its thread ends on its own; what it
        hears is dropped."""
        if utt.speculative is not None:
            utt.speculative.cancel()
            utt.speculative = None

    async def _answer_peek(
        self, utt: Utterance, task: asyncio.Task[tuple[str, float]], msg: Msg
    ) -> None:
        n = len(utt.audio)
        heard = await _outcome(task)
        if heard is None:
            dropped = "the speculative pass was dropped: the user spoke on"
            await bus.reply(msg, RpcError(code=ErrorCode.SPEECH_RESUMED, message=dropped))
            return
        await bus.reply(msg, self._result(utt, *heard, n))

    async def _finish(self, utt: Utterance, msg: Msg, end: AsrEnd) -> None:
        try:
            if utt.partial_task is not None:
                utt.partial_task.cancel()
            n = len(utt.audio)
            spec = utt.speculative if end.reuse_speculative else None
            heard = None if spec is None else await _outcome(spec)  # only silence came after it
            if heard is None:
                heard = await self._transcribe(utt, "final", tm.extract(msg.headers))
            text, ms = heard
            await bus.reply(msg, self._result(utt, text, ms, n))
        finally:
            await self._release(utt)

    def _result(self, utt: Utterance, text: str, ms: float, n: int) -> AsrResult:
        return AsrResult(
            turn_id=utt.claim.turn_id,
            text=text,
            asr_ms=round(ms, 1),
            audio_ms=n / 32.0,
            worker_id=self.worker_id,
        )

    async def _release(self, utt: Utterance) -> None:
        self._drop_speculative(utt)
        self._utts.pop(utt.claim.turn_id, None)
        IN_FLIGHT.labels("asr").set(len(self._utts))
        if utt.sub is not None:
            with contextlib.suppress(Exception):
                await utt.sub.unsubscribe()
            utt.sub = None

    # -- partials ------------------------------------------------------------------------------
    async def _partials(self, utt: Utterance) -> None:
        assert self.nc is not None
        interval = self.cfg.partial_interval_ms / 1000.0
        min_new = int(0.3 * 32000)
        while not utt.ended:
            await asyncio.sleep(interval)
            if utt.ended or utt.paused or self._partial_lock.locked():
                continue  # partials are best effort: one at a time, none in the final silence
            if len(utt.audio) - utt.last_partial_len < min_new:
                continue
            utt.last_partial_len = len(utt.audio)
            async with self._partial_lock:
                text, _ = await self._transcribe(utt, "partial", utt.ctx)
            if utt.ended or not text or text == utt.last_partial_text:
                continue
            utt.last_partial_text = text
            await bus.publish(
                self.nc,
                subjects.events(utt.claim.session_id),
                TranscriptPartial(turn_id=utt.claim.turn_id, text=text),
            )

    async def _reaper(self) -> None:
        """Drop utterances whose gateway vanished (no end ever came)."""
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for utt in [u for u in self._utts.values() if u.deadline < now]:
                log.warning("dropping abandoned utterance %s", utt.claim.turn_id)
                utt.ended = True
                if utt.partial_task is not None:
                    utt.partial_task.cancel()
                await self._release(utt)

    async def close(self) -> None:
        self._engine_threads.shutdown(wait=False, cancel_futures=True)
        self.engine.close()
