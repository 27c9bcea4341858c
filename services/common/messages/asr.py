"""The ASR protocol's messages (the utterance's control words travel as a header:
`headers.AsrControl`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .base import Message

# An agent's hot words: Whisper takes them as its prompt, which holds ~220 tokens.
MAX_HOT_WORDS = 50
MAX_HOT_WORDS_CHARS = 600
HotWord = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


def fits_prompt(words: list[str]) -> list[str]:
    if len(", ".join(words)) > MAX_HOT_WORDS_CHARS:
        raise ValueError(f"hot words take at most {MAX_HOT_WORDS_CHARS} characters in all")
    return words


class AsrClaim(Message):
    type: Literal["asr.claim"] = "asr.claim"
    session_id: str
    turn_id: str
    sample_rate: int = 16000
    language: str | None = None
    partials: bool = True
    hot_words: list[str] = Field(default_factory=list, max_length=MAX_HOT_WORDS)


class AsrEnd(Message):
    """Sent as a request on the utterance subject after the last frame: end of turn."""

    type: Literal["asr.end"] = "asr.end"
    speech_end_ms: float  # wall clock of the last voiced frame
    # The speculative pass started at the last `peek` saw all the speech: reuse its text.
    reuse_speculative: bool = False


class AsrResult(Message):
    type: Literal["asr.result"] = "asr.result"
    turn_id: str
    text: str
    asr_ms: float
    audio_ms: float
    worker_id: str
