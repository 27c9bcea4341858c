"""How a reply of the quality benchmark is judged (bench/quality.py): pure functions.

- `matches(text, pattern)`: the pattern as a whole word or phrase, lowercased, punctuation
  ignored ("paris" is found in "Paris." but not in "Parisian").
- A checked turn passes when the reply holds an accepted answer, none of the listed wrong ones
  ("Paris, or maybe Lisbon" fails), does not repeat itself (services/llm/guard.py's rules: a cut
  loop still counts), stays under the spoken-length limit and is in the expected language
  (lingua, on the reply without its quoted words; undecided for very short replies).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from services.llm.guard import LoopGuard

MAX_SPOKEN_WORDS = 60  # about 20 s of speech
MIN_WORDS_FOR_LANGUAGE = 3  # "Berlín." says nothing reliable about its language
_NOT_WORD = re.compile(r"[^\w\s'’]+")
# Words quoted in another language ("In Italian, you say “grazie”.") say nothing of the reply's.
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»|„[^“”]*[“”]")


def normalize(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower().replace("’", "'")).split())


def matches(text: str, pattern: str) -> bool:
    pat = normalize(pattern)
    return bool(pat) and re.search(rf"(?<!\w){re.escape(pat)}(?!\w)", normalize(text)) is not None


def loops(text: str) -> bool:
    guard = LoopGuard()
    return guard.feed(text + " ")


@cache
def _detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    langs = [Language.ENGLISH, Language.SPANISH, Language.FRENCH, Language.GERMAN]
    langs += [Language.PORTUGUESE, Language.ITALIAN, Language.DUTCH]
    # Undecided (None) unless one language is clearly ahead: "A hexagon has six sides." reads
    # as French to the plain detector.
    builder = LanguageDetectorBuilder.from_languages(*langs)
    return builder.with_minimum_relative_distance(0.25).build()


def language_of(text: str) -> str | None:
    """ISO 639-1 code of the reply's language, None when too short or too close to tell."""
    text = _QUOTED.sub(" ", text)
    if len(normalize(text).split()) < MIN_WORDS_FOR_LANGUAGE:
        return None
    found = _detector().detect_language_of(text)
    return found.iso_code_639_1.name.lower() if found is not None else None


def judge(turn: dict[str, Any], reply: str, lang: str) -> dict[str, Any]:
    """Every verdict on one reply; `passed` only for checked turns (those with `accept`)."""
    words = len(normalize(reply).split())
    detected = language_of(reply)
    out: dict[str, Any] = {
        "words": words,
        "loop": loops(reply),
        "too_long": words > MAX_SPOKEN_WORDS,
        "language": detected,
        "wrong_language": detected is not None and detected != lang,
    }
    if "accept" in turn:
        accepted = [p for p in turn["accept"] if matches(reply, p)]
        rejected = [p for p in turn.get("reject", []) if matches(reply, p)]
        out.update(accepted=accepted, rejected=rejected)
        out["passed"] = bool(accepted) and not rejected and not (
            out["loop"] or out["too_long"] or out["wrong_language"]
        )
    return out
