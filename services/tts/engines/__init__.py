"""TTS engine providers behind `services.tts.engine.TTSEngine`.

The classes are exported lazily (PEP 562), so `from services.tts.engines import EspeakEngine`
does not import onnxruntime or torch: each module pulls its own heavy dependencies only when
its class is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .coqui import CoquiEngine, CoquiEngineError
    from .espeak import EspeakEngine, EspeakError
    from .fake import FakeTTSEngine
    from .piper import PiperEngine

__all__ = [
    "CoquiEngine",
    "CoquiEngineError",
    "EspeakEngine",
    "EspeakError",
    "FakeTTSEngine",
    "PiperEngine",
    "split_pcm",
]

_LAZY = {
    "CoquiEngine": "coqui",
    "CoquiEngineError": "coqui",
    "EspeakEngine": "espeak",
    "EspeakError": "espeak",
    "FakeTTSEngine": "fake",
    "PiperEngine": "piper",
}


def split_pcm(pcm: bytes, chunk_bytes: int) -> list[bytes]:
    """Cut PCM16 bytes into chunks of at most `chunk_bytes` (rounded down to whole samples)."""
    step = max(2, chunk_bytes - chunk_bytes % 2)
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
