"""Whisper's encoder window: words and time per pass for each window setting, on the same clips.

    bench/run.sh asr-window                        # about 2 minutes
    .venv/bin/python -m bench.asr_window --windows 30,12,10,6 --pads 3,1 --repeats 3

faster-whisper pads every pass to 30 s; services/asr/engines/faster_whisper.py cuts the encoder
input to the speech plus `pad_s` of padding, at least `min_window_s`. This runs the engine itself
(Whisper tiny.en, int8, the ASR service's settings) over every question, story prompt and
interruption the benchmarks speak, in Piper's voice and in espeak-ng's, plus a long (>10 s)
sentence, and digital silence and noise (which must give no text). For each (min window, pad)
it reports the word error rate against the text spoken, how many clips' words differ from the
full 30 s window's, and the time per pass (median / p95 / max of --repeats passes per clip).

Output: a table on stdout, bench/results/asr_window-<stamp>.json and -latest.json,
bench/results/asr_window-latest.png.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.audio import noise_wav, read_wav, resample, speak_wav
from harness.local_stack import load_text

from . import report
from .asr import wer
from .runner import Benchmark, arg_parser, say
from .scenarios import INTERRUPTIONS, QUESTIONS, STORY_PROMPTS

LONG = (
    "I would like to know what the weather is going to be like tomorrow afternoon in Paris, "
    "and whether I should bring an umbrella and a warm coat when I go out for dinner."
)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_errors(ref: str, hyp: str) -> int:
    """Substitutions, deletions and insertions (jiwer, as bench/asr.py counts them)."""
    counts = wer([ref], [hyp])
    return int(counts["substitutions"] + counts["deletions"] + counts["insertions"])


def clips() -> list[tuple[str, str, np.ndarray]]:
    """(voice, text, float32 audio at 16 kHz); text "" for silence and noise."""
    out = []
    for voice in ("piper", "espeak"):
        for text in (*QUESTIONS, *STORY_PROMPTS, *INTERRUPTIONS, LONG):
            pcm, rate = read_wav(speak_wav(text, engine=voice))
            out.append((voice, text, resample(pcm, rate, 16000).astype(np.float32) / 32768.0))
    pcm, rate = read_wav(noise_wav())
    out.append(("noise", "", resample(pcm, rate, 16000).astype(np.float32) / 32768.0))
    out.append(("silence", "", np.zeros(32000, dtype=np.float32)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = arg_parser("asr_window", __doc__)
    p.add_argument("--windows", type=floats, default=[30.0, 12.0, 10.0, 6.0], help="min windows, s")
    p.add_argument("--pads", type=floats, default=[3.0, 1.0], help="padding after speech, s")
    p.add_argument("--repeats", type=int, default=3, help="passes per clip and setting (3)")
    p.add_argument("--cpu-threads", type=int, default=2, help="as the ASR service (2)")
    p.add_argument("--model", default="tiny.en", help="a model of services/asr/models.py")
    args = p.parse_args(argv)
    with Benchmark("asr_window", args, logs=None) as bench:
        return measure(args, bench)


def measure(args: argparse.Namespace, bench: Benchmark) -> int:
    """Every clip through the --model Whisper at each window setting, --repeats times."""
    from services.asr.engines.faster_whisper import FasterWhisperEngine
    from services.asr.models import model_path

    say(f"[setup] synthesizing clips (cached in tests/artifacts/); load {load_text()}")
    data = clips()
    settings = [(30.0, 3.0)] + [(w, pad) for w in args.windows if w < 30 for pad in args.pads]
    engine = FasterWhisperEngine(
        model_path(args.model), cpu_threads=args.cpu_threads, num_workers=1
    )
    engine.transcribe(data[0][2])  # warm-up
    rows: list[dict[str, Any]] = []
    reference: dict[int, str] = {}
    for window, pad in settings:
        engine.min_window_frames, engine.pad_frames = int(window * 100), int(pad * 100)
        errs = ref_words = differ = 0
        times: list[float] = []
        per_clip = []
        for i, (voice, text, audio) in enumerate(data):
            hyp = ""
            for _ in range(args.repeats):
                t = time.perf_counter()
                hyp = engine.transcribe(audio)
                times.append((time.perf_counter() - t) * 1000.0)
            if window >= 30:
                reference[i] = hyp
            differ += words(hyp) != words(reference[i])
            e = word_errors(text, hyp) if text else len(words(hyp))
            errs += e
            ref_words += len(words(text))
            per_clip.append(
                {
                    "voice": voice,
                    "text": text,
                    "heard": hyp,
                    "word_errors": e,
                    "frames": engine.window_frames(audio.size),
                }
            )
        row = {
            "min_window_s": window,
            "pad_s": pad,
            "wer_pct": round(errs / ref_words * 100.0, 2),
            "word_errors": errs,
            "clips_differing_from_30s": differ,
            "ms": report.percentiles(times, (50, 95)) | {"max": round(max(times), 1)},
            "clips": per_clip,
            "times_ms": [round(x, 1) for x in times],
        }
        rows.append(row)
        say(
            f"window >= {window:g} s, pad {pad:g} s: WER {row['wer_pct']} %, "
            f"{differ} clip(s) differ from 30 s, pass p50 {row['ms']['p50']:.0f} ms"
        )
    head = (
        f"{'window':>7} {'pad':>4} {'WER %':>6} {'errors':>6} {'differ':>6} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'max ms':>7}"
    )
    say("")
    record = bench.record(settings=rows)
    say(bench.headline("asr window", f", {len(data)} clips x {args.repeats}"))
    say(head)
    say("-" * len(head))
    for r in rows:
        say(
            f"{r['min_window_s']:>7g} {r['pad_s']:>4g} {r['wer_pct']:>6} {r['word_errors']:>6} "
            f"{r['clips_differing_from_30s']:>6} {r['ms']['p50']:>7.0f} {r['ms']['p95']:>7.0f} "
            f"{r['ms']['max']:>7.0f}"
        )
    bench.publish(record)
    bench.plot(
        lambda title: draw(rows, title, args.out), "Whisper tiny.en pass time by encoder window"
    )
    return 0


def draw(rows: list[dict[str, Any]], title: str, out: Path) -> Path:
    """Pass times per window setting (box plot), labelled with their word error rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    labels = [f">= {r['min_window_s']:g} s\n+{r['pad_s']:g} s (WER {r['wer_pct']} %)" for r in rows]
    ax.boxplot([r["times_ms"] for r in rows], tick_labels=labels, showfliers=True)
    ax.set_yscale("log")
    ax.set(ylabel="ms per pass (log)", title=title)
    ax.grid(alpha=0.3)
    png = out / "asr_window-latest.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


if __name__ == "__main__":
    sys.exit(main())
