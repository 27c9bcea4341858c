"""What travels in NATS headers: the header of an audio chunk on `va.tts.out.{sid}.audio`, and the
control word of a request on an utterance subject `va.asr.utt.{sid}.{tid}`.

JSON messages carry no `Va-*` header (a W3C trace context may ride along:
services/common/telemetry.py). The writer encodes and the readers decode with the codecs here;
a malformed header is a `BadMessage` that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .base import BadMessage

H_TYPE = "Va-Type"  # AUDIO on an audio chunk
H_REPLY = "Va-Reply"
H_TURN = "Va-Turn"
H_SEGMENT = "Va-Segment"
H_RATE = "Va-Rate"
H_CTL = "Va-Ctl"  # an AsrControl word
AUDIO = "audio"

Headers = Mapping[str, str] | None


@dataclass(frozen=True)
class AudioChunkHeader:
    """The header of one audio chunk: raw PCM16 mono little-endian at `sample_rate` Hz, part of
    segment `segment` (a `tts.segment` announced it) of reply `reply_id` of turn `turn_id`.

    Every field is required: a chunk without its rate cannot be played, and no reader guesses
    one."""

    reply_id: str
    turn_id: str
    segment: int
    sample_rate: int

    def encode(self) -> dict[str, str]:
        return {
            H_TYPE: AUDIO,
            H_REPLY: self.reply_id,
            H_TURN: self.turn_id,
            H_SEGMENT: str(self.segment),
            H_RATE: str(self.sample_rate),
        }

    @staticmethod
    def is_audio(headers: Headers) -> bool:
        """The message is an audio chunk, not a JSON message."""
        return headers is not None and headers.get(H_TYPE) == AUDIO

    @classmethod
    def decode(cls, headers: Headers) -> AudioChunkHeader:
        """The header of an audio chunk. Raises BadMessage naming what is missing or wrong."""
        if headers is None or not cls.is_audio(headers):
            found = None if headers is None else headers.get(H_TYPE)
            raise BadMessage(f"not an audio chunk: {H_TYPE} is {found!r}, not {AUDIO!r}")
        return cls(
            reply_id=_text(headers, H_REPLY),
            turn_id=_text(headers, H_TURN),
            segment=_number(headers, H_SEGMENT, 0),
            sample_rate=_number(headers, H_RATE, 1),
        )


def _text(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise BadMessage(f"audio chunk header {name} is missing")
    return value


def _number(headers: Mapping[str, str], name: str, least: int) -> int:
    raw = _text(headers, name)
    try:
        value = int(raw)
    except ValueError:
        raise BadMessage(f"audio chunk header {name} is not a number: {raw[:20]!r}") from None
    if value < least:
        raise BadMessage(f"audio chunk header {name} is {value}, below {least}")
    return value


class AsrControl(StrEnum):
    """The control word (`Va-Ctl`) of a message on an utterance subject; the payload is an
    `AsrEnd`. A message without one is an audio frame."""

    PEEK = "peek"  # the user paused: a final pass on the speech so far (a request gets its text)
    RESUME = "resume"  # the user spoke on: that pass no longer covers the speech
    END = "end"  # a request: the final `AsrResult`; the utterance ends
    CANCEL = "cancel"  # the utterance ends without an answer

    def headers(self) -> dict[str, str]:
        return {H_CTL: self.value}

    @classmethod
    def decode(cls, headers: Headers) -> AsrControl | None:
        """The control word, None for an audio frame. Raises BadMessage for an unknown word."""
        word = None if headers is None else headers.get(H_CTL)
        if word is None:
            return None
        try:
            return cls(word)
        except ValueError:
            raise BadMessage(f"unknown {H_CTL} word: {word[:20]!r}") from None
