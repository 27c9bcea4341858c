"""What a recogniser wrote that the user did not say, found and taken out before the text is used.

Whisper-family models fail in two known ways on short voice-assistant turns:
- they repeat themselves: "What is the capital of France? What is the capital of France?" for a
  question said once (a decoder loop; on tiny.en it comes with a shortened encoder window, see
  engines/faster_whisper.py), or "I'll tell you I'll tell you I'll tell you";
- they write sound descriptions instead of words: "[BLANK_AUDIO]", "(music)", "♪".

`repeated(text)` finds a repeat: a sentence said twice or more in a row ("Thank you. Thank
you.", seen when a prompt of hot words is given), a run of 3 or more words said twice or more in a
row, or a run of 1-2 words said 4 or more times (people do say "no, no, no"). `clean(text)` keeps
one copy of each repeated run and drops sound descriptions, so what reaches the LLM is what was
said. Words are
compared lowercased without punctuation. Pure and engine-free: the ASR worker applies it to every
engine's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?…]+")
# "[BLANK_AUDIO]", "(upbeat music)", "*laughs*", "♪ ... ♪": Whisper's captions for non-speech.
_SOUND = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]+")
MAX_SPAN = 20  # the longest repeated run looked for (words)


@dataclass(frozen=True)
class Repeat:
    start: int  # word index of the first copy
    span: int  # words in one copy
    copies: int


def _copies_needed(span: int) -> int:
    return 2 if span >= 3 else 4


def repeated(text: str) -> Repeat | None:
    """The first repeat in `text` (the longest run at the earliest place), or None."""
    words = [w.lower() for w in _WORD.findall(text)]
    starts = _sentence_starts(text)
    n = len(words)
    for start in range(n):
        for span in range(min(MAX_SPAN, (n - start) // 2), 0, -1):
            unit = words[start : start + span]
            copies = 1
            while words[start + copies * span : start + (copies + 1) * span] == unit:
                copies += 1
            sentence = start in starts and start + span in starts  # the copy is a whole sentence
            if copies >= (2 if sentence else _copies_needed(span)):
                return Repeat(start, span, copies)
    return None


def _sentence_starts(text: str) -> set[int]:
    """Word indices that begin a sentence (0, and each word after a sentence end)."""
    starts = {0}
    for i, m in enumerate(_WORD.finditer(text)):
        if _SENTENCE_END.match(text, m.end()):
            starts.add(i + 1)
    return starts


def only_words_of(text: str, prompt: str) -> bool:
    """Whether every word of `text` is a word of `prompt` (a recogniser echoing its prompt)."""
    words = {w.lower() for w in _WORD.findall(text)}
    return bool(words) and words <= {w.lower() for w in _WORD.findall(prompt)}


def clean(text: str) -> str:
    """`text` without sound descriptions and with one copy of each repeated run."""
    text = " ".join(_SOUND.sub(" ", text).split())
    while (rep := repeated(text)) is not None:
        ends = [m.end() for m in _WORD.finditer(text)]
        # from the first copy's last word to the last copy's: what follows the copies stays
        cut_from = ends[rep.start + rep.span - 1]
        cut_to = ends[rep.start + rep.span * rep.copies - 1]
        text = text[:cut_from] + text[cut_to:]
    # What is left of a caption-only text is punctuation at most: no words, no transcript.
    return text if _WORD.search(text) else ""
