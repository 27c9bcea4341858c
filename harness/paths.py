"""Where the harness keeps things: the repository root, tests/artifacts/ (the speech cache and
the services' logs of a test run; gitignored) and `shown`, a path as printed."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
LOG_DIR = ARTIFACTS / "logs"


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
