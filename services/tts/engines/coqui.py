"""coqui-tts: a user's own model files (checkpoint + config.json), run on CPU with torch.

Optional: install with `scripts/install-coqui.sh`. coqui is imported inside `load()`, so this
module imports without it. No model is downloaded: the zoo needs the internet, so only local
files are accepted (`HF_HUB_OFFLINE=1`), and coqui's licence prompt is pre-answered
(`COQUI_TOS_AGREED=1`; the user who brings a model brings its licence).

Streaming: `Synthesizer.tts()` returns a whole utterance, so each clause is synthesised in one
call on a worker thread and then yielded in ~100 ms chunks. A torch forward pass cannot be
aborted: on cancel the engine stops yielding at once and a queued clause never starts, while a
clause already in flight runs to its end in the background (the one worker thread is then busy
for at most one clause's synthesis time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from services.tts.engine import TTSEngine
from services.tts.engines import split_pcm

log = logging.getLogger(__name__)


class CoquiEngineError(RuntimeError):
    """coqui-tts is missing, or the model files don't load."""


class CoquiEngine(TTSEngine):
    """A coqui-tts model loaded from `model_path` + `config_path`; PCM16 chunks of `chunk_ms`."""

    name = "coqui"

    def __init__(self, model_path: str, config_path: str, *, chunk_ms: int = 100) -> None:
        self.model_path = model_path
        self.config_path = config_path
        self.chunk_ms = chunk_ms
        self.sample_rate = 22050  # replaced by the model's output rate in load()
        self._tts: Any = None  # TTS.api.TTS
        # torch already spreads one forward pass over every core: one clause at a time.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_lock = asyncio.Lock()

    async def load(self) -> None:
        async with self._load_lock:  # synthesize() loads lazily: never load twice
            if self._tts is None:
                await self._load_once()

    async def _load_once(self) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coqui")
        try:
            self._tts = await asyncio.get_running_loop().run_in_executor(executor, self._load)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        self.sample_rate = int(self._tts.synthesizer.output_sample_rate)
        log.info("coqui model %s loaded (%d Hz)", self.model_path, self.sample_rate)

    def _load(self) -> Any:
        # Before the first import: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
        os.environ["COQUI_TOS_AGREED"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            from TTS.api import TTS
        except ImportError as exc:
            raise CoquiEngineError(
                f"coqui-tts is not installed or broken ({exc}): run scripts/install-coqui.sh"
            ) from exc
        for path in (self.model_path, self.config_path):
            if not os.path.isfile(path):
                raise CoquiEngineError(f"coqui model file not found: {path}")
        try:
            return TTS(
                model_path=self.model_path, config_path=self.config_path, progress_bar=False
            ).to("cpu")
        except Exception as exc:
            raise CoquiEngineError(f"cannot load coqui model {self.model_path}: {exc}") from exc

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._tts = None

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """`voice` names a speaker of a multi-speaker model; ignored by single-speaker ones."""
        text = text.strip()
        if not text:
            return
        await self.load()
        if self._executor is None:
            raise CoquiEngineError("coqui engine is closed")
        cfut = self._executor.submit(self._synthesize_pcm, text, voice)
        try:
            pcm = await asyncio.wrap_future(cfut)
        except asyncio.CancelledError:
            cfut.cancel()  # not started yet: never starts; running: finishes unheard
            raise
        for chunk in split_pcm(pcm, 2 * self.sample_rate * self.chunk_ms // 1000):
            yield chunk

    def _synthesize_pcm(self, text: str, voice: str | None) -> bytes:
        tts = self._tts
        kwargs: dict[str, Any] = {}
        if voice and tts.is_multi_speaker:
            kwargs["speaker_name"] = voice
        wav = np.asarray(tts.synthesizer.tts(text, **kwargs), dtype=np.float32)
        if wav.size == 0:
            return b""
        # As coqui's own save_wav: scale the peak to full range (never amplify below 0.01).
        wav = wav * (32767.0 / max(0.01, float(np.max(np.abs(wav)))))
        return np.clip(wav, -32767.0, 32767.0).astype(np.int16).tobytes()
