"""Turn-taking at the gateway: the microphone's 16 kHz PCM through the turn detector, and the
policy's decisions carried out.

`Turns` feeds the audio to `vad.TurnDetector`, asks `turn_policy.TurnPolicy` what each event
means, and does it: pause or resume the reply (`ReplyOut`), open an utterance and stream it to
an ASR replica (`AsrLink`), interrupt the reply in flight, peek, speculate, retract or confirm
(`Speculation`), and at the end of a turn fetch the final text and submit the turn. Stream time
(the detector's) becomes wall-clock time here, for the traces and the messages.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from services.common import bus
from services.common import telemetry as tm
from services.common.messages import (
    AgentConfig,
    AsrControl,
    ErrorCode,
    ErrorEvent,
    InterruptReason,
    Message,
    TranscriptFinal,
    TurnSubmit,
    now_ms,
)

from . import turn_policy as tp
from .asr_link import AsrLink, Utterance
from .reply_out import ReplyOut
from .settings import GatewaySettings
from .speculation import SpecTurn, Speculation
from .turntrace import TurnTraces
from .vad import SileroVADStream, TurnDetector, TurnEvent, shared_model


class Host(Protocol):
    """What turn-taking needs of the session: the turn in flight and its events."""

    @property
    def has_voice(self) -> bool: ...
    @property
    def active_turn(self) -> str | None: ...
    async def interrupt(self, reason: InterruptReason) -> None: ...
    async def submit(self, submit: TurnSubmit, ctx: Any) -> None: ...
    async def emit(self, event: Message) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...


class Turns:
    def __init__(
        self,
        session_id: str,
        settings: GatewaySettings,
        agent: AgentConfig,
        traces: TurnTraces,
        asr: AsrLink,
        speculation: Speculation,
        out: ReplyOut[Any],
        host: Host,
        vad: SileroVADStream | None = None,
    ) -> None:
        self.sid = session_id
        self.traces = traces
        self.asr = asr
        self.speculation = speculation
        self.out = out
        self.host = host
        self.detector = TurnDetector(
            vad or SileroVADStream(shared_model()),
            end_of_turn_silence_ms=agent.end_of_turn_silence_ms,
            pause_ms=min(settings.speculative_pause_ms, agent.end_of_turn_silence_ms),
        )
        self.policy = tp.TurnPolicy(
            interruptions=agent.interruptions,
            min_interruption_ms=agent.min_interruption_ms,
            speculative_turns=settings.speculative_turns,
        )
        self.utt: Utterance | None = None  # the utterance being spoken
        self.spec: SpecTurn | None = None  # its speculative turn

    # -- audio in (mic.PcmSink) ------------------------------------------------------------------
    @property
    def trailing_silence(self) -> bool:
        """Inside a turn's trailing silence (a gap in the audio counts toward its end)."""
        return self.detector.silence_ms > 0

    async def audio(self, pcm: bytes) -> None:
        """Microphone audio: 16 kHz mono PCM16, any length."""
        for ev in self.detector.feed(pcm):
            await self._on_event(ev)
        for decision in self.policy.after_audio(self._situation()):
            await self._do(decision)

    async def fill(self, pcm: bytes) -> None:
        """Silence standing in for audio that did not come (a DTX gap)."""
        for ev in self.detector.feed(pcm):
            await self._on_event(ev)

    # -- decisions -------------------------------------------------------------------------------
    def _situation(self) -> tp.Situation:
        d, utt, spec = self.detector, self.utt, self.spec
        return tp.Situation(
            reply_playing=self.out.playing is not None,
            reply_paused=self.out.paused,
            turn_in_flight=self.host.active_turn is not None,
            asr_ready=utt is not None and utt.ready,
            peeked=utt is not None and utt.speculative,
            speculated=spec is not None and spec.text is not None,
            in_speech=d.in_speech,
            speech_like=d.last_prob >= d.threshold,
            speech_ms=d.speech_ms,
        )

    def _wall_ms(self, t_ms: int) -> float:
        return now_ms() - (self.detector.t_ms - t_ms)

    async def _on_event(self, ev: TurnEvent) -> None:
        for decision in self.policy.on_event(ev, self._situation()):
            await self._do(decision)

    async def _do(self, d: tp.Decision) -> None:
        utt, spec = self.utt, self.spec
        if isinstance(d, tp.PauseReply):
            self.out.pause()
        elif isinstance(d, tp.ResumeReply):
            self.out.resume()
        elif isinstance(d, tp.StartUtterance):
            turn_id = bus.new_id()
            utt = self.utt = Utterance(
                turn_id, self.traces.start(turn_id, "voice", self._wall_ms(d.t_ms))
            )
            self.spec = SpecTurn(utt)
            utt.audio.extend(d.preroll)
            self.host.spawn(self.asr.claim(utt), "asr-claim")
        elif isinstance(d, tp.Prefill):
            await self.speculation.prefill("")
        elif isinstance(d, tp.Interrupt):
            await self.host.interrupt(d.reason)
        elif isinstance(d, tp.EndUtterance):
            self._end(d)
        elif utt is None or spec is None:
            return  # the rest act on the open utterance
        elif isinstance(d, tp.Stream):
            await self.asr.add(utt, d.pcm)
        elif isinstance(d, tp.Speculate):
            pauses = utt.paused()
            speech_end = self._wall_ms(self.detector.speech_end_ms)
            self.host.spawn(self.speculation.speculate(spec, pauses, speech_end), "speculate")
        elif isinstance(d, tp.Peek):
            utt.paused()
            await self.asr.control(utt, AsrControl.PEEK)
        elif isinstance(d, tp.ResumeAsr):
            utt.resumed()
            await self.asr.control(utt, AsrControl.RESUME)
        elif isinstance(d, tp.Retract) and spec.text is not None:  # not given up meanwhile
            await self.speculation.retract(spec)

    def _end(self, d: tp.EndUtterance) -> None:
        utt, spec = self.utt, self.spec
        self.utt = self.spec = None
        if utt is None or spec is None:
            return
        utt.ended = True
        speech_end = self._wall_ms(d.speech_end_ms)
        eot_ms = d.t_ms - d.speech_end_ms
        self.traces.speech_end_ms[utt.turn_id] = speech_end
        self.traces.stage(utt.turn_id, "end_of_turn", speech_end, {tm.ATTR_EOT_MS: eot_ms})
        if d.confirm:
            self.host.spawn(self._confirm(spec, speech_end, eot_ms), "confirm")
        else:
            self.host.spawn(self._end_utterance(utt, speech_end, eot_ms), "asr-end")

    async def _confirm(self, spec: SpecTurn, speech_end: float, eot_ms: float) -> None:
        if not await self.speculation.confirm(spec, speech_end, eot_ms):
            # the session did not take it: the ordinary path
            await self._end_utterance(spec.utt, speech_end, eot_ms)

    async def _end_utterance(self, utt: Utterance, speech_end: float, eot_ms: float) -> None:
        eot_at = now_ms()
        result = await self.asr.end(utt, speech_end)
        if result is None:
            self.out.resume()
            self.traces.end(utt.turn_id, "failed")
            await self.host.emit(
                ErrorEvent(
                    code=ErrorCode.TURN_FAILED,
                    turn_id=utt.turn_id,
                    message="speech recognition failed for this turn",
                )
            )
            return
        if not result.text.strip():
            self.out.resume()  # noise or silence: no turn
            self.traces.end(utt.turn_id, "no_speech")
            return
        if self.host.active_turn is not None:
            await self.host.interrupt("new_turn")
        await self.host.emit(TranscriptFinal(turn_id=utt.turn_id, text=result.text, source="voice"))
        await self.host.submit(
            TurnSubmit(
                session_id=self.sid,
                turn_id=utt.turn_id,
                text=result.text,
                source="voice",
                voice=self.host.has_voice,
                speech_end_ms=speech_end,
                end_of_turn_ms=eot_ms,
                asr_ms=result.asr_ms,
                asr_wait_ms=round(now_ms() - eot_at, 1),
            ),
            utt.ctx,
        )
