"""ASR service: `python -m services.asr`."""

from __future__ import annotations

import contextlib
import ctypes

from services.common.service import run_worker, setup_logging

from .engine import ASREngine
from .settings import AsrSettings
from .worker import AsrWorker

DEFAULT_PORT = 8081
M_ARENA_MAX = -8  # glibc's mallopt parameter


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


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates under contention its own arena, up to 8 per core,
    and keeps what each one grew to: a Whisper pass on a new thread or a new window size grew
    the replica by tens of MiB. Two arenas hold it within a few % after the warm-up (measured in
    docs/performance.md, "ASR memory"). Not glibc: nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


async def main() -> None:
    limit_malloc_arenas()
    settings = AsrSettings()
    setup_logging(settings.log_level)
    worker = AsrWorker(settings, build_engine(settings))
    await run_worker(worker, settings, DEFAULT_PORT)
