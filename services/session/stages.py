"""The LLM and TTS replicas working on one turn, as the session's turn sees them.

`Stages` claims them (both at once; the LLM again on another replica when one fails before it
said anything; while no replica takes a claim, up to `stage_wait_s`), forwards the reply's text
to the TTS, and stops a generation or the reply's audio. Their output reaches the turn's inbox
through `queue_decoded` subscriptions; the LLM's is tagged with the attempt it came from, so a
replaced attempt's late words are recognised."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import bus, subjects
from services.common.messages import (
    WAITING_EVERY_S,
    AgentConfig,
    BadMessage,
    ChatMessage,
    ClaimAck,
    ErrorCode,
    Interrupt,
    LLMOut,
    LLMRequest,
    Message,
    ToolSpec,
    TTSRequest,
    TTSText,
    TurnWaiting,
    decode,
)

from .outbox import Outbox
from .settings import SessionSettings

log = logging.getLogger(__name__)


def queue_decoded(
    inbox: asyncio.Queue[Any], kind: Any, what: str, stream: str | None = None
) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback putting decoded messages into `inbox` (as `(stream, message)`
    when `stream` is given); a message that does not decode is logged and dropped."""

    async def cb(msg: Msg) -> None:
        try:
            value = decode(kind, msg.data)
        except BadMessage as exc:
            log.warning("%s: bad message on %s: %s", what, msg.subject, exc)
            return
        inbox.put_nowait(value if stream is None else (stream, value))

    return cb


class Stages:
    def __init__(
        self,
        nc: NATS,
        settings: SessionSettings,
        agent: AgentConfig,
        session_id: str,
        turn_id: str,
        reply_id: str,
        *,
        voice: bool,
        inbox: asyncio.Queue[Any],
        outbox: Outbox,
    ) -> None:
        self.nc = nc
        self.cfg = settings
        self.agent = agent
        self.sid = session_id
        self.tid = turn_id
        self.rid = reply_id
        self.voice = voice  # a TTS speaks this reply (False after a failed claim)
        self.inbox = inbox
        self.outbox = outbox
        self.subs: list[Subscription] = []
        self.llm_stream: str | None = None  # the LLM attempt whose output counts
        self.llm_attempts = 0  # of this pass
        self.tools: list[ToolSpec] = []  # offered to the model in this pass
        self._streams = 0  # LLM attempts of every pass: each has its own output subject
        self._tts_seq = 0

    async def claim(self, messages: list[ChatMessage]) -> None:
        """Claim a TTS replica (for a voice turn) and an LLM replica at once. The LLM's first
        words wait in the inbox until both have answered, so none reach the TTS before it has
        subscribed."""
        if not self.voice:
            await self.claim_llm(messages)
            return
        # Both requests leave in the same write to the bus.
        tts = asyncio.ensure_future(self.claim_tts())
        llm = asyncio.ensure_future(self.claim_llm(messages))
        try:
            await llm
        except BaseException:
            tts.cancel()
            raise
        await tts

    async def claim_tts(self) -> None:
        """Claim a TTS replica; none within `stage_wait_s` (or a refusal): the reply goes on in
        text (`voice` turns False)."""
        request = TTSRequest(
            session_id=self.sid, turn_id=self.tid, reply_id=self.rid, voice=self.agent.voice
        )
        try:
            await self._claim("tts", subjects.TTS_CLAIM, request)
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            log.warning("turn %s: no tts: %s", self.tid, exc)
            self.voice = False
            await self.outbox.error(
                ErrorCode.TTS_UNAVAILABLE, "speech output is unavailable; replying in text"
            )

    async def claim_llm(self, messages: list[ChatMessage]) -> None:
        """Claim an LLM replica for a new attempt, up to `llm_attempts` in all when a replica
        refuses; none within `stage_wait_s`: no language model."""
        last: Exception | None = None
        while self.llm_attempts < self.cfg.llm_attempts:
            self.llm_attempts += 1
            self._streams += 1
            stream_id = f"{self.rid}a{self._streams}"
            self.subs.append(
                await self.nc.subscribe(
                    subjects.llm_out(self.sid, stream_id),
                    cb=queue_decoded(self.inbox, LLMOut, f"turn {self.tid}", stream_id),
                )
            )
            request = LLMRequest(
                session_id=self.sid,
                turn_id=self.tid,
                reply_id=self.rid,
                stream_id=stream_id,
                messages=messages,
                params=self.agent.llm,
                tools=self.tools,
            )
            try:
                await self._claim("llm", subjects.LLM_CLAIM, request)
                self.llm_stream = stream_id
                return
            except bus.BusUnavailable as exc:  # waited stage_wait_s: none will come soon
                last = exc
                break
            except bus.RemoteError as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"no language model available ({last})")

    async def _claim(self, stage: Literal["llm", "tts"], subject: str, request: Message) -> None:
        """Claim a replica of `stage`. While none answers (none up: a warm-up, a rolling update,
        a scale from zero) or all are busy, ask again with a growing pause for up to
        `stage_wait_s`, telling the client (`turn.waiting`, every WAITING_EVERY_S); then raise
        `BusUnavailable`. Any other refusal raises its `RemoteError` at once."""
        told: float | None = None  # when the client was last told

        async def waiting(left: float, why: str) -> None:
            nonlocal told
            if told is None:
                log.warning("turn %s: waiting up to %.0f s for %s: %s", self.tid, left, stage, why)
            if told is None or time.monotonic() - told >= WAITING_EVERY_S:  # the gateway: alive
                told = time.monotonic()
                await self.outbox.emit(
                    TurnWaiting(turn_id=self.tid, stage=stage, deadline_s=round(left, 1))
                )

        try:
            await bus.request_patiently(
                self.nc,
                subject,
                request,
                ClaimAck,
                timeout=self.cfg.claim_timeout_s,
                wait_s=self.cfg.stage_wait_s,
                again=_no_replica_or_busy,
                waiting=waiting,
            )
        except bus.BusUnavailable as exc:
            raise bus.BusUnavailable(f"no {stage} replica took the turn: {exc}") from None

    async def next_pass(self, messages: list[ChatMessage], tools: list[ToolSpec]) -> None:
        """The model again, after its tool calls' results (`messages` end with them): a new
        attempt budget, on whichever replica takes it."""
        self.llm_stream = None
        self.llm_attempts = 0
        self.tools = tools
        await self.claim_llm(messages)

    @property
    def can_retry_llm(self) -> bool:
        return self.llm_attempts < self.cfg.llm_attempts

    async def cancel_llm(self) -> None:
        """Stop the current generation (only it: the TTS keeps what it has) and ignore it."""
        stream, self.llm_stream = self.llm_stream, None
        if stream is not None:
            await self._interrupt(stream)

    async def stop_reply(self) -> None:
        """Stop the whole reply: its generation, its synthesis and its audio at the gateway."""
        await self._interrupt(self.rid)

    async def _interrupt(self, reply_id: str) -> None:
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(session_id=self.sid, reply_id=reply_id, turn_id=self.tid, reason="failure"),
        )

    async def speak(self, text: str, *, final: bool) -> None:
        """The next piece of the reply's text for the TTS (`final`: nothing follows)."""
        self._tts_seq += 1
        await bus.publish(
            self.nc,
            subjects.tts_in(self.sid, self.rid),
            TTSText(reply_id=self.rid, seq=self._tts_seq, text=text, final=final),
        )


def _no_replica_or_busy(exc: bus.BusUnavailable | bus.RemoteError) -> bool:
    return isinstance(exc, bus.BusUnavailable) or exc.error.code == ErrorCode.BUSY
