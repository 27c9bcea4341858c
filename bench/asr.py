"""Speech recognition accuracy: each ASR engine on the same utterances, in four conditions.

    bench/run.sh asr                                   # about 15 minutes
    .venv/bin/python -m bench.asr --engines faster-whisper,moonshine --voices piper,kokoro:af_heart
    .venv/bin/python -m bench.asr --engines faster-whisper,faster-whisper:whisper_model=tiny.en

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
and asr-latest.json, bench/results/asr-latest.png. The recordings and sounds: bench/asr_audio.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.local_stack import load_text
from services.asr.engines.moonshine import MoonshineUnsupported

from . import report
from .asr_audio import (
    RATE,
    SENTENCES,
    SNR_DB,
    cut,
    gateway_utterances,
    non_speech,
    record_voice,
    through_browser,
)
from .runner import Benchmark, arg_parser, say

VOICES = ("piper", "espeak:en-us", "espeak:en-gb+f3", "kokoro:af_heart", "kokoro:bm_george")
CONDITIONS = ("clean", "noise", "browser", "browser+noise")


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
        default="faster-whisper,faster-whisper:whisper_model=tiny.en,moonshine",
        help="ASR engines, comma-separated, each with settings if wanted "
        "(faster-whisper:beam_size=5)",
    )
    p.add_argument("--voices", default=",".join(VOICES), help="voices, comma-separated")
    p.add_argument("--no-browser", action="store_true", help="skip the two browser conditions")
    args = p.parse_args(argv)
    voices = [v for v in args.voices.split(",") if v]
    with Benchmark("asr", args, logs=None) as bench:
        return measure(args, voices, bench)


def measure(args: Any, voices: list[str], bench: Benchmark) -> int:
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
        except (ImportError, MoonshineUnsupported) as exc:
            say(f"[{name}] skipped: {exc}")
    if not results:
        say("no engine ran")
        return 1
    record = bench.record(
        results=results,
        voices={r.voice: r.noise_kind for r in recordings},
        snr_db=SNR_DB,
    )
    say("")
    say(bench.headline("ASR accuracy", f", {len(SENTENCES) * len(voices)} utterances"))
    say(table(results))
    bench.publish(record)
    bench.plot(lambda title: draw(results, title, args.out), "Speech recognition: word error rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
