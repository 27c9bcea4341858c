"""ASR accuracy: the test material. Each voice says every sentence in one recording (clean, and
with pink, brown or babble noise under it at SNR_DB), optionally played through Chromium's
microphone processing; each utterance cut as the gateway cuts it; non-speech sounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from harness.audio import (
    ARTIFACTS,
    active_bounds_ms,
    cough_wav,
    noise_wav,
    read_wav,
    resample,
    speak_wav,
    write_wav,
)

from .browser_capture import RATE as BROWSER_RATE
from .browser_capture import align, capture

WORK = ARTIFACTS / "bench-asr"


RATE = 16000


PREROLL_MS, TAIL_MS = 300, 500  # as the gateway's turn detector cuts an utterance


GAP_MS, LEAD_MS = 1500, 2000


SNR_DB = 10.0


SENTENCES = (
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "At what temperature does water boil?",
    "How many legs does a spider have?",
    "Can you recommend a good book for a long flight?",
    "Remind me to call my sister tomorrow morning.",
    "What is the weather going to be like this weekend?",
    "Please turn off the lights in the living room.",
    "Tell me a short joke about cats.",
    "How do I make a cup of green tea?",
    "Who painted the Mona Lisa?",
    "What is the difference between a frog and a toad?",
    "I would like to book a table for dinner tonight.",
    "Why do leaves change color in autumn?",
    "Translate good morning into Spanish.",
    "Is it going to rain this afternoon?",
)


NOISES = ("pink", "babble", "brown")


def speech(voice: str, text: str) -> np.ndarray:
    """`text` in `voice` ("piper", "espeak:VOICE", "kokoro:VOICE"), trimmed, int16 at RATE."""
    engine, _, name = voice.partition(":")
    pcm, rate = read_wav(speak_wav(text, engine=engine, rate=RATE, voice=name or None))
    start, end = active_bounds_ms(pcm, rate)
    return pcm[start * RATE // 1000 : end * RATE // 1000]


@dataclass
class Recording:
    """One voice saying every sentence: where each one is, clean and with noise under it."""

    voice: str
    noise_kind: str
    clean: np.ndarray
    noisy: np.ndarray
    spans: list[tuple[int, int]] = field(default_factory=list)  # samples at RATE

    @property
    def seconds(self) -> float:
        return len(self.clean) / RATE


# A café: six people no utterance is spoken by, each saying something else, all at once.
BABBLE = (
    ("kokoro:am_michael", "The train to the city leaves from the second platform every hour."),
    ("kokoro:bf_emma", "We should meet for coffee after the meeting on Thursday."),
    ("kokoro:af_bella", "She said the garden looked lovely after all that rain."),
    ("kokoro:bm_fable", "I never know which bus goes past the old market square."),
    ("espeak:en-gb-scotland", "My brother bought a new bicycle for the summer holidays."),
    ("espeak:en-029", "Could you pass me the salt and the pepper, please?"),
)


def babble(n: int, seed: int) -> np.ndarray:
    """Many voices talking at once, none of them a voice under test: each looped from a random
    start."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for voice, text in BABBLE:
        clip = speech(voice, text).astype(np.float64)
        clip /= np.sqrt(np.mean(clip**2)) + 1e-9  # every talker equally loud
        loop = np.tile(np.concatenate([clip, np.zeros(RATE // 3)]), n // len(clip) + 2)
        start = int(rng.integers(0, len(clip)))
        out += loop[start : start + n]
    return out


def noise(kind: str, n: int, seed: int) -> np.ndarray:
    if kind == "babble":
        y = babble(n, seed)
    else:
        pcm, _ = read_wav(noise_wav(seconds=n / RATE + 0.1, rate=RATE, dbfs=-20.0, color=kind))
        y = pcm[:n].astype(np.float64)
    return y / (np.sqrt(np.mean(y**2)) + 1e-9)


def record_voice(voice: str, index: int) -> Recording:
    parts, spans, at = (
        [np.zeros(LEAD_MS * RATE // 1000, dtype=np.int16)],
        [],
        LEAD_MS * RATE // 1000,
    )
    gap = np.zeros(GAP_MS * RATE // 1000, dtype=np.int16)
    for text in SENTENCES:
        clip = speech(voice, text)
        spans.append((at, at + len(clip)))
        parts += [clip, gap]
        at += len(clip) + len(gap)
    clean = np.concatenate(parts)
    kind = NOISES[index % len(NOISES)]
    speech_power = np.mean(np.concatenate([clean[a:b] for a, b in spans]).astype(np.float64) ** 2)
    under = noise(kind, len(clean), seed=index) * np.sqrt(speech_power / 10 ** (SNR_DB / 10))
    noisy = np.clip(clean + under, -32768, 32767).astype(np.int16)
    return Recording(voice, kind, clean, noisy, spans)


def through_browser(recordings: list[Recording], noisy: bool) -> list[np.ndarray]:
    """Each recording as Chromium's processed microphone, aligned to it, at RATE."""
    WORK.mkdir(parents=True, exist_ok=True)
    wavs = []
    for i, rec in enumerate(recordings):
        wavs.append(
            write_wav(WORK / f"mic-{i}-{int(noisy)}.wav", rec.noisy if noisy else rec.clean, RATE)
        )
    seconds = [rec.seconds + 1.0 for rec in recordings]
    heard = asyncio.run(capture(wavs, seconds))
    out = []
    for rec, pcm in zip(recordings, heard, strict=False):
        pcm16 = resample(pcm, BROWSER_RATE, RATE)
        shift = align(rec.noisy if noisy else rec.clean, pcm16, RATE)
        # recorded sample i is played sample i + shift: put it back on the played timeline
        out.append(np.concatenate([np.zeros(shift, dtype=np.int16), pcm16]))
    return out


def cut(pcm: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    a = max(0, span[0] - PREROLL_MS * RATE // 1000)
    b = span[1] + TAIL_MS * RATE // 1000
    seg = pcm[a:b]
    if len(seg) < b - a:  # the browser's recording ended early
        seg = np.concatenate([seg, np.zeros(b - a - len(seg), dtype=np.int16)])
    return seg.astype(np.float32) / 32768.0


def non_speech() -> dict[str, np.ndarray]:
    """Sounds that are not speech, 3 s each at RATE, int16."""
    n = 3 * RATE
    out = {"silence": np.zeros(n, dtype=np.int16)}
    for color, dbfs in (("pink", -35.0), ("pink", -20.0), ("brown", -20.0), ("white", -30.0)):
        pcm, _ = read_wav(noise_wav(seconds=3.0, rate=RATE, dbfs=dbfs, color=color))
        out[f"{color} {dbfs:g} dBFS"] = pcm[:n]
    pcm, rate = read_wav(cough_wav(rate=RATE))
    out["cough"] = np.concatenate([pcm, np.zeros(n - len(pcm), dtype=np.int16)])
    clicks = np.zeros(n)
    rng = np.random.default_rng(5)
    for at in rng.integers(0, n - 200, 12):  # keyboard-like clicks
        clicks[at : at + 200] += rng.standard_normal(200) * np.exp(-np.arange(200) / 30) * 8000
    out["clicks"] = np.clip(clicks, -32768, 32767).astype(np.int16)
    t = np.arange(n) / RATE
    hum = np.sum([np.sin(2 * np.pi * 110 * k * t) / k for k in range(1, 6)], axis=0) * 2000
    out["hum"] = hum.astype(np.int16)
    # a tune with vibrato (music from a radio), and a breath (short, band-passed, soft onset)
    notes = np.repeat([220.0, 247.0, 262.0, 294.0, 330.0, 294.0], n // 6 + 1)[:n]
    phase = 2 * np.pi * np.cumsum(notes * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / RATE
    out["music"] = (
        np.sum([np.sin(k * phase) / k**1.5 for k in range(1, 8)], axis=0) * 6000
    ).astype(np.int16)
    pcm, _ = read_wav(noise_wav(seconds=3.0, rate=RATE, dbfs=-15.0, color="white"))
    out["white -15 dBFS"] = pcm[:n]
    breath = np.zeros(n)
    m = RATE * 6 // 10
    env = np.sin(np.linspace(0, np.pi, m)) ** 2
    breath[RATE : RATE + m] = noise("pink", m, seed=9) * env * 3000
    out["breath"] = breath.astype(np.int16)
    return out


def gateway_utterances(pcm: np.ndarray) -> list[np.ndarray]:
    """What the gateway would send to ASR for this audio: each utterance its detector finds."""
    from services.gateway.vad import SpeechEnd, SpeechFrame, SpeechStart, TurnDetector

    detector, cur, out = TurnDetector(), None, []
    tail = np.zeros(RATE, dtype=np.int16)
    for ev in detector.feed(np.concatenate([pcm, tail])):
        if isinstance(ev, SpeechStart):
            cur = bytearray(ev.preroll)
        elif isinstance(ev, SpeechFrame) and cur is not None:
            cur += ev.pcm
        elif isinstance(ev, SpeechEnd) and cur is not None:
            out.append(np.frombuffer(bytes(cur), dtype=np.int16))
            cur = None
    return [u.astype(np.float32) / 32768.0 for u in out]
