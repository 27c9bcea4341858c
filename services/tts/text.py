"""Cut an LLM's streamed text into clauses that TTS can speak as soon as they are complete.

`ClauseSplitter.feed(delta)` takes the pieces as the LLM writes them (often parts of words) and
returns the clauses completed so far; `flush()` returns the rest at the end of the reply.

- A sentence ends at `.`, `!`, `?` or `…` (closing quotes, brackets or markdown emphasis may
  follow) once whitespace follows, and at a line break. The whitespace is needed to tell `3.5`
  or `example.com` from a sentence end while the text is still arriving.
- Not at abbreviations: titles and Latin forms (`Mr.`, `Dr.`, `e.g.`, `vs.`), initials
  (`J. K.`) and a list number alone at the start (`1. `) never end a sentence; `etc.`, `Inc.`,
  `a.m.` and other dotted words end one only before a capital letter, `No.` and `Fig.` only
  when no number follows.
- The FIRST clause of a reply also ends at `,` `;` `:` or a dash once it holds at least
  `first_min_words` words, so the first audio starts while the LLM is still writing; and, with
  `first_phrase_words` set, before a word that opens a phrase (a preposition, conjunction,
  relative pronoun or auxiliary verb: "The largest planet | in the solar system is ...") or an
  opening bracket, once at least that many words precede it. Speech pauses there naturally,
  and the first audio needs only those few words from the LLM and from TTS instead of a whole
  sentence.
- Later clauses are whole sentences, but one longer than `max_chars` is cut at its last comma
  (or semicolon, colon, dash), or failing that at its last space.
- Markdown and emoji that TTS would read out (`*`, `#`, backticks, bullets, link targets) are
  removed;
  clauses with no letter or digit are dropped.
"""

from __future__ import annotations

import re

import emoji

_SENTENCE_END = r"[.!?…]+[\"'”’»)\]*_`]*"
_SOFT_END = r"[,;:][\"'”’»)\]*_`]*(?=\s)|\s[-–—]+(?=\s)|—"
_CANDIDATE = re.compile(rf"(?P<hard>\n)|(?P<end>{_SENTENCE_END})(?=\s)|(?P<soft>{_SOFT_END})")
_SOFT = re.compile(_SOFT_END)

# Never a sentence end: a name or number follows them.
_NEVER_END = frozenset(
    "mr mrs ms mx dr prof sr jr st mt vs approx dept gen gov sen rep capt lt col sgt rev hon "
    "cf viz e.g i.e eg ie ca".split()
)
# A sentence end unless a number follows ("No. 5", but "No. I can't.").
_NUMBER_ABBREV = frozenset("no nos fig figs vol pp ch sec".split())
# A sentence end only when a capital letter follows.
_MAYBE_END = frozenset("etc inc ltd co corp llc bros a.m p.m am pm u.s u.k al".split())
_WORD_BEFORE = re.compile(r"(\S+)$")
_LEADING_PUNCT = "\"'“‘«([*_`"

# Markdown and symbols that a voice would read out.
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINE_MARK = re.compile(r"(?m)^[ \t]*(?:#{1,6}|[-+•>]|\*(?=\s))[ \t]+")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<!\w)_+|_+(?!\w)")
_SYMBOLS = re.compile(r"[*#`~]+")
_TRAILING_DASH = re.compile(r"\s*[-–—]+$")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_STOP = re.compile(r"\s+([.,!?;:])")  # left where an emoji was: "lovely 🇫🇷."
_SPEAKABLE = re.compile(r"[^\W_]")
# Words a spoken phrase may begin with: a short pause before them sounds natural.
_PHRASE_OPENERS = (
    "in on at of for with from to by about into over under after before during because and but "
    "or so which that who whose where when while if is are was were has have had can could will "
    "would should may might must"
)
# Whitespace before an opener, as soon as the opener has arrived ("in", even if "inside" is
# coming: the cut is at a word boundary either way, and waiting for the next word would cost a
# token of the LLM), or before an opening bracket (an aside: "100 degrees Celsius | (212 ...").
_PHRASE_CUT = re.compile(
    rf"\s+(?=(?:{'|'.join(_PHRASE_OPENERS.split())})(?:\s|$)|\()", re.IGNORECASE
)


