"""faster-whisper (CTranslate2) engine: the default ASR, with a Whisper model of
services/asr/models.py (Whisper base by default) or any CTranslate2 Whisper folder.

- Beam search of 5, an explicit language (detection doubles the cost), no VAD filter (the
  gateway's VAD runs upstream).
- The encoder input is cut to the speech plus `pad_s` of padding and at least `min_window_s`
  (each model's own: 8 s for base, 12 s for tiny.en, which repeats itself below ~10 s), not
  Whisper's full 30 s: a third of the time for the same words; 30 restores the full window.
- A pass's `max_new_tokens` grows with the audio's length (`TOKENS_MIN` + `TOKENS_PER_S` a
  second), so a decoder loop costs a bounded time; a text that still repeats itself
  (services/asr/guard.py) is decoded again on the full 30 s window.
- A segment likely no speech (`NO_SPEECH_THRESHOLD`) and not confidently decoded is dropped.
- Hot words go in as Whisper's prompt (`hotwords`); a segment that is likely no speech
  (`no_speech_prob` > 0.35) and says only prompt words is dropped, since the prompt makes noise
  read as those words.
Figures behind each choice: docs/performance.md ("ASR").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.asr.engine import ASREngine
from services.asr.guard import only_words_of, repeated

FRAMES_PER_S = 100  # Whisper's feature frames (10 ms hop)
FULL_WINDOW_FRAMES = 3000
# A pass's max_new_tokens: TOKENS_MIN plus TOKENS_PER_S per second of audio (see above).
TOKENS_MIN = 32
TOKENS_PER_S = 12
MAX_NEW_TOKENS = 400  # Whisper's 448 less room for the prompt
# A hot-word echo: likelier no speech than this (see _echo). Speech stays under 0.32; the same
# 1 s of digital silence with a three-name prompt read 0.45 on a Zen 3 CPU, over 0.6 on others.
NO_SPEECH_PROB = 0.35
# A segment more likely no speech than this, and not confidently decoded (avg log-prob < -1),
# is dropped (faster-whisper's rule; its default 0.6 let Whisper base write "This is the end of
# this video." for a breath at 0.58). Speech, noisy and through a browser, stays under 0.32.
NO_SPEECH_THRESHOLD = 0.45
WARM_STEP_S = 6  # the warm-up's windows: from the minimum up to 30 s in steps of this


def _windowed_model_class() -> type[Any]:
    """WhisperModel whose encoder sees only the frames its calling thread allowed."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.window = threading.local()  # per thread: num_workers passes run at once

        def encode(self, features: np.ndarray) -> Any:
            frames = getattr(self.window, "frames", None)
            if frames is not None and features.shape[-1] > frames:
                # faster-whisper padded the segment with zeros up to 3000 frames: drop the
                # padding past the window (the speech itself always fits inside it)
                features = features[..., :frames]
            return super().encode(features)

    return WindowedWhisperModel


class FasterWhisperEngine(ASREngine):
    """Blocking Whisper transcription; the ASR service calls `transcribe` in a thread.

    `default_language` is used when the caller passes no language. An English-only model
    (".en") ignores the language argument; None on a multilingual model turns on detection (slow).
    `min_window_s` / `pad_s`: the encoder window (see the module docstring).
    """

    takes_hot_words = True  # as Whisper's prompt

    def __init__(
        self,
        model_dir: str,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        default_language: str | None = "en",
        num_workers: int = 2,
        min_window_s: float = 12.0,
        pad_s: float = 3.0,
        beam_size: int = 5,
    ) -> None:
        self.model_dir = str(model_dir)  # ctranslate2 rejects a Path
        self.default_language = default_language
        self.min_window_frames = int(min_window_s * FRAMES_PER_S)
        self.pad_frames = int(pad_s * FRAMES_PER_S)
        self.beam_size = beam_size
        self._model: Any = _windowed_model_class()(
            self.model_dir,
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            # Two workers: a final pass never waits behind a partial pass of another utterance.
            num_workers=num_workers,
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.passes_at_once = num_workers

    def warm_up(self) -> None:
        """Passes on a ladder of windows up to Whisper's full one, on faint noise (which Whisper
        reads as long text: the decoder's largest buffers too), so the buffers of every size a
        turn needs are allocated before the first turn: ~3.5 s a thread on 2 cores, after
        which the replica's memory stays flat (docs/performance.md, "ASR memory")."""
        rng = np.random.default_rng(0)
        low, top = self.min_window_frames // FRAMES_PER_S, FULL_WINDOW_FRAMES // FRAMES_PER_S
        for seconds in range(low, top + WARM_STEP_S, WARM_STEP_S):
            noise = rng.normal(0.0, 0.05, min(seconds, top) * self.sample_rate)
            self.transcribe(noise.astype(np.float32))

    def window_frames(self, samples: int) -> int:
        """Encoder frames for audio of `samples`: speech + padding, at least the minimum, in
        whole seconds (fewer distinct shapes), at most Whisper's 30 s."""
        need = samples * FRAMES_PER_S / self.sample_rate + self.pad_frames
        frames = max(self.min_window_frames, math.ceil(need / FRAMES_PER_S) * FRAMES_PER_S)
        return min(FULL_WINDOW_FRAMES, frames)

    def max_new_tokens(self, samples: int) -> int:
        """faster-whisper's `max_new_tokens` for audio of `samples` (see the module docstring)."""
        seconds = samples / self.sample_rate
        return min(MAX_NEW_TOKENS, TOKENS_MIN + math.ceil(TOKENS_PER_S * seconds))

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, hot_words: Sequence[str] = ()
    ) -> str:
        if self._model is None:
            raise RuntimeError("FasterWhisperEngine is closed")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            return ""
        lang = language or self.default_language
        if not self.multilingual:
            lang = "en"
        prompt = ", ".join(hot_words) or None
        frames = self.window_frames(audio.size)
        text = self._decode(audio, lang, prompt, frames)
        if frames < FULL_WINDOW_FRAMES and repeated(text):
            # A loop on the shortened window: read the audio again as Whisper was trained to.
            text = self._decode(audio, lang, prompt, FULL_WINDOW_FRAMES)
        return text

    def _decode(self, audio: np.ndarray, lang: str | None, prompt: str | None, frames: int) -> str:
        self._model.window.frames = frames
        try:
            segments, _info = self._model.transcribe(
                audio,
                language=lang,
                beam_size=self.beam_size,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                max_new_tokens=self.max_new_tokens(audio.size),
                hotwords=prompt,
                no_speech_threshold=NO_SPEECH_THRESHOLD,
            )
            # `segments` is a lazy generator: decoding happens while we join, in this thread.
            return " ".join(s.text.strip() for s in segments if not _echo(s, prompt)).strip()
        finally:
            self._model.window.frames = None

    def close(self) -> None:
        self._model = None


def _echo(segment: Any, prompt: str | None) -> bool:
    """A segment that is likely no speech and says only the prompt's words: noise read as the
    hot words (seen: 2 s of faint noise with the prompt "Zorvex, Siobhan" gave "Zorvex")."""
    return (
        prompt is not None
        and segment.no_speech_prob > NO_SPEECH_PROB
        and only_words_of(segment.text, prompt)
    )
