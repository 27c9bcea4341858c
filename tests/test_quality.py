"""The code base stays clean: ruff (style, bugbear, async rules) everywhere, and mypy on the
services and on the harness that tests and benchmarks share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff() -> None:
    result = run("ruff", "check", "services", "harness", "tests", "bench", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = run("mypy", "services", "harness")
    assert result.returncode == 0, result.stdout + result.stderr
