"""No dead state in the services: what they write, something reads.

Invariants protected: every attribute a service sets on its own objects (`self.name = ...`,
`self.part.name = ...`, `+=`) is read somewhere, in services/, harness/, tests/, bench/ or
scripts/ (by name: one reader anywhere keeps it); every field of a service's settings class is
read by the services themselves (a setting only a test reads changes nothing). A field written
and never read is a measurement nobody reports or a setting nobody applies: `Turn.t_llm`, or
`GatewaySettings.idle_session_s` while the gateway closed idle sessions after a fixed 60 s.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / "services"
READERS = [SERVICES, REPO / "harness", REPO / "tests", REPO / "bench", REPO / "scripts"]
SETTINGS_BASES = {"ServiceSettings", "BaseSettings"}


def trees(*folders: Path) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def reads(*folders: Path) -> set[str]:
    """Names read as attributes (`x.name`, `getattr(x, "name")`) in `folders`."""
    names: set[str] = set()
    for _, tree in trees(*folders):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def test_every_attribute_the_services_set_is_read() -> None:
    read = reads(*READERS)
    unread = []
    for path, tree in trees(SERVICES):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)):
                continue
            root = _root(node)
            if isinstance(root, ast.Name) and root.id == "self" and node.attr not in read:
                unread.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert not unread, "set and never read: " + ", ".join(unread)


def test_every_setting_is_read_by_the_services() -> None:
    read = reads(SERVICES)
    unread = []
    for path, tree in trees(SERVICES):
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef):
                continue
            bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases}
            if not bases & SETTINGS_BASES:
                continue
            for stmt in cls.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if stmt.target.id not in read and stmt.target.id != "model_config":
                        unread.append(f"{path.relative_to(REPO)}: {cls.name}.{stmt.target.id}")
    assert not unread, "settings nothing reads: " + ", ".join(unread)
