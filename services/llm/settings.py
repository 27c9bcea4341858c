from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from services.common.settings import ServiceSettings

from .models import DEFAULT_PROFILE


class LlmSettings(ServiceSettings):
    engine: Literal["llama-cpp", "openai", "fake"] = "llama-cpp"
    # embedded llama.cpp: a profile name (services/llm/models.py) or the path of a chat GGUF
    model: str = Field(DEFAULT_PROFILE, validation_alias=AliasChoices("VA_MODEL", "VA_MODEL_PATH"))
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 64  # prompt tokens per evaluation step (services/llm/engines/llama_cpp.py)
    # any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, hosted)
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str | None = None
    openai_model: str = "default"
    request_timeout_s: float = 30.0
    warmup: bool = True  # one short generation at start (embedded engine; harmless elsewhere)
    max_queued: int = 16  # generations held (running + waiting) by one replica
    # A reply claim this replica expects to start later than this is refused (busy): the
    # session waits for a replica and tells the client (services/llm/admission.py); 0: off.
    admission_wait_s: float = Field(3.0, ge=0.0)
