"""Turn-taking decisions: what the gateway does about each turn event, as plain values.

`TurnPolicy` is pure and deterministic like `vad.TurnDetector`: no asyncio, no clock, no bus. It is
told each detector event (`vad.SpeechStart` ... `vad.SpeechEnd`) with a `Situation` (is a reply
playing, is a turn in flight, how far the utterance's ASR has got, what the detector hears) and
answers with decisions (`PauseReply`, `StartUtterance`, `Interrupt`, `Speculate`, ...) that
`turns.Turns` carries out. What it remembers: whether an utterance is open, whether the user is
speaking over a reply not yet interrupted (barge-in pending), and whether a reply was paused on one
speech-like frame only (tentative).

Barge-in: speech onset over a reply (or a turn still thinking) pauses the reply's audio at once
(until `min_interruption_ms` of speech, only while it sounds); what the speech was is decided from
its words at its first pause (`Overhear`, a final pass on the overlap): a backchannel ("uh-huh",
"yeah", "okay"; `is_backchannel`), the reply's own words (its echo; `echoes`), no words at all,
or speech shorter than `min_interruption_ms` (a cough) resume the reply where it paused and
start no turn (`DropUtterance`); anything else ("wait", "stop", "no", a question) interrupts the
reply and becomes the next turn. Without a pass at the pause, the final text decides the same.

End of turn: `fixed` turn detection ends a turn after the agent's `end_of_turn_silence_ms`.
`semantic` starts each silence with the eagerness' `unsure` wait and, at the pause, asks for a
judgement (`Judge`), which `turn_cues.end_window` turns into the wait that ends the turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.messages import AgentConfig, Eagerness, InterruptReason

from .turn_cues import SEMANTIC_WAITS, Verdict, echoes, end_window, is_backchannel
from .vad import SpeechEnd, SpeechFrame, SpeechPause, SpeechResume, SpeechStart, TurnEvent


@dataclass(frozen=True, slots=True)
class Situation:
    """The rest of the session as a turn event arrives."""

    reply_playing: bool = False  # a reply is on the output (playing, paused or held)
    reply_paused: bool = False
    turn_in_flight: bool = False  # a turn was submitted and its reply is not done
    asr_ready: bool = False  # the open utterance's ASR replica is claimed
    peeked: bool = False  # a final pass covers the open utterance's speech so far
    speculated: bool = False  # a speculative turn of the open utterance was submitted
    in_speech: bool = False  # the detector is inside a turn
    speech_like: bool = False  # the last frame's speech probability reached the threshold
    quiet: bool = True  # the last frame's speech probability was under the lower threshold
    speech_ms: int = 0  # the current turn's speech so far

    @property
    def idle(self) -> bool:
        return not self.turn_in_flight and not self.reply_playing


# -- decisions -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PauseReply:
    """Pause the reply's audio where it is (the output sends silence, keeping its position)."""


@dataclass(frozen=True, slots=True)
class ResumeReply:
    """Play the paused reply on from where it paused."""


@dataclass(frozen=True, slots=True)
class StartUtterance:
    """Open an utterance that began at `t_ms` (stream ms): claim an ASR replica, send it
    `preroll` and the frames that follow."""

    t_ms: int
    preroll: bytes


@dataclass(frozen=True, slots=True)
class Prefill:
    """The user began speaking with nothing in flight: have the coming prompt evaluated."""


@dataclass(frozen=True, slots=True)
class Stream:
    """One more frame of the open utterance."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the reply in flight and tell every stage."""

    reason: InterruptReason = "barge_in"


@dataclass(frozen=True, slots=True)
class Peek:
    """Have the ASR run its final pass on the speech so far (no turn submitted)."""


@dataclass(frozen=True, slots=True)
class Speculate:
    """Peek, and submit the turn speculatively when the text comes back in time."""


@dataclass(frozen=True, slots=True)
class Overhear:
    """Speech over a reply paused: have its words heard, then tell `on_overheard` them."""


@dataclass(frozen=True, slots=True)
class DropUtterance:
    """The speech was no turn (a backchannel, a cough): forget the utterance, listen afresh."""


@dataclass(frozen=True, slots=True)
class Judge:
    """Score the pause: is the utterance so far finished? (`end_window` says what to wait.)"""


@dataclass(frozen=True, slots=True)
class ResumeAsr:
    """The user spoke on after a peek: the ASR goes on with the utterance."""


@dataclass(frozen=True, slots=True)
class Retract:
    """Drop the utterance's speculative turn and its reply."""


@dataclass(frozen=True, slots=True)
class EndUtterance:
    """End of turn at `t_ms`, speech ended at `speech_end_ms` (stream ms). With `confirm`, the
    speculative turn already submitted is confirmed; else the final text is asked for."""

    t_ms: int
    speech_end_ms: int
    confirm: bool = False
    overlap: bool = False  # speech over a reply, not yet told from a backchannel: the text does


Decision = (
    PauseReply
    | ResumeReply
    | StartUtterance
    | Prefill
    | Stream
    | Interrupt
    | Peek
    | Speculate
    | Overhear
    | DropUtterance
    | Judge
    | ResumeAsr
    | Retract
    | EndUtterance
)


