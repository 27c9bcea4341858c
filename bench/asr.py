"""Speech recognition accuracy: each ASR engine on the same utterances, in four conditions.

    bench/run.sh asr                                   # about 15 minutes
    .venv/bin/python -m bench.asr --engines faster-whisper,moonshine --voices piper,kokoro:af_heart

Utterances: SENTENCES (what people ask an assistant; no digits, which engines write either way)
in each voice of VOICES: Piper joe and espeak-ng en-us (the voices the tests use), espeak-ng
en-gb+f3 and Kokoro voices (which no test uses). Each voice speaks all of them in one recording,
1.5 s apart; that recording is heard in four conditions:
- clean: as synthesized;
- noise 10 dB: with noise under it at 10 dB SNR: pink, brown or café babble (six other voices)
  by voice;
- browser: played as Chromium's microphone with the page's default audio processing (echo
  cancellation, noise suppression, auto gain: bench/browser_capture.py), recorded from the track;
- browser + noise: the noisy recording through the same path.
Each utterance is cut as the gateway sends it: 300 ms before the speech (the pre-roll) to 500 ms
after (the end-of-turn silence). Each engine is built as the ASR service builds it
(services/asr/main.py) and its text goes through the service's guard (services/asr/guard.py).
Non-speech (silence, fan and rumble noise, hiss, a cough, clicks, a hum, music, a breath) goes
through the gateway's turn detector, as in the service, and straight to the engine: any text is a
failure.

Reported per engine and condition: word error rate (jiwer, lowercased without punctuation),
transcripts that repeat themselves (from the engine, and after the guard: what the LLM would
get), and time per final pass p50/p95. Output: a table on stdout, bench/results/asr-<stamp>.json
and asr-latest.json, bench/results/asr-latest.png.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from harness.local_stack import load_text
from harness.paths import shown

from . import report
from .browser_capture import RATE as BROWSER_RATE
from .browser_capture import align, capture
from .machine import BenchRun
from .runner import arg_parser, say

REPO = Path(__file__).resolve().parent.parent
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
VOICES = ("piper", "espeak:en-us", "espeak:en-gb+f3", "kokoro:af_heart", "kokoro:bm_george")
NOISES = ("pink", "babble", "brown")
CONDITIONS = ("clean", "noise", "browser", "browser+noise")


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


def wer(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    import jiwer

    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    o = jiwer.process_words(refs, hyps, reference_transform=norm, hypothesis_transform=norm)
    return {
        "wer_pct": round(100.0 * o.wer, 2),
        "substitutions": o.substitutions,
        "deletions": o.deletions,
        "insertions": o.insertions,
        "words": o.hits + o.substitutions + o.deletions,
    }


def timed(transcribe: Callable[[np.ndarray], str], audio: np.ndarray) -> tuple[str, float]:
    t = time.perf_counter()
    text = transcribe(audio)
    return text, (time.perf_counter() - t) * 1000.0


def engine_settings(spec: str) -> dict[str, str]:
    """ "faster-whisper:beam_size=5" -> {"engine": "faster-whisper", "beam_size": "5"}: an ASR
    engine and settings of services/asr/settings.py (also VA_ variables of the asr service)."""
    name, *pairs = spec.split(":")
    out = {"engine": name}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{spec!r}: settings are key=value, e.g. faster-whisper:beam_size=5")
        out[key] = value
    return out


def run_engine(
    name: str, clips: dict[str, list[dict[str, Any]]], sounds: dict[str, np.ndarray]
) -> dict[str, Any]:
    from services.asr import guard
    from services.asr.main import build_engine
    from services.asr.settings import AsrSettings

    engine = build_engine(AsrSettings(**engine_settings(name)))  # type: ignore[arg-type]
    engine.transcribe(np.zeros(RATE, dtype=np.float32), "en")  # warm-up, as the service does
    result: dict[str, Any] = {"conditions": {}, "non_speech": []}
    times: list[float] = []
    for cond, rows in clips.items():
        out = []
        for row in rows:
            raw, ms = timed(lambda a: engine.transcribe(a, "en"), row["audio"])
            times.append(ms)
            text = guard.clean(raw)
            out.append(
                {
                    "voice": row["voice"],
                    "text": row["text"],
                    "engine_text": raw,
                    "heard": text,
                    "ms": round(ms, 1),
                    "repeats": guard.repeated(raw) is not None,
                    "repeats_after_guard": guard.repeated(text) is not None,
                }
            )
        stats = wer([r["text"] for r in out], [r["heard"] for r in out])
        stats |= {
            "utterances": len(out),
            "repeats": sum(r["repeats"] for r in out),
            "repeats_after_guard": sum(r["repeats_after_guard"] for r in out),
            "ms": report.percentiles([r["ms"] for r in out], (50, 95)),
            "by_voice": {
                v: wer(
                    [r["text"] for r in out if r["voice"] == v],
                    [r["heard"] for r in out if r["voice"] == v],
                )["wer_pct"]
                for v in dict.fromkeys(r["voice"] for r in out)
            },
            "clips": out,
        }
        result["conditions"][cond] = stats
        say(
            f"[{name}] {cond}: WER {stats['wer_pct']} % over {stats['words']} words, "
            f"{stats['repeats']} repeated ({stats['repeats_after_guard']} after the guard), "
            f"pass p50 {stats['ms']['p50']:.0f} ms"
        )
    for label, pcm in sounds.items():
        via_gateway = [guard.clean(engine.transcribe(u, "en")) for u in gateway_utterances(pcm)]
        direct = guard.clean(engine.transcribe(pcm.astype(np.float32) / 32768.0, "en"))
        result["non_speech"].append(
            {
                "sound": label,
                "via_gateway": [t for t in via_gateway if t],
                "utterances_sent": len(via_gateway),
                "direct": direct,
            }
        )
    result["text_on_non_speech"] = {
        "via_gateway": sum(bool(r["via_gateway"]) for r in result["non_speech"]),
        "direct": sum(bool(r["direct"]) for r in result["non_speech"]),
        "sounds": len(sounds),
    }
    result["pass_ms"] = report.percentiles(times, (50, 95)) | {"max": round(max(times), 1)}
    engine.close()
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    engines = list(results)

    width = max(26, *(len(e) + 2 for e in engines))

    def line(label: str, cells: list[str]) -> str:
        return f"{label:32}" + "".join(f"{c:>{width}}" for c in cells)

    def wer_cell(c: dict[str, Any] | None) -> str:
        return f"{c['wer_pct']:.1f} % ({c['repeats']}/{c['repeats_after_guard']} rep)" if c else "-"

    def quiet(r: dict[str, Any]) -> str:
        t = r["text_on_non_speech"]
        return f"{t['via_gateway']} / {t['direct']} of {t['sounds']}"

    rows = [line("", engines), "-" * (32 + width * len(engines))]
    for cond in CONDITIONS:
        rows.append(
            line(f"WER {cond}", [wer_cell(results[e]["conditions"].get(cond)) for e in engines])
        )
    rows.append(
        line(
            "pass p50 / p95 ms",
            [
                f"{results[e]['pass_ms']['p50']:.0f} / {results[e]['pass_ms']['p95']:.0f}"
                for e in engines
            ],
        )
    )
    rows.append(line("text on non-speech (gw/direct)", [quiet(results[e]) for e in engines]))
    rows.append("(rep: transcripts that repeat themselves, from the engine / after the guard)")
    return "\n".join(rows)


def draw(results: dict[str, dict[str, Any]], title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(results)
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(12, 4.5), constrained_layout=True, gridspec_kw={"width_ratios": [3, 1]}
    )
    width = 0.8 / len(engines)
    x = np.arange(len(CONDITIONS))
    for i, e in enumerate(engines):
        vals = [results[e]["conditions"].get(c, {}).get("wer_pct", np.nan) for c in CONDITIONS]
        bars = ax.bar(x + i * width, vals, width, label=e)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(5, color="g", ls=":", lw=1, label="target clean 5 %")
    ax.axhline(10, color="r", ls=":", lw=1, label="target noise 10 %")
    ax.set_xticks(x + width * (len(engines) - 1) / 2, CONDITIONS)
    fig.suptitle(title, fontsize=9)
    ax.set(ylabel="word error rate %", title="word error rate by condition")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    p50 = [results[e]["pass_ms"]["p50"] for e in engines]
    p95 = [results[e]["pass_ms"]["p95"] for e in engines]
    bx.bar(engines, p50, label="p50")
    bx.scatter(engines, p95, color="k", marker="_", s=400, label="p95", zorder=3)
    bx.set(ylabel="ms per final pass", title="time per pass")
    bx.legend(fontsize=8)
    bx.grid(axis="y", alpha=0.3)
    png = out / "asr-latest.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    p = arg_parser("asr", __doc__)
    p.add_argument(
        "--engines",
        default="faster-whisper,moonshine",
        help="ASR engines, comma-separated, each with settings if wanted "
        "(faster-whisper:beam_size=5)",
    )
    p.add_argument("--voices", default=",".join(VOICES), help="voices, comma-separated")
    p.add_argument("--no-browser", action="store_true", help="skip the two browser conditions")
    args = p.parse_args(argv)
    voices = [v for v in args.voices.split(",") if v]
    run = BenchRun.begin("asr", say)
    say(f"[setup] {len(SENTENCES)} sentences x {len(voices)} voices; load {load_text()}")
    recordings = [record_voice(v, i) for i, v in enumerate(voices)]
    timelines = {"clean": [r.clean for r in recordings], "noise": [r.noisy for r in recordings]}
    if not args.no_browser:
        say("[setup] playing the recordings through Chromium's audio processing")
        timelines["browser"] = through_browser(recordings, noisy=False)
        timelines["browser+noise"] = through_browser(recordings, noisy=True)
    clips = {
        cond: [
            {"voice": rec.voice, "text": text, "audio": cut(pcm, span)}
            for rec, pcm in zip(recordings, pcms, strict=False)
            for text, span in zip(SENTENCES, rec.spans, strict=False)
        ]
        for cond, pcms in timelines.items()
    }
    sounds = non_speech()
    results = {}
    for name in [e for e in args.engines.split(",") if e]:
        try:
            results[name] = run_engine(name, clips, sounds)
        except ImportError as exc:
            say(f"[{name}] skipped: {exc}")
    if not results:
        say("no engine ran")
        return 1
    record = run.record(
        args,
        False,
        results=results,
        voices={r.voice: r.noise_kind for r in recordings},
        snr_db=SNR_DB,
    )
    say("")
    say(run.headline("ASR accuracy", extra=f", {len(SENTENCES) * len(voices)} utterances"))
    say(table(results))
    for path in report.write_json(record, args.out, run.stamp, name="asr"):
        say(f"wrote {shown(path)}")
    png = draw(results, run.plot_title("Speech recognition: word error rate"), args.out)
    say(f"wrote {shown(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
