"""The Moonshine ASR engine (services/asr/engines/moonshine.py) on real synthesized speech.

Invariant: the second engine keeps the ASREngine contract of the default one: Piper speech
becomes the words that were said, silence and tiny or empty inputs give "" (a pass under 56 ms
would abort the process inside the library), passes from two threads at once give the same text as
one at a time, and the ASR service builds it from its settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from harness.audio import read_wav, speak_wav, word_overlap
from services.asr.main import build_engine
from services.asr.settings import AsrSettings

pytest.importorskip("moonshine_cpp", reason="moonshine-cpp not installed (the asr extra)")

from services.asr.engines.moonshine import MoonshineEngine, cpu_supported  # noqa: E402

if not cpu_supported():
    pytest.skip(
        "moonshine-cpp's library needs AVX-512, which this CPU lacks", allow_module_level=True
    )

RATE = 16000
SENTENCES = [
    "What is the capital of France?",
    "Please set a timer for ten minutes and remind me to check the oven.",
    # base-en wraps this one in quotation marks ('"\'What ... umbrella?\''): the engine drops them
    "What is the weather like tomorrow in Berlin, and will I need an umbrella?",
]


@pytest.fixture(scope="module")
def engine() -> Iterator[MoonshineEngine]:
    eng = MoonshineEngine()
    yield eng
    eng.close()


def speech(text: str) -> np.ndarray:
    pcm, rate = read_wav(speak_wav(text, rate=RATE))
    assert rate == RATE
    return pcm.astype(np.float32) / 32768.0


@pytest.mark.parametrize("text", SENTENCES)
def test_moonshine_transcribes_piper_speech(engine: MoonshineEngine, text: str) -> None:
    heard = engine.transcribe(speech(text))
    assert heard[:1].isalnum() and heard == heard.strip(), heard
    assert word_overlap(text, heard) >= 0.8, heard


def test_moonshine_gives_no_text_for_silence_or_tiny_input(engine: MoonshineEngine) -> None:
    assert engine.transcribe(np.zeros(2 * RATE, dtype=np.float32)) == ""
    assert engine.transcribe(np.zeros(0, dtype=np.float32)) == ""
    # under 895 samples the library's encoder throws and the process aborts: padded instead
    for n in (1, 500, 894):
        assert engine.transcribe(np.zeros(n, dtype=np.float32)) == ""


def test_moonshine_is_english_only(
    engine: MoonshineEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="English only"):
        MoonshineEngine(default_language="de")
    audio = speech(SENTENCES[0])
    with caplog.at_level(logging.WARNING, logger="services.asr.engines.moonshine"):
        engine._warned_language = False
        first = engine.transcribe(audio, language="fr")
        engine.transcribe(audio[: RATE // 2], language="fr")
    assert word_overlap(SENTENCES[0], first) >= 0.8  # still English
    assert len([r for r in caplog.records if "English only" in r.getMessage()]) == 1


def test_moonshine_passes_from_two_threads_at_once(engine: MoonshineEngine) -> None:
    """One model handle serves a partial and a final pass at once, each with its own text."""
    clips = [speech(SENTENCES[0]), speech("Turn off the kitchen lights.")]
    expected = [engine.transcribe(c) for c in clips]
    got: list[str] = ["", ""]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        start.wait()
        got[k] = engine.transcribe(clips[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == expected
    assert word_overlap("Turn off the kitchen lights.", got[1]) >= 0.8, got[1]


def test_asr_service_builds_the_moonshine_engine() -> None:
    eng = build_engine(AsrSettings(engine="moonshine"))
    try:
        assert isinstance(eng, MoonshineEngine)
        assert not eng.takes_hot_words
        heard = eng.transcribe(speech(SENTENCES[0]), "en", ["Paris"])
        assert word_overlap(SENTENCES[0], heard) >= 0.8, heard
    finally:
        eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.transcribe(np.zeros(RATE, dtype=np.float32))
    with pytest.raises(ValueError, match="English only"):
        build_engine(AsrSettings(engine="moonshine", language="es"))
