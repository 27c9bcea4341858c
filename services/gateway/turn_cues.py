"""What an utterance's words and sound say: is it finished, and is it a backchannel.

Pure functions for `turn_policy.TurnPolicy`. End of turn under `semantic` turn detection:
`end_window` weighs the end-of-turn model's score of the sound (Smart Turn, `smart_turn.py`) with
the transcript so far (`text_cue`, `finished_sentence`) and picks the `complete`, `unsure` or
`incomplete` wait of the eagerness' `SEMANTIC_WAITS`; `incomplete` is the cap. Speech over a
reply: `is_backchannel` tells listener words ("uh-huh", "yeah, okay") from words that take the
turn ("wait", "no", a question), and `echoes` the reply's own words coming back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.common.messages import Eagerness


# -- end of turn -------------------------------------------------------------------------------
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


def _takes_the_turn(words: list[str]) -> bool:
    said = " ".join(words)
    for phrase in _NOT_TAKING:
        said = said.replace(phrase, "")
    return bool(_TAKES_THE_TURN & set(said.split()))


def is_backchannel(text: str | None) -> bool:
    """Listener words ("uh-huh", "yeah, right", "okay", at most four), or fewer than
    `MIN_INTERRUPTION_WORDS` words; never one that takes the turn ("wait", "no") or a question."""
    text = (text or "").strip()
    words = _words(text)
    if not words or len(words) > 4 or _takes_the_turn(words) or text.endswith("?"):
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


# A question whose sound scores under this is unsure, not complete: Whisper often makes a
# question of a fragment, dropping the word it stopped on ("Is it safe to leave cooked rice out
# on" -> "...rice out?"), and Smart Turn scored such fragments 0.01-0.06 where it scored 4 of 55
# complete questions that low (bench/turns_material.py's texts in four voices, 2026-12-07).
QUESTION_FLOOR = 0.1
_ENDS = (".", "?", "!", "…", "。", "？", "！")


def finished_sentence(text: str) -> bool:
    """Whisper wrote the end of a sentence: a full stop, question or exclamation mark (it leaves
    it off where it heard speech stop mid-sentence)."""
    return text.rstrip().rstrip("\"'”’»)").endswith(_ENDS)


def end_window(waits: Waits, p_audio: float | None, text: str | None) -> Verdict:
    """The silence that ends this turn, from the end-of-turn model's probability that the sound
    is finished (None: not scored) and the transcript so far (None: none came).

    A trailing "and" or "the" waits the longest whatever the sound. A question is complete
    unless its sound plainly is not (under QUESTION_FLOOR: unsure); the model alone scored
    some clear Piper questions 0.1-0.4 ("How many strings does a violin have?"). Otherwise the
    sound decides: a statement that sounds finished is complete when Whisper ended it as a
    sentence (unsure when it did not), one that plainly does not is incomplete, anything
    between waits `unsure`."""
    cue = text_cue(text)
    if cue == "incomplete":
        judged: Judged = "incomplete"
    elif cue == "complete":
        judged = "unsure" if p_audio is not None and p_audio < QUESTION_FLOOR else "complete"
    elif p_audio is None:
        judged = "unsure"
    elif p_audio < 0.2:
        judged = "incomplete"
    elif p_audio >= (0.5 if text else 0.8):
        judged = "complete" if not text or finished_sentence(text) else "unsure"
    else:
        judged = "unsure"
    return Verdict(judged, getattr(waits, judged), cue)


# Speech over a reply whose words are mostly the reply's own words near where it plays is the
# reply's echo (a speakerphone's residue the echo canceller let through, Whisper writing it
# down), not the user.
ECHO_SHARE = 0.6


def echoes(text: str | None, reply_words: Sequence[str]) -> bool:
    """At least ECHO_SHARE of `text`'s words are among `reply_words` (the reply's words around
    what is playing); never when a word takes the turn ("wait", "no") or it asks."""
    text = (text or "").strip()
    words = _words(text)
    if not words or _takes_the_turn(words) or text.endswith("?"):
        return False
    said = set(_words(" ".join(reply_words)))
    return sum(w in said for w in words) >= ECHO_SHARE * len(words)
