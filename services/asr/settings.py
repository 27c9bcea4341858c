from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from services.common.settings import ServiceSettings

from .models import MODELS


class AsrSettings(ServiceSettings):
    engine: Literal["faster-whisper", "moonshine", "fake"] = "faster-whisper"
    # faster-whisper: a model of services/asr/models.py ("base", "tiny.en"), or `model_dir`, any
    # CTranslate2 Whisper folder, instead. (VA_WHISPER_MODEL: VA_MODEL is the llm's.)
    whisper_model: str = "base"
    model_dir: str | None = None
    language: str | None = "en"  # moonshine: English only (None or "en")
    compute_type: str = "int8"
    cpu_threads: int = 2  # the final pass runs alone at end of turn: 2 threads are ~30 % faster
    beam_size: int = Field(5, ge=1, le=10)  # faster-whisper's beam search width
    # Encoder window (services/asr/engines/faster_whisper.py): at least this many seconds (None:
    # the model's own), and the speech plus `window_pad_s`; 30 = Whisper's full window.
    min_window_s: float | None = Field(None, ge=2.0, le=30.0)
    window_pad_s: float = Field(3.0, ge=1.0, le=30.0)
    partial_interval_ms: int = 1000
    max_utterance_s: float = 30.0
    max_concurrent: int = 8  # utterances held at once by one replica

    @field_validator("whisper_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown ASR model {value!r}; known: {', '.join(MODELS)}")
        return value
