"""Speculative turns: the reply is produced during the end-of-turn silence, before the turn ends.

Early in the silence the text so far is asked for (`AsrLink.peek`) and, while nothing else is in
flight, the turn is submitted at once with `speculative: true`: the session produces the reply
but holds its events and history, and `ReplyOut` holds its audio. When the end of turn is
confirmed, `confirm` publishes `transcript.final` and `TurnConfirmed` and lets the audio play; if
the user speaks on, `retract` broadcasts `Interrupt {reason: retracted}` and the reply is dropped.
`prefill` is the lighter hint: the user is speaking, have the coming prompt evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from nats.aio.client import Client as NATS

from services.common import bus, subjects
from services.common.messages import (
    Interrupt,
    Message,
    TranscriptFinal,
    TurnAccepted,
    TurnConfirmed,
    TurnPrefill,
    TurnSubmit,
)

from .asr_link import AsrLink, Utterance
from .reply_out import ReplyOut
from .settings import GatewaySettings

log = logging.getLogger(__name__)


class Host(Protocol):
    """What speculation needs of the session: the turn in flight, and its events."""

    @property
    def has_voice(self) -> bool: ...
    def idle(self) -> bool: ...
    def set_in_flight(self, turn_id: str, reply_id: str | None) -> None: ...
    def reply_accepted(self, turn_id: str, reply_id: str) -> None: ...
    async def emit(self, event: Message) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...


class SpecTurn:
    """One utterance's speculative turn (submitted again after each pause it is retracted at)."""

    def __init__(self, utt: Utterance) -> None:
        self.utt = utt
        self.text: str | None = None  # a speculative turn was submitted with this text
        self.reply: str | None = None
        self.confirmed = False
        self.accepted = asyncio.Event()  # the session answered the speculative submit


class Speculation:
    def __init__(
        self,
        nc: NATS,
        session_id: str,
        settings: GatewaySettings,
        asr: AsrLink,
        out: ReplyOut[Any],
        host: Host,
    ) -> None:
        self.nc = nc
        self.sid = session_id
        self.cfg = settings
        self.asr = asr
        self.out = out
        self.host = host

    async def prefill(self, text: str) -> None:
        """The user is speaking and nothing is in flight: let the session have the coming
        turn's prompt evaluated (a hint; the LLM's first token then waits on less)."""
        if self.cfg.speculative_turns:
            with contextlib.suppress(Exception):
                await bus.publish(
                    self.nc, subjects.SESSION_PREFILL, TurnPrefill(session_id=self.sid, text=text)
                )

    async def speculate(self, spec: SpecTurn, pauses: int, speech_end: float) -> None:
        """Early in the end-of-turn silence: transcribe, and when nothing else is in flight,
        submit the turn at once. The session produces the reply but holds it until the end of
        turn is confirmed (`confirm`); if the user speaks on, it is retracted (`retract`)."""
        utt = spec.utt
        try:
            result = await self.asr.peek(utt, speech_end)
        except (bus.BusUnavailable, bus.RemoteError):
            return  # the end of turn takes the ordinary path
        if utt.ended or utt.pauses != pauses or not result.text.strip() or not self.host.idle():
            return
        spec.text = result.text
        spec.accepted.clear()  # a confirmation now waits for this submit, not a retracted one
        self.out.hold(utt.turn_id)
        submit = TurnSubmit(
            session_id=self.sid,
            turn_id=utt.turn_id,
            text=result.text,
            source="voice",
            voice=self.host.has_voice,
            speech_end_ms=speech_end,
            asr_ms=result.asr_ms,
            speculative=True,
        )
        try:
            accepted: TurnAccepted = await bus.request(
                self.nc,
                subjects.SESSION_TURN,
                submit,
                TurnAccepted,
                timeout=self.cfg.claim_timeout_s,
                ctx=utt.ctx,
            )
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            log.warning("speculative turn not accepted: %s", exc)
            spec.text = None
            self.out.unhold(utt.turn_id)
            spec.accepted.set()
            return
        spec.reply = accepted.reply_id
        spec.accepted.set()
        if spec.text is None:  # retracted while the session was accepting it
            await self.retract(spec, accepted.reply_id)
        elif spec.confirmed:
            self.host.reply_accepted(utt.turn_id, accepted.reply_id)

    async def retract(self, spec: SpecTurn, reply_id: str | None = None) -> None:
        """The user spoke on: the speculative reply disappears without a trace."""
        utt = spec.utt
        reply_id = reply_id or spec.reply
        log.info(
            "turn %s: the user spoke on; speculative reply %s retracted", utt.turn_id, reply_id
        )
        spec.text, spec.reply = None, None
        self.out.unhold(utt.turn_id)
        if reply_id is not None:
            self.out.drop(reply_id)
        pb = self.out.playing
        if pb is not None and pb.turn_id == utt.turn_id:
            self.out.stop()
        await bus.publish(
            self.nc,
            subjects.interrupt(self.sid),
            Interrupt(
                session_id=self.sid, reply_id=reply_id, turn_id=utt.turn_id, reason="retracted"
            ),
            ctx=utt.ctx,
        )

    async def confirm(self, spec: SpecTurn, speech_end: float, eot_ms: float) -> bool:
        """The end of turn is confirmed: release the speculative reply (text and audio).
        False when the session did not take the turn: it takes the ordinary path."""
        utt = spec.utt
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.claim_timeout_s):  # not wait_for: no extra task
                await spec.accepted.wait()
        if spec.text is None:
            return False
        spec.confirmed = True
        self.host.set_in_flight(utt.turn_id, spec.reply)
        self.out.unhold(utt.turn_id)
        await self.host.emit(TranscriptFinal(turn_id=utt.turn_id, text=spec.text, source="voice"))
        await bus.publish(
            self.nc,
            subjects.playback(self.sid),
            TurnConfirmed(turn_id=utt.turn_id, end_of_turn_ms=eot_ms, speech_end_ms=speech_end),
            ctx=utt.ctx,
        )
        self.out.release(utt.turn_id)
        self.host.spawn(self.asr.close(utt), "asr-close")
        return True
