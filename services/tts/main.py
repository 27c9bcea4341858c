"""TTS service: `python -m services.tts`."""

from __future__ import annotations

from services.common.service import run_worker, setup_logging

from .engine import TTSEngine
from .settings import TtsSettings
from .worker import TtsWorker

DEFAULT_PORT = 8083


def build_engine(settings: TtsSettings) -> TTSEngine:
    if settings.engine == "fake":
        from .engines.fake import FakeTTSEngine

        return FakeTTSEngine()
    if settings.engine == "espeak":
        from .engines.espeak import EspeakEngine

        return EspeakEngine()
    if settings.engine == "coqui":
        if not settings.coqui_model or not settings.coqui_config:
            raise SystemExit("VA_COQUI_MODEL and VA_COQUI_CONFIG must name the model files")
        from .engines.coqui import CoquiEngine

        return CoquiEngine(model_path=settings.coqui_model, config_path=settings.coqui_config)
    from .engines.piper import PiperEngine

    return PiperEngine(
        model_path=settings.piper_model,
        config_path=settings.piper_config,
        onnx_threads=settings.onnx_threads or None,
    )


async def main() -> None:
    settings = TtsSettings()
    setup_logging(settings.log_level)
    await run_worker(TtsWorker(settings, build_engine(settings)), settings, DEFAULT_PORT)
