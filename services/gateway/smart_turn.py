"""Smart Turn v3.2: how likely the audio of an utterance so far ends a turn, from its sound.

The model (BSD-2-Clause, by Pipecat) is the ONNX file `smart-turn-v3.2-cpu.onnx` shipped inside
the `pipecat-ai==1.14.0` wheel; `python -m services.gateway.smart_turn` takes that one file out
of the wheel (without installing the package) into the models folder, size and SHA-256 checked
(`scripts/install.sh` and the gateway image do it). Input: Whisper-style log-mel features, 80 x
800, of the last 8 s at 16 kHz (left-padded with silence), the waveform normalised to zero mean
and unit variance first; output: the probability that the speaker is done. About 60 ms a run on
one thread. `turn_cues.end_window` decides what the score means.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from services.common.models_dir import is_verified, models_dir, pip_wheel_member

from .vad import SAMPLE_RATE, onnx_session

PIP_SPEC = "pipecat-ai==1.14.0"
MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SIZE = 8_679_182
SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
WINDOW_S = 8
NORM_EPS = 1e-7

log = logging.getLogger(__name__)


class SmartTurnMissing(RuntimeError):
    """The model file is not on this machine; the message says how to get it."""


def model_path() -> Path:
    return models_dir() / "smart-turn-v3.2-cpu.onnx"


def fetch() -> Path:
    """The model file, taken out of the pipecat-ai wheel once."""
    return pip_wheel_member(PIP_SPEC, MEMBER, model_path(), SIZE, SHA256)


class SmartTurn:
    """One onnxruntime session; `score` may be called from any thread (one run at a time)."""

    def __init__(self, path: Path | None = None) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        path = path or model_path()
        if not is_verified(path, SHA256):
            raise SmartTurnMissing(
                f"the end-of-turn model is not in {path.parent}: run "
                "`python -m services.gateway.smart_turn` (scripts/install.sh does)"
            )
        self.session = onnx_session(str(path))
        self.features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        self._lock = threading.Lock()

    def score(self, pcm16: bytes) -> float:
        """P(the turn is over) for the utterance so far: PCM16 16 kHz mono, any length."""
        n = WINDOW_S * SAMPLE_RATE
        audio = np.frombuffer(pcm16, dtype="<i2")[-n:].astype(np.float32) / 32768.0
        x = np.zeros(n, dtype=np.float32)
        x[n - audio.size :] = audio
        x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
        mel = self.features(x, padding=0)[:, : n // self.features.hop_length]
        with self._lock:
            (prob,) = self.session.run(None, {"input_features": mel[None].astype(np.float32)})
        return float(np.asarray(prob).reshape(-1)[0])


_shared: SmartTurn | None = None
_shared_failed = False
_shared_lock = threading.Lock()


def shared_model() -> SmartTurn | None:
    """A process-wide model, loaded on first use; None (the error logged once) when it cannot
    be loaded: pauses are then judged from their text alone."""
    global _shared, _shared_failed
    with _shared_lock:
        if _shared is None and not _shared_failed:
            try:
                _shared = SmartTurn()
            except Exception:
                _shared_failed = True
                log.exception("no end-of-turn model: pauses are judged from their text alone")
        return _shared


if __name__ == "__main__":  # fetch the model file
    print(fetch())
