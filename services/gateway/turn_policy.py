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
"yeah", "okay"; `is_backchannel`), no words at all, or speech shorter than `min_interruption_ms` (a
cough) resume the reply where it paused and start no turn (`DropUtterance`); anything else ("wait",
"stop", "no", a question) interrupts the reply and becomes the next turn. Without a pass at the
pause, the final text decides the same.

End of turn: `fixed` turn detection ends a turn after the agent's `end_of_turn_silence_ms`.
`semantic` starts each silence with the eagerness' `unsure` wait and, at the pause, asks for a
judgement (`Judge`): `end_window` weighs the end-of-turn model's score of the sound with what the
transcript so far says (`text_cue`) and picks the `complete`, `unsure` or `incomplete` wait of
`SEMANTIC_WAITS`; `incomplete` is the cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from services.common.messages import AgentConfig, Eagerness, InterruptReason

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


# -- end of turn -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Waits:
    """Silence (ms) that ends a turn judged complete, not judged or unsure, and incomplete."""

    complete: int
    unsure: int
    incomplete: int


SEMANTIC_WAITS: dict[Eagerness, Waits] = {
    "high": Waits(complete=160, unsure=1000, incomplete=2000),
    "medium": Waits(complete=256, unsure=1600, incomplete=2500),
    "low": Waits(complete=480, unsure=2000, incomplete=3500),
}
SEMANTIC_WAITS["auto"] = SEMANTIC_WAITS["medium"]

Judged = Literal["complete", "unsure", "incomplete"]

# Words after which an utterance goes on (conjunctions, articles, prepositions, possessives,
# fillers), in the languages the tts speaks; a trailing comma or ellipsis says the same.
_GOES_ON = frozenset(
    """and or but because if than which whose while
    the a an my your our their every
    to of for with at from into onto between through
    um uh er erm uhm hmm i i'm we're
    und oder aber weil dass der die das ein eine mit für von zu
    et ou mais parce le la les un une des de du avec pour
    y o pero porque el los las una con para""".split()
)
_PREPOSITIONS = frozenset("to of for with in on at from by about into onto over under".split())
_ARTICLES = frozenset("the a an this that these those my your his her its our their".split())
_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def text_cue(text: str | None) -> Judged | None:
    """What the transcript so far says about the end of the turn: `incomplete` when it stops on
    a word that needs more (and, the, for, um...), a comma or an ellipsis; `complete` on a
    question mark; None when it cannot tell (Whisper ends fragments with a full stop too)."""
    text = (text or "").strip()
    words = _words(text)
    if not words:
        return None
    if text.endswith(("...", "…", ",", "-", "—")):
        return "incomplete"
    last = words[-1]
    if last in _PREPOSITIONS and text.endswith("?"):
        # "What is the colour of?" is a fragment; "What is it made of?" is a question.
        return "incomplete" if _ARTICLES & set(words[-4:-1]) else "complete"
    if last in _GOES_ON:
        return "incomplete"  # "How many legs does a?" too
    return "complete" if text.endswith("?") else None


# What a listener says to show they are listening, not to take the turn; and words that always
# take it. English, German, French, Spanish (the tts voices' languages).
_BACKCHANNELS = sorted(
    {
        tuple(_words(phrase))
        for phrase in (
            "yeah yes yep yup uh-huh mm-hmm mhm mm hmm hm okay ok right sure cool nice great wow "
            "oh ah aha alright true exactly indeed gotcha really ja genau stimmt richtig klar "
            "super oui ouais d'accord voilà sí si vale claro ajá bueno exacto"
        ).split()
        + ["i see", "got it", "all right", "of course", "that's right", "makes sense", "go on"]
        + ["fair enough"]
        + ["c'est ça", "ah bon"]
    },
    key=len,
    reverse=True,
)
# "That's enough." takes it too (over a speakerphone's reply AEC3, still cautious, swallowed
# the "Stop," before it); "fair enough" is a listener's.
_TAKES_THE_TURN = frozenset(
    "stop wait no hold hang pause cancel sorry excuse actually hey listen enough quiet "
    "nein stopp warte genug non attends pardon suffit espera para perdón basta".split()
)
_NOT_TAKING = ("fair enough",)
# Fewer words than this over a reply, none that takes the turn and no question, do not take it:
# Whisper makes words of a murmured "mm-hmm" ("Ow.", "All gone."), as LiveKit's
# `min_interruption_words` allows for.
MIN_INTERRUPTION_WORDS = 3


def is_backchannel(text: str | None) -> bool:
    """Listener words ("uh-huh", "yeah, right", "okay", at most four), or fewer than
    `MIN_INTERRUPTION_WORDS` words; never one that takes the turn ("wait", "no") or a question."""
    text = (text or "").strip()
    words = _words(text)
    said = " ".join(words)
    for listeners in _NOT_TAKING:
        said = said.replace(listeners, "")
    takes = _TAKES_THE_TURN & set(said.split())
    if not words or len(words) > 4 or takes or text.endswith("?"):
        return False
    if len(words) < MIN_INTERRUPTION_WORDS:
        return True
    i = 0
    while i < len(words):
        phrase = next((p for p in _BACKCHANNELS if tuple(words[i : i + len(p)]) == p), None)
        if phrase is None:
            return False
        i += len(phrase)
    return True


@dataclass(frozen=True, slots=True)
class Verdict:
    judged: Judged
    window_ms: int
    cue: Judged | None


def end_window(waits: Waits, p_audio: float | None, text: str | None) -> Verdict:
    """The silence that ends this turn, from the end-of-turn model's probability that the sound
    is finished (None: not scored) and the transcript so far (None: none came).

    The text decides when it can: a trailing "and" or "the" waits the longest, a question mark
    the shortest, whatever the sound (the model scored clear Piper questions 0.02-0.03, e.g.
    "How many strings does a violin have?"). Otherwise the sound decides: a statement that
    sounds finished is complete, one that plainly does not is incomplete, anything between
    waits `unsure`."""
    cue = text_cue(text)
    if cue == "incomplete":
        judged: Judged = "incomplete"
    elif cue == "complete":
        judged = "complete"
    elif p_audio is None:
        judged = "unsure"
    elif p_audio >= (0.5 if text else 0.8):
        judged = "complete"
    elif p_audio < 0.2:
        judged = "incomplete"
    else:
        judged = "unsure"
    return Verdict(judged, getattr(waits, judged), cue)


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

    def on_overheard(self, text: str | None) -> list[Decision]:
        """The words of the speech over a reply, heard at its pause (None: the pass failed)."""
        if not (self.listening and self.barge_pending):
            return []  # decided already, or the utterance is over
        if text is None:
            return []  # the final text decides
        self.barge_pending = False
        if not text.strip() or is_backchannel(text):
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
