"""End-of-turn judgement, offline: what `semantic` turn detection decides at the first pause of
a complete question and of a question cut where a person stops to think, without the services.

For every text of bench/turns_material.py (COMPLETE, and PAUSED cut as the turns benchmark cuts
them) in every voice, the audio up to the pause (plus the 96 ms of silence after which the
gateway judges) goes through what the gateway's judgement gets: the ASR engine's final pass as
the asr service runs it (its settings, `guard.clean`), Smart Turn's score of the sound, and
`turn_cues.end_window` at the eagerness. A fragment judged complete is cut off by any pause
longer than the `complete` wait; a complete question judged unsure or incomplete waits longer.
Runs in about a minute; the figures match section 1-2 of `bench/run.sh turns` only as far as
its live passes match these (same audio, same engines). Table, JSON, PNG in bench/results/.

    bench/run.sh turn-judge                       # every text, voices of the turns benchmark
    bench/run.sh turn-judge --voices kokoro:am_michael --eagerness high
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from services.asr import guard
from services.asr.main import build_engine
from services.asr.settings import AsrSettings
from services.common.messages import Eagerness
from services.gateway import smart_turn
from services.gateway.turn_cues import SEMANTIC_WAITS, end_window

from .asr_audio import RATE
from .report import save_figure
from .runner import Benchmark, arg_parser, say
from .turns import VOICES
from .turns_material import COMPLETE, PAUSED, Material

JUDGED_AT_MS = 96  # the gateway's speculative pause: where the judgement starts
LEAD_MS = 200  # preroll before the speech, as the gateway's utterance holds it


def parse_args(argv: list[str] | None) -> Any:
    p = arg_parser("turn_judge", __doc__)
    p.add_argument("--voices", default=VOICES, help=f"who speaks ({VOICES})")
    p.add_argument("--eagerness", default="auto", choices=get_args(Eagerness))
    args = p.parse_args(argv)
    args.voices = args.voices.split(",")
    return args


@dataclass
class Judgement:
    voice: str
    kind: str  # complete | fragment
    said: str  # what the audio holds
    heard: str  # the ASR's text
    p_audio: float | None
    judged: str
    cue: str | None


def _utterance(pcm: np.ndarray) -> np.ndarray:
    lead = np.zeros(RATE * LEAD_MS // 1000, dtype=np.int16)
    tail = np.zeros(RATE * JUDGED_AT_MS // 1000, dtype=np.int16)
    return np.concatenate([lead, pcm.astype(np.int16), tail])


def measure(args: Any, out: list[Judgement]) -> None:
    engine = build_engine(AsrSettings())
    model = smart_turn.shared_model()
    waits = SEMANTIC_WAITS[args.eagerness]
    material = Material(args.voices)
    for voice in args.voices:
        cases: list[tuple[str, str, np.ndarray]] = []
        for text in COMPLETE:
            cases.append(("complete", text, material.clip(voice, text).pcm))
        for item in range(len(PAUSED)):
            p = material.paused(voice, item)
            cut = int(round(p.cut_s * RATE))
            cases.append(("fragment", p.said, p.clip.pcm[:cut]))
        for kind, said, pcm in cases:
            audio = _utterance(pcm)
            heard = guard.clean(engine.transcribe(audio.astype(np.float32) / 32768.0))
            p_audio = model.score(audio.tobytes()) if model is not None else None
            verdict = end_window(waits, p_audio, heard or None)
            out.append(Judgement(voice, kind, said, heard, p_audio, verdict.judged, verdict.cue))
            mark = "" if (verdict.judged == "complete") == (kind == "complete") else "  <-- "
            score = "-" if p_audio is None else f"{p_audio:.2f}"
            say(f"{voice:18} {kind:8} {verdict.judged:10} {score:>5} {heard!r}{mark}")


def summary(rows: list[Judgement]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for group in ["all", *sorted({r.voice for r in rows})]:
        mine = [r for r in rows if group in ("all", r.voice)]
        complete = [r for r in mine if r.kind == "complete"]
        fragments = [r for r in mine if r.kind == "fragment"]
        out[group] = {
            "complete_n": len(complete),
            "complete_not_complete": sum(r.judged != "complete" for r in complete),
            "fragments_n": len(fragments),
            "fragments_complete": sum(r.judged == "complete" for r in fragments),
        }
    return out


def table(stats: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| voices | fragments judged complete (cut off) | complete judged unsure/incomplete |",
        "|---|---|---|",
    ]
    for group, s in stats.items():
        rows.append(
            f"| {group} | {s['fragments_complete']} of {s['fragments_n']} "
            f"({100 * s['fragments_complete'] / max(1, s['fragments_n']):.0f} %) | "
            f"{s['complete_not_complete']} of {s['complete_n']} "
            f"({100 * s['complete_not_complete'] / max(1, s['complete_n']):.0f} %) |"
        )
    return "\n".join(rows)


def draw(rows: list[Judgement], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    colours = {"complete": "tab:green", "unsure": "tab:orange", "incomplete": "tab:red"}
    for y, kind in enumerate(("complete", "fragment")):
        for r in rows:
            if r.kind == kind and r.p_audio is not None:
                jitter = (hash(r.said + r.voice) % 100) / 250 - 0.2
                ax.scatter(r.p_audio, y + jitter, s=14, color=colours[r.judged])
    ax.set_yticks([0, 1], ["complete questions", "fragments (cut to think)"])
    ax.set_xlabel("Smart Turn P(finished); colour: the verdict with the text")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c) for c in colours.values()]
    ax.legend(handles, list(colours), fontsize=7, loc="center left")
    return save_figure(fig, ax, title, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Judgement] = []
    with Benchmark("turn_judge", args, logs=None) as bench:
        with bench.measuring():
            measure(args, rows)
        if not rows:
            return bench.rc or 1
        stats = summary(rows)
        record = bench.record(
            eagerness=args.eagerness, summary=stats, judgements=[asdict(r) for r in rows]
        )
        say("")
        say(bench.headline(f"End-of-turn judgement (eagerness {args.eagerness})"))
        say(table(stats))
        bench.publish(record)
        bench.plot(
            lambda title: draw(rows, title, args.out / "turn_judge-latest.png"),
            "End-of-turn judgement at the first pause",
        )
    return bench.rc


if __name__ == "__main__":
    raise SystemExit(main())
