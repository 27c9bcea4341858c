"""What the recogniser wrote but nobody said never reaches the LLM (services/asr/guard.py), and an
agent's hot words make names come out right without making noise read as them.

Invariants:
- a transcript that repeats itself (a sentence twice, a run of 3+ words twice, 1-2 words 4+
  times) keeps one copy; what people do repeat ("no no no", "yes, yes") stays;
- Whisper's captions for non-speech ("[BLANK_AUDIO]", "(music)", "♪") are dropped, and a text
  of captions only is no text;
- hot words: an invented name is written as listed, and silence or faint noise still gives no
  text with hot words set (Whisper reads noise as its prompt otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.audio import noise_wav, read_wav, speak_wav
from services.asr import guard
from services.asr.engines.faster_whisper import FasterWhisperEngine
from services.asr.models import DEFAULT_MODEL, model_path


@pytest.mark.parametrize(
    ("heard", "said"),
    [
        (
            "What is the capital of France? What is the capital of France?",
            "What is the capital of France?",
        ),
        ("Thank you. Thank you.", "Thank you."),
        ("I'll tell you I'll tell you I'll tell you a story", "I'll tell you a story"),
        ("Tell me, tell me about the moon about the moon.", "Tell me, tell me about the moon."),
        ("no no no no no", "no"),
        ("[BLANK_AUDIO]", ""),
        ("(upbeat music) Hello there.", "Hello there."),
        ("♪ ♪", ""),
        ("no no no", "no no no"),
        ("Yes, yes.", "Yes, yes."),
        ("What is the capital of France?", "What is the capital of France?"),
        ("That that is it.", "That that is it."),
        ("", ""),
    ],
)
def test_clean_keeps_what_was_said(heard: str, said: str) -> None:
    assert guard.clean(heard) == said
    assert guard.repeated(guard.clean(heard)) is None or said == "no no no"


def test_repeated_names_the_run() -> None:
    rep = guard.repeated("so what is the time what is the time")
    assert rep is not None and (rep.start, rep.span, rep.copies) == (1, 4, 2)
    assert guard.repeated("Tell me a story about a brave knight.") is None


@pytest.fixture(scope="module")
def asr() -> FasterWhisperEngine:
    return FasterWhisperEngine(model_path(DEFAULT_MODEL), cpu_threads=2)


def _f32(path: object) -> np.ndarray:
    pcm, _ = read_wav(path)  # type: ignore[arg-type]
    return pcm.astype(np.float32) / 32768.0


@pytest.mark.parametrize("voice", ["piper", "espeak"])
def test_hot_words_spell_a_name_as_listed(asr: FasterWhisperEngine, voice: str) -> None:
    audio = _f32(speak_wav("Please send the report to Zorvex tomorrow.", engine=voice))
    plain = asr.transcribe(audio)
    hinted = asr.transcribe(audio, hot_words=["Zorvex"])
    print(f"\n{voice}: without {plain!r}, with {hinted!r}")
    assert "zorvex" not in plain.lower()  # the name is unknown to the model ...
    assert "zorvex" in hinted.lower() and "report" in hinted.lower()  # ... and known with it


def test_hot_words_do_not_turn_noise_into_words(asr: FasterWhisperEngine) -> None:
    words = ["Zorvex", "Siobhan", "Tadeusz"]
    assert asr.transcribe(np.zeros(32000, dtype=np.float32), hot_words=words) == ""
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(32000) * 0.02).astype(np.float32)
    assert asr.transcribe(hiss, hot_words=words) == ""
    for color in ("pink", "white"):
        assert (
            asr.transcribe(_f32(noise_wav(seconds=2.0, dbfs=-25.0, color=color)), hot_words=words)
            == ""
        )
