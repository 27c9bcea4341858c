"""LLM service: `python -m services.llm`."""

from __future__ import annotations

import logging

from services.common.service import run_worker, setup_logging

from .engine import LLMEngine
from .models import ModelNotFound, resolve_model
from .settings import LlmSettings
from .worker import LlmWorker

DEFAULT_PORT = 8082
log = logging.getLogger("services.llm")


def build_engine(settings: LlmSettings) -> LLMEngine:
    if settings.engine == "fake":
        from .engines.fake import FakeLLMEngine

        return FakeLLMEngine()
    if settings.engine == "openai":
        from .engines.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            timeout_s=settings.request_timeout_s,
        )
    from .engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(
        model_path=resolve_model(settings.model),
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        n_batch=settings.n_batch,
    )


async def main() -> None:
    settings = LlmSettings()
    setup_logging(settings.log_level)
    try:
        engine = build_engine(settings)
    except ModelNotFound as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    await run_worker(LlmWorker(settings, engine), settings, DEFAULT_PORT)
