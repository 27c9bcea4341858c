"""Stop a reply that repeats itself, so a looping model is cut, not spoken for a minute.

`LoopGuard.feed(piece)` takes the reply's pieces as they are generated and answers True once the
reply repeats: a run of 4 or more words said twice in a row ("on this side of the family, on this
side of the family"), a run of 1-3 words said three times in a row, or a sentence of 4 or more
words said again anywhere in the reply. Words are compared lowercased, without punctuation, so the
check works for any language written with spaces. Clock-free and engine-free.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?…。！？]+")
MAX_SPAN = 16  # the longest repeated run looked for (words)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class LoopGuard:
    def __init__(self) -> None:
        self._text = ""
        self._words: list[str] = []
        self._sentences: set[tuple[str, ...]] = set()
        self._sentence_start = 0  # index in _text where the current sentence begins
        self.reason: str | None = None

    def feed(self, piece: str) -> bool:
        """Add a piece of the reply; True when the reply now repeats itself (see `reason`)."""
        if self.reason is not None:
            return True
        self._text += piece
        # Only words followed by something are complete ("famil" may still become "family").
        complete = _words(self._text[: len(self._text) - len(_trailing_word(self._text))])
        while len(self._words) < len(complete):
            self._words.append(complete[len(self._words)])
            if self._tandem():
                return True
        return self._repeated_sentence()

    def _tandem(self) -> bool:
        words = self._words
        n = len(words)
        for span in range(1, min(MAX_SPAN, n // 2) + 1):
            copies = 2 if span >= 4 else 3
            if n < span * copies:
                continue
            tail = words[n - span :]
            if all(words[n - span * (c + 1) : n - span * c] == tail for c in range(1, copies)):
                self.reason = f"a run of {span} word(s) repeated"
                return True
        return False

    def _repeated_sentence(self) -> bool:
        for match in _SENTENCE_END.finditer(self._text, self._sentence_start):
            sentence = tuple(_words(self._text[self._sentence_start : match.start()]))
            self._sentence_start = match.end()
            if len(sentence) < 4:
                continue
            if sentence in self._sentences:
                self.reason = "a sentence repeated"
                return True
            self._sentences.add(sentence)
        return False


def _trailing_word(text: str) -> str:
    match = re.search(r"[^\W_]+(?:['’][^\W_]*)*$", text)
    return match.group(0) if match else ""