def clean_for_speech(text: str) -> str:
    """Remove markdown and emoji that TTS would read out and collapse whitespace."""
    text = _SPACE_BEFORE_STOP.sub(r"\1", emoji.replace_emoji(text, replace=""))
    text = _LINK.sub(r"\1", text)
    text = _LINE_MARK.sub("", text)
    text = _EMPHASIS_UNDERSCORE.sub("", text)
    text = _SYMBOLS.sub("", text).replace("_", " ")
    text = _SPACES.sub(" ", text).strip()
    return _TRAILING_DASH.sub("", text)


class ClauseSplitter:
    """Streaming clause splitter for one reply (make a new one, or `reset()`, per reply)."""

    def __init__(
        self, first_min_words: int = 4, max_chars: int = 200, first_phrase_words: int = 0
    ) -> None:
        self.first_min_words = first_min_words
        self.first_phrase_words = first_phrase_words  # 0: the first clause ends at punctuation
        self.max_chars = max_chars
        self._buf = ""
        self._first = True

    def reset(self) -> None:
        self._buf = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        """Add a piece of text; return the clauses it completed (maybe none)."""
        self._buf += delta
        out: list[str] = []
        while (cut := self._find_cut(self._buf)) is not None:
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        return out

    def flush(self) -> list[str]:
        """End of the reply: return what is left as a last clause."""
        out: list[str] = []
        self._emit(self._buf, out)
        self._buf = ""
        return out

    def _emit(self, raw: str, out: list[str]) -> None:
        clause = clean_for_speech(raw)
        if _SPEAKABLE.search(clause):
            out.append(clause)
            self._first = False

    def _find_cut(self, buf: str) -> int | None:
        """Index where the first complete clause of `buf` ends, or None to wait for more."""
        for m in _CANDIDATE.finditer(buf):
            before = buf[: m.start()]
            if not _SPEAKABLE.search(before):
                if m.lastgroup == "hard":
                    return m.end()  # drop blank lines and lone markup in front
                continue
            if m.lastgroup == "hard":
                return m.end()
            if m.lastgroup == "end":
                verdict = self._sentence_end(buf, m)
                if verdict is None:
                    return None  # undecidable until the next word arrives
                if verdict:
                    return m.end()
            elif self._first and len(clean_for_speech(before).split()) >= self.first_min_words:
                return m.end()
        if self._first and self.first_phrase_words > 0:
            for m in _PHRASE_CUT.finditer(buf):
                if len(clean_for_speech(buf[: m.start()]).split()) >= self.first_phrase_words:
                    return m.start()
        if len(buf) > self.max_chars:
            return self._long_cut(buf)
        return None

    @staticmethod
    def _sentence_end(buf: str, m: re.Match[str]) -> bool | None:
        """True: a sentence ends at match m; False: it doesn't; None: can't tell yet."""
        punct = m.group("end")
        if not punct.startswith(".") or punct.startswith(".."):
            return True  # ! ? … and ellipses always end
        word_m = _WORD_BEFORE.search(buf[: m.start()])
        if word_m is None:
            return False
        word = word_m.group(1).lstrip(_LEADING_PUNCT).lower()
        if word in _NEVER_END:
            return False
        if len(word) == 1 and word.isalpha():
            return False  # an initial: "J. K. Rowling"
        if word.isdigit() and not buf[: word_m.start()].strip():
            return False  # "1. " starting a numbered list item
        if word in _MAYBE_END or word in _NUMBER_ABBREV or "." in word:
            rest = buf[m.end() :].lstrip()
            if not rest:
                return None
            if word in _NUMBER_ABBREV:
                return not rest[0].isdigit()
            return rest[0].isupper() or rest[0].isdigit()
        return True

    def _long_cut(self, buf: str) -> int | None:
        """Cut a clause that has grown past max_chars: at its last soft boundary, else a space."""
        soft = [m.end() for m in _SOFT.finditer(buf) if _SPEAKABLE.search(buf[: m.start()])]
        if soft:
            return soft[-1]
        space = buf.rstrip().rfind(" ")
        return space if space > 0 else None
