"""Turn-taking decisions: what the gateway does about each turn event, as plain values.

`TurnPolicy` is pure and deterministic like `vad.TurnDetector`: no asyncio, no clock, no bus.
It is told each detector event (`vad.SpeechStart` ... `vad.SpeechEnd`) with a `Situation` (is a
reply playing, is a turn in flight, how far the utterance's ASR has got, what the detector hears)
and answers with decisions (`PauseReply`, `StartUtterance`, `Interrupt`, `Speculate`, ...) that
`turns.Turns` carries out. What it remembers: whether an utterance is open, whether the user is
speaking over a reply not yet interrupted (barge-in pending), and whether a reply was paused on
one speech-like frame only (tentative).

Barge-in: speech onset over a reply pauses it; once the speech has lasted `min_interruption_ms`
the reply is interrupted; speech that ends sooner (a cough) resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.messages import InterruptReason

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


Decision = (
    PauseReply
    | ResumeReply
    | StartUtterance
    | Prefill
    | Stream
    | Interrupt
    | Peek
    | Speculate
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
    ) -> None:
        self.interruptions = interruptions  # the agent lets the user speak over a reply
        self.min_interruption_ms = min_interruption_ms
        self.speculative_turns = speculative_turns
        self.listening = False  # an utterance is open (from its SpeechStart to its SpeechEnd)
        self.barge_pending = False  # speaking over a reply: interrupt it once long enough
        self.tentative = False  # reply paused on one speech-like frame, not yet confirmed

    def on_event(self, ev: TurnEvent, now: Situation) -> list[Decision]:
        if isinstance(ev, SpeechStart):
            return self._start(ev, now)
        if isinstance(ev, SpeechFrame):
            return self._frame(ev, now)
        if isinstance(ev, SpeechPause):
            if not (self.listening and now.asr_ready):
                return []
            return [Speculate() if self.speculative_turns and now.idle else Peek()]
        if isinstance(ev, SpeechResume):
            if not (self.listening and now.peeked):
                return []
            return [ResumeAsr(), Retract()] if now.speculated else [ResumeAsr()]
        return self._end(ev, now)

    def after_audio(self, now: Situation) -> list[Decision]:
        """After each piece of microphone audio: pause a playing reply at the first
        speech-like frame, one frame before the detector confirms speech; resume it at once if
        the detector does not."""
        if now.in_speech:
            self.tentative = False  # SpeechStart took over (it pauses, and resumes if short)
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
        out.append(StartUtterance(ev.t_ms, ev.preroll))
        if not speaking_over:
            out.append(Prefill())
        return out

    def _frame(self, ev: SpeechFrame, now: Situation) -> list[Decision]:
        if not self.listening:
            return []
        out: list[Decision] = [Stream(ev.pcm)]
        if self.barge_pending and now.speech_ms >= self.min_interruption_ms:
            self.barge_pending = False
            out.append(Interrupt("barge_in"))
        return out

    def _end(self, ev: SpeechEnd, now: Situation) -> list[Decision]:
        out: list[Decision] = []
        if self.barge_pending:  # too short to interrupt: the reply carries on
            self.barge_pending = False
            out.append(ResumeReply())
        if self.listening:
            self.listening = False
            out.append(EndUtterance(ev.t_ms, ev.speech_end_ms, now.speculated and now.peeked))
        return out
