"""Where model files made on this machine live: `VA_MODELS_DIR`, default
`~/.cache/voice-assistant/models` (`$XDG_CACHE_HOME` honoured); never inside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def models_dir() -> Path:
    configured = os.environ.get("VA_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "voice-assistant" / "models"
