"""Helpers of tests/test_deploy.py: reading Dockerfiles, rendering Kustomize overlays, running
kubernetes-validate, and the environment variables each service's settings accept."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KINDS = ("gateway", "asr", "llm", "tts", "session")
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
REQUIREMENTS = DEPLOY / "requirements"


# --- Dockerfiles ---------------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def read_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments out)."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif instruction == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV of a stage (`ENV K=V K2=V2` form), `$PATH`-style references left as they are."""
    env: dict[str, str] = {}
    for rest in stage.args("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def default_port(kind: str) -> int:
    match = re.search(
        r"^DEFAULT_PORT = (\d+)$", (REPO / f"services/{kind}/main.py").read_text(), re.M
    )
    assert match, f"services/{kind}/main.py: no DEFAULT_PORT"
    return int(match.group(1))


# --- requirement locks ---------------------------------------------------------------------------
def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a lock file, by canonical name."""
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: not pinned: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def wheels_present(wheel_dir: Path, pins: dict[str, str]) -> list[str]:
    """The pins with no wheel of exactly that version in `wheel_dir`."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    have: set[tuple[str, str]] = set()
    if wheel_dir.is_dir():
        for whl in wheel_dir.glob("*.whl"):
            name, version, _, _ = parse_wheel_filename(whl.name)
            have.add((canonicalize_name(name), str(version)))
    from packaging.version import Version

    return [f"{n}=={v}" for n, v in pins.items() if (n, str(Version(v))) not in have]


# --- settings ------------------------------------------------------------------------------------
def settings_class(kind: str) -> Any:
    from services.common.settings import ServiceSettings

    module = importlib.import_module(f"services.{kind}.settings")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj is not ServiceSettings
    ]
    assert len(found) == 1, f"services/{kind}/settings.py: {found}"
    return found[0]


def env_names(kind: str) -> dict[str, list[str]]:
    """Each setting of `kind`'s service -> the environment variable names it is read from."""
    from pydantic import AliasChoices

    cls = settings_class(kind)
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, list[str]] = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names[name] = [str(c) for c in alias.choices]
        elif isinstance(alias, str):
            names[name] = [alias]
        else:
            names[name] = [f"{prefix}{name}".upper()]
    return names


# --- Kubernetes ----------------------------------------------------------------------------------
def kustomize_command() -> list[str] | None:
    """`kustomize build` or `kubectl kustomize` (kubectl embeds kustomize), whichever is here."""
    venv_bin = Path(sys.executable).parent
    for name, cmd in (("kustomize", ["build"]), ("kubectl", ["kustomize"])):
        exe = shutil.which(name) or shutil.which(name, path=str(venv_bin))
        if exe:
            return [exe, *cmd]
    return None


def render(directory: Path) -> list[dict[str, Any]]:
    cmd = kustomize_command()
    assert cmd is not None
    proc = subprocess.run([*cmd, str(directory)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} {directory}:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def kubernetes_validate(paths: list[Path], version: str | None = None) -> tuple[int, str]:
    """Run `kubernetes-validate --strict` (rejects unknown fields) on files; (status, output)."""
    exe = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "kubernetes_validate"]
    if version:
        cmd += ["-k", version]
    proc = subprocess.run(
        [*cmd, "--strict", *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout + proc.stderr


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
