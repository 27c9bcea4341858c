"""Synthesis: the claim of one reply's speech, its text in, and its segments out. The audio
chunks between a segment and the next carry their header (`headers.AudioChunkHeader`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import Message


class TTSRequest(Message):
    type: Literal["tts.request"] = "tts.request"
    session_id: str
    turn_id: str
    reply_id: str
    voice: str | None = None


class TTSText(Message):
    """Text for one reply, in order; `final` marks the end of the reply's text."""

    type: Literal["tts.text"] = "tts.text"
    reply_id: str
    seq: int
    text: str
    final: bool = False


class TTSSegment(Message):
    """Announces a synthesized segment (one clause or sentence) before its audio chunks."""

    type: Literal["tts.segment"] = "tts.segment"
    reply_id: str
    turn_id: str
    index: int
    text: str
    sample_rate: int
    first_audio_ms: float | None = None  # clause handed to the engine -> its first audio


class TTSDone(Message):
    type: Literal["tts.done"] = "tts.done"
    reply_id: str
    turn_id: str
    segments: int
    cancelled: bool = False
    error: str | None = None


TTSOut = Annotated[TTSSegment | TTSDone, Field(discriminator="type")]
