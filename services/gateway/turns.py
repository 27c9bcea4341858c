"""Turn-taking at the gateway: the microphone's 16 kHz PCM through the turn detector, and the
policy's decisions carried out.

`Turns` feeds the audio to `vad.TurnDetector`, asks `turn_policy.TurnPolicy` what each event
means, and does it: pause or resume the reply (`ReplyOut`), open an utterance and stream it to
an ASR replica (`AsrLink`), interrupt the reply in flight, peek, speculate, retract or confirm
(`Speculation`), judge a pause under semantic turn detection (the end-of-turn model's score of
the sound and the text so far, then the silence the policy says to wait), and at the end of a
turn fetch the final text and submit the turn. Stream time (the detector's) becomes wall-clock
time here, for the traces and the messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
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

from . import smart_turn, turn_cues
from . import turn_policy as tp
from .asr_link import AsrLink, Utterance
from .reply_out import ReplyOut
from .settings import GatewaySettings
from .speculation import SpecTurn, Speculation
from .turntrace import TurnTraces
from .vad import SileroVADStream, TurnDetector, TurnEvent, shared_model

log = logging.getLogger(__name__)

# How long a judgement waits for the text of the pause's pass; the `unsure` wait runs meanwhile.
HEARD_TIMEOUT_S = 2.0


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
        self.policy = tp.TurnPolicy.for_agent(agent, settings.speculative_turns)
        window = self.policy.initial_window_ms
        self.detector = TurnDetector(
            vad or SileroVADStream(shared_model()),
            end_of_turn_silence_ms=window,
            pause_ms=min(settings.speculative_pause_ms, window),
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
            quiet=d.last_prob < d.neg_threshold,
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
            speech_end = self._wall_ms(self.detector.speech_end_ms)
            self.host.spawn(self._peek(utt, speech_end), "peek")
        elif isinstance(d, tp.Overhear):
            self.host.spawn(self._overhear(utt, utt.pauses), "overhear")
        elif isinstance(d, tp.DropUtterance):
            self._drop(utt)
        elif isinstance(d, tp.Judge):
            self.host.spawn(self._judge(utt, utt.pauses, self.detector.silence_ms), "judge")
        elif isinstance(d, tp.ResumeAsr):
            utt.resumed()
            await self.asr.control(utt, AsrControl.RESUME)
        elif isinstance(d, tp.Retract) and spec.text is not None:  # not given up meanwhile
            await self.speculation.retract(spec)

    async def _peek(self, utt: Utterance, speech_end: float) -> None:
        """A final pass on the speech so far, kept by the replica for the end of the turn."""
        try:
            await self.asr.peek(utt, speech_end)
        except (bus.BusUnavailable, bus.RemoteError) as exc:
            log.info("turn %s: peek failed: %s", utt.turn_id, exc)

    async def _overhear(self, utt: Utterance, pauses: int) -> None:
        """Speech over a reply paused: its words say whether it takes the turn."""
        text = await utt.heard(HEARD_TIMEOUT_S)
        if utt is not self.utt or utt.pauses != pauses:
            return
        decisions = self.policy.on_overheard(text, self._reply_words())
        if decisions:
            log.info(
                "turn %s: %r over the reply: %s",
                utt.turn_id,
                text,
                "interrupts" if any(isinstance(d, tp.Interrupt) for d in decisions) else "resumed",
            )
        for decision in decisions:
            await self._do(decision)

    def _reply_words(self) -> list[str]:
        playing = self.out.playing
        return playing.words_playing() if playing is not None else []

    def _drop(self, utt: Utterance) -> None:
        """The utterance was no turn: the ASR side closed, the detector listening afresh."""
        self.utt = self.spec = None
        utt.ended = True
        self.detector.end_turn()
        self.traces.end(utt.turn_id, "backchannel")
        self.host.spawn(self._close_asr(utt), "asr-close")

    async def _close_asr(self, utt: Utterance) -> None:
        await utt.claimed.wait()
        if utt.ready:
            await self.asr.close(utt)

    async def _judge(self, utt: Utterance, pauses: int, silence_ms: int) -> None:
        """Is the utterance so far finished? The sound is scored while the text comes (a text
        that says it plainly does not wait for the score); then the policy's verdict sets the
        silence that ends this turn."""
        t0 = time.monotonic()
        score = asyncio.ensure_future(self._score(bytes(utt.audio)))
        text = await utt.heard(HEARD_TIMEOUT_S)
        # A transcript that plainly goes on (a trailing "and") decides alone.
        goes_on = turn_cues.text_cue(text) == "incomplete"
        p_audio = None if goes_on and not score.done() else await score
        if utt.ended or utt.pauses != pauses:
            return  # the turn ended or the user spoke on meanwhile
        verdict = self.policy.judge(p_audio, text)
        if verdict is None:
            return
        self.detector.set_window(verdict.window_ms)
        took = (time.monotonic() - t0) * 1000
        log.info(
            "turn %s: %s (sound %s, text %r) after %d ms of silence, judged in %.0f ms; wait %d ms",
            utt.turn_id,
            verdict.judged,
            "-" if p_audio is None else f"{p_audio:.2f}",
            text,
            silence_ms,
            took,
            verdict.window_ms,
        )
        self.traces.stage(
            utt.turn_id,
            "end_of_turn_judged",
            now_ms() - took,
            {
                tm.ATTR_EOT_JUDGED: verdict.judged,
                tm.ATTR_EOT_P_AUDIO: p_audio,
                tm.ATTR_EOT_TEXT_CUE: verdict.cue,
                tm.ATTR_EOT_WINDOW_MS: verdict.window_ms,
            },
        )

    async def _score(self, pcm: bytes) -> float | None:
        """The end-of-turn model's P(finished) of the utterance's sound; None without a model."""
        model = smart_turn.shared_model()
        if model is None:
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, model.score, pcm)
        except Exception:
            log.exception("end-of-turn model failed: the text alone judges the pause")
            return None

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
            self.host.spawn(self._end_utterance(utt, speech_end, eot_ms, d.overlap), "asr-end")

    async def _confirm(self, spec: SpecTurn, speech_end: float, eot_ms: float) -> None:
        if not await self.speculation.confirm(spec, speech_end, eot_ms):
            # the session did not take it: the ordinary path
            await self._end_utterance(spec.utt, speech_end, eot_ms)

    async def _end_utterance(
        self, utt: Utterance, speech_end: float, eot_ms: float, overlap: bool = False
    ) -> None:
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
        over_reply = overlap and (
            turn_cues.is_backchannel(result.text)
            or turn_cues.echoes(result.text, self._reply_words())
        )
        if not result.text.strip() or over_reply:
            self.out.resume()  # noise, silence or a backchannel over the reply: no turn
            self.traces.end(utt.turn_id, "no_speech" if not result.text.strip() else "backchannel")
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
