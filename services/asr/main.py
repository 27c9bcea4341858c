"""ASR service: `python -m services.asr`."""

from __future__ import annotations

from services.common.service import run_worker, setup_logging

from .engine import ASREngine
from .settings import AsrSettings
from .worker import AsrWorker

DEFAULT_PORT = 8081


def build_engine(settings: AsrSettings) -> ASREngine:
    if settings.engine == "fake":
        from .engines.fake import FakeASREngine

        return FakeASREngine()
    if settings.engine == "moonshine":
        from .engines.moonshine import MoonshineEngine

        return MoonshineEngine(default_language=settings.language)
    from .engines.faster_whisper import FasterWhisperEngine
    from .models import MODELS, model_path

    window = settings.min_window_s or MODELS[settings.whisper_model].min_window_s
    return FasterWhisperEngine(
        model_dir=settings.model_dir or model_path(settings.whisper_model),
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        beam_size=settings.beam_size,
        default_language=settings.language,
        min_window_s=window,
        pad_s=settings.window_pad_s,
    )


async def main() -> None:
    settings = AsrSettings()
    setup_logging(settings.log_level)
    worker = AsrWorker(settings, build_engine(settings))
    await run_worker(worker, settings, DEFAULT_PORT)
