"""LLM engine providers beside the interface in `services.llm.engine`.

The classes are exported lazily (PEP 562), so `from services.llm.engines import FakeLLMEngine`
does not import llama-cpp-python or openai; each heavy dependency loads with its own engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.llm.engines.fake import FakeLLMEngine
    from services.llm.engines.llama_cpp import LlamaCppEngine
    from services.llm.engines.openai_compat import OpenAICompatEngine

__all__ = ["FakeLLMEngine", "LlamaCppEngine", "OpenAICompatEngine"]

_MODULES = {
    "FakeLLMEngine": "services.llm.engines.fake",
    "LlamaCppEngine": "services.llm.engines.llama_cpp",
    "OpenAICompatEngine": "services.llm.engines.openai_compat",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