class TurnPolicy:
    def __init__(
        self,
        interruptions: bool = True,
        min_interruption_ms: int = 150,
        speculative_turns: bool = True,
        end_of_turn_silence_ms: int = 500,
        eagerness: Eagerness | None = None,
    ) -> None:
        self.interruptions = interruptions  # the agent lets the user speak over a reply
        self.min_interruption_ms = min_interruption_ms
        self.speculative_turns = speculative_turns
        # semantic turn detection: the waits of its eagerness; fixed: None
        self.waits = SEMANTIC_WAITS[eagerness] if eagerness else None
        # The silence that ends a turn until a judgement says otherwise.
        self.initial_window_ms = self.waits.unsure if self.waits else end_of_turn_silence_ms
        self.listening = False  # an utterance is open (from its SpeechStart to its SpeechEnd)
        self.barge_pending = False  # speaking over a reply: interrupt it once long enough
        self.tentative = False  # reply paused on one speech-like frame, not yet confirmed
        self.speech_ms = 0  # the open utterance's speech so far

    def on_event(self, ev: TurnEvent, now: Situation) -> list[Decision]:
        if isinstance(ev, SpeechStart):
            return self._start(ev, now)
        if isinstance(ev, SpeechFrame):
            return self._frame(ev, now)
        if isinstance(ev, SpeechPause):
            return self._pause(now)
        if isinstance(ev, SpeechResume):
            if not (self.listening and now.peeked):
                return []
            return [ResumeAsr(), Retract()] if now.speculated else [ResumeAsr()]
        return self._end(ev, now)

    @classmethod
    def for_agent(cls, agent: AgentConfig, speculative_turns: bool) -> TurnPolicy:
        td = agent.turn_detection
        return cls(
            interruptions=agent.interruptions,
            min_interruption_ms=agent.min_interruption_ms,
            speculative_turns=speculative_turns,
            end_of_turn_silence_ms=agent.end_of_turn_silence_ms,
            eagerness=td.eagerness if td.type == "semantic" else None,
        )

    def judge(self, p_audio: float | None, text: str | None) -> Verdict | None:
        """The silence that ends the paused turn (None under fixed turn detection)."""
        return end_window(self.waits, p_audio, text) if self.waits else None

    def after_audio(self, now: Situation) -> list[Decision]:
        """After each piece of microphone audio: pause a playing reply at the first
        speech-like frame, one frame before the detector confirms speech; resume it at once if
        the detector does not. Speech over a reply shorter than `min_interruption_ms` keeps it
        paused only while it sounds: a quiet frame resumes it, the next speech pauses it again."""
        if now.in_speech:
            self.tentative = False  # SpeechStart took over (it pauses, and resumes if short)
            if self.barge_pending and now.reply_playing:
                if now.speech_like and not now.reply_paused:
                    return [PauseReply()]
                # too short yet to interrupt: paused only while it sounds (a click, an echo)
                short = max(self.speech_ms, now.speech_ms) < self.min_interruption_ms
                if short and now.quiet and now.reply_paused:
                    return [ResumeReply()]
        elif now.speech_like:
            if now.reply_playing and not now.reply_paused and self.interruptions:
                self.tentative = True
                return [PauseReply()]
        elif self.tentative:
            self.tentative = False
            return [ResumeReply()]
        return []

    def _start(self, ev: SpeechStart, now: Situation) -> list[Decision]:
        speaking_over = now.reply_playing or now.turn_in_flight
        if speaking_over and not self.interruptions:
            return []
        out: list[Decision] = [PauseReply()] if now.reply_playing else []
        self.barge_pending = speaking_over
        self.listening = True
        self.speech_ms = 0
        out.append(StartUtterance(ev.t_ms, ev.preroll))
        if not speaking_over:
            out.append(Prefill())
        return out

    def on_overheard(self, text: str | None, reply_words: Sequence[str] = ()) -> list[Decision]:
        """The words of the speech over a reply, heard at its pause (None: the pass failed);
        `reply_words`, the reply's words around what plays (its echo says them)."""
        if not (self.listening and self.barge_pending):
            return []  # decided already, or the utterance is over
        if text is None:
            return []  # the final text decides
        self.barge_pending = False
        if not text.strip() or is_backchannel(text) or echoes(text, reply_words):
            self.listening = False
            return [ResumeReply(), DropUtterance()]
        return [Interrupt("barge_in")]

    def _frame(self, ev: SpeechFrame, now: Situation) -> list[Decision]:
        if not self.listening:
            return []
        self.speech_ms = max(self.speech_ms, now.speech_ms)
        return [Stream(ev.pcm)]

    def _pause(self, now: Situation) -> list[Decision]:
        if not self.listening:
            return []
        if self.barge_pending and self.speech_ms < self.min_interruption_ms:
            # too short to interrupt (a cough, a click): the reply carries on
            self.barge_pending = self.listening = False
            return [ResumeReply(), DropUtterance()]
        if not now.asr_ready:
            return []
        if self.barge_pending:
            out: list[Decision] = [Peek(), Overhear()]
        else:
            out = [Speculate() if self.speculative_turns and now.idle else Peek()]
        return [*out, Judge()] if self.waits else out

    def _end(self, ev: SpeechEnd, now: Situation) -> list[Decision]:
        out: list[Decision] = []
        if not self.listening:
            return out
        self.listening = False
        overlap, self.barge_pending = self.barge_pending, False
        if overlap and self.speech_ms < self.min_interruption_ms:
            return [ResumeReply(), DropUtterance()]
        confirm = now.speculated and now.peeked
        out.append(EndUtterance(ev.t_ms, ev.speech_end_ms, confirm, overlap=overlap))
        return out
