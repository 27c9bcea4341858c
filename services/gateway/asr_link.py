"""The gateway's side of the ASR protocol, one utterance at a time.

An `Utterance` keeps everything the user said in it, so the audio can wait while no asr replica
is free and be sent again to another one. `AsrLink` claims a replica (asked again every
`BUSY_RETRY_S` while every replica is busy), streams the utterance's frames on its subject,
sends the `peek` / `resume` controls of a speculative final pass, asks for the final text at the
end of the turn (once more, on another replica, when the first fails), and closes the ASR side
of a confirmed speculative turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS

from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    AsrClaim,
    AsrControl,
    AsrEnd,
    AsrResult,
    ClaimAck,
    ErrorCode,
    now_ms,
)

from .settings import GatewaySettings

log = logging.getLogger(__name__)

BUSY_RETRY_S = 0.1  # an ASR claim refused for capacity is asked again after this
SEND_BYTES = 1024  # audio goes out in 32 ms frames of PCM16 16 kHz
BYTES_PER_S = 32000


class Utterance:
    """Audio of one user utterance on its way to an ASR replica."""

    def __init__(self, turn_id: str, ctx: Any = None) -> None:
        self.turn_id = turn_id
        self.ctx = ctx  # the turn's trace context
        self.audio = bytearray()  # everything, kept for a retry on another replica
        self.claimed = asyncio.Event()
        self.failed = False
        self.sent = 0  # bytes of `audio` already published
        self.speculative = False  # a speculative final pass covers all the speech so far
        self.pauses = 0  # pauses and resumes so far: tells a stale speculative result
        self.ended = False
        self._heard: asyncio.Future[str | None] | None = None  # the text at the last pause

    @property
    def ready(self) -> bool:
        """A replica holds the utterance: its frames go out as they come."""
        return self.claimed.is_set() and not self.failed

    def paused(self) -> int:
        """The user paused: a final pass starts on the speech so far. Returns the pause count."""
        self.speculative = True
        self.pauses += 1
        self._heard = asyncio.get_running_loop().create_future()
        return self.pauses

    def resumed(self) -> None:
        """The user spoke on: the speculative pass no longer covers the speech."""
        self.speculative = False
        self.pauses += 1

    def hear(self, pauses: int, text: str | None) -> None:
        """The text of the pass started at pause number `pauses` (None: it failed)."""
        if pauses == self.pauses and self._heard is not None and not self._heard.done():
            self._heard.set_result(text)

    async def heard(self, timeout: float) -> str | None:
        """The text of the speech up to the current pause, once its pass is done; None when it
        failed, is stale or takes longer than `timeout` seconds."""
        fut = self._heard
        if fut is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            return None


class AsrLink:
    def __init__(
        self, nc: NATS, session_id: str, settings: GatewaySettings, agent: AgentConfig
    ) -> None:
        self.nc = nc
        self.sid = session_id
        self.cfg = settings
        self.agent = agent

    def _subject(self, utt: Utterance) -> str:
        return subjects.asr_utterance(self.sid, utt.turn_id)

    async def claim(self, utt: Utterance) -> None:
        """Claim a replica for `utt` and send it the audio so far; `utt.failed` when none."""
        claim = AsrClaim(
            session_id=self.sid,
            turn_id=utt.turn_id,
            language=self.agent.language,
            hot_words=self.agent.hot_words,
        )
        give_up = time.monotonic() + self.cfg.claim_timeout_s
        while True:
            try:
                await bus.request(
                    self.nc,
                    subjects.ASR_CLAIM,
                    claim,
                    ClaimAck,
                    timeout=self.cfg.claim_timeout_s,
                    ctx=utt.ctx,
                )
                utt.sent = 0
            except (bus.BusUnavailable, bus.RemoteError) as exc:
                # Every replica asked was at capacity: the audio waits in `utt.audio`, so ask
                # again shortly (an utterance ends within a second or two somewhere), also once
                # the user has stopped speaking: the answer comes late rather than not at all.
                busy = isinstance(exc, bus.RemoteError) and exc.error.code == ErrorCode.BUSY
                if busy and time.monotonic() < give_up:
                    await asyncio.sleep(BUSY_RETRY_S)
                    continue
                log.warning("asr claim failed: %s", exc)
                utt.failed = True
            break
        utt.claimed.set()
        if not utt.failed:
            await self.flush(utt)

    async def add(self, utt: Utterance, pcm: bytes) -> None:
        """One more frame of the utterance (kept up to `max_utterance_s`), sent when claimed."""
        if len(utt.audio) < self.cfg.max_utterance_s * BYTES_PER_S:
            utt.audio.extend(pcm)
        if utt.ready:
            await self.flush(utt)

    async def flush(self, utt: Utterance) -> None:
        subject = self._subject(utt)
        while utt.sent < len(utt.audio):
            await self.nc.publish(subject, bytes(utt.audio[utt.sent : utt.sent + SEND_BYTES]))
            utt.sent += SEND_BYTES

    async def control(self, utt: Utterance, ctl: AsrControl) -> None:
        """`PEEK` (a final pass on the speech so far, partials stop) or `RESUME`."""
        await bus.publish(
            self.nc, self._subject(utt), AsrEnd(speech_end_ms=now_ms()), ctl.headers(), utt.ctx
        )

    async def peek(self, utt: Utterance, speech_end: float) -> AsrResult:
        """The text so far, from a final pass the replica keeps for the end of the turn; also
        told to the utterance (`Utterance.heard`). Raises `bus.BusUnavailable` or
        `bus.RemoteError`."""
        pauses = utt.pauses
        try:
            result: AsrResult = await bus.request(
                self.nc,
                self._subject(utt),
                AsrEnd(speech_end_ms=speech_end),
                AsrResult,
                timeout=self.cfg.asr_timeout_s,
                headers=AsrControl.PEEK.headers(),
                ctx=utt.ctx,
            )
        except (bus.BusUnavailable, bus.RemoteError):
            utt.hear(pauses, None)
            raise
        utt.hear(pauses, result.text)
        return result

    async def end(self, utt: Utterance, speech_end: float) -> AsrResult | None:
        """The final text of the utterance; on a failure, once more on another replica with the
        whole utterance. None when both failed."""
        await utt.claimed.wait()
        for attempt in range(2):
            if utt.failed or attempt:
                utt.failed = False
                await self.claim(utt)  # another replica, with the whole utterance again
                if utt.failed:
                    continue
            try:
                result: AsrResult = await bus.request(
                    self.nc,
                    self._subject(utt),
                    AsrEnd(
                        speech_end_ms=speech_end, reuse_speculative=utt.speculative and not attempt
                    ),
                    AsrResult,
                    timeout=self.cfg.asr_timeout_s,
                    headers=AsrControl.END.headers(),
                    ctx=utt.ctx,
                )
                return result
            except (bus.BusUnavailable, bus.RemoteError) as exc:
                log.warning("asr final failed for %s (attempt %d): %s", utt.turn_id, attempt, exc)
        return None

    async def close(self, utt: Utterance) -> None:
        """End the ASR side of a confirmed speculative turn (its pass is reused, nothing new)."""
        with contextlib.suppress(bus.BusUnavailable, bus.RemoteError):
            await bus.request(
                self.nc,
                self._subject(utt),
                AsrEnd(speech_end_ms=now_ms(), reuse_speculative=True),
                AsrResult,
                timeout=self.cfg.asr_timeout_s,
                headers=AsrControl.END.headers(),
                ctx=utt.ctx,
            )
