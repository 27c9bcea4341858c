"""Summaries of a benchmark's samples: percentiles, a plain-text table and the JSON record.

Percentiles are numpy's default (linear interpolation between order statistics), so with 20
samples p95 lies between the 19th and the 20th value; n is printed beside every row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metric:
    key: str  # the field in a turn record
    group: str  # "voice", "barge_in" or "text": which list of turn records holds it
    label: str  # what it measures, for the table and the plot


METRICS: tuple[Metric, ...] = (
    Metric(
        "voice_to_voice_ms",
        "voice",
        "voice: last audible question frame sent -> first audible reply frame received",
    ),
    Metric("end_of_turn_ms", "voice", "  end of speech -> end of turn (VAD silence)"),
    Metric("asr_ms", "voice", "  final ASR pass (speculative: starts 96 ms into the silence)"),
    Metric(
        "asr_wait_ms", "voice", "  end of turn -> final text (0: the pass ended in the silence)"
    ),
    Metric("llm_first_token_ms", "voice", "  LLM request -> first token"),
    Metric("tts_first_audio_ms", "voice", "  first clause -> first TTS audio"),
    Metric("after_eot_ms", "voice", "  end of turn -> first audio frame sent (path left after it)"),
    Metric("first_audio_ms", "voice", "  server: end of speech -> first audio frame sent"),
    Metric("transport_ms", "voice", "  transport: voice-to-voice minus server first_audio"),
    Metric(
        "barge_in_stop_ms",
        "barge_in",
        "barge-in: first audible interruption frame sent -> last audible reply frame received",
    ),
    Metric(
        "barge_in_reply_done_ms",
        "barge_in",
        "  first audible interruption frame sent -> reply.done (interrupted) received",
    ),
    Metric("text_first_delta_ms", "text", "text: user.text sent -> first reply.delta received"),
    Metric("text_first_audio_ms", "text", "  user.text sent -> first audible reply frame received"),
)

# The server-side stages of a voice turn, in order, as stacked in the plot; with transport they
# add up to voice_to_voice_ms.
STAGES = (
    "end_of_turn_ms",
    "after_eot_ms",
    "transport_ms",
)


def values(records: Iterable[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            out.append(float(v))
    return out


def summarize(samples: Sequence[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None, "min": None}
    a = np.asarray(samples, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
        "mean": round(float(a.mean()), 1),
        "min": round(float(a.min()), 1),
    }


def summary(turns: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        m.key: {**summarize(values(turns.get(m.group, []), m.key)), "label": m.label.strip()}
        for m in METRICS
    }


def table(stats: dict[str, dict[str, Any]]) -> str:
    width = max(len(m.label) for m in METRICS)
    head = f"{'metric (ms)':<{width}}  {'n':>3}  {'p50':>7}  {'p95':>7}  {'max':>7}  {'mean':>7}"
    lines = [head, "-" * len(head)]

    def cell(v: Any) -> str:
        return f"{v:7.0f}" if isinstance(v, int | float) else f"{'-':>7}"

    for m in METRICS:
        s = stats[m.key]
        lines.append(
            f"{m.label:<{width}}  {s['n']:>3}  {cell(s['p50'])}  {cell(s['p95'])}  "
            f"{cell(s['max'])}  {cell(s['mean'])}"
        )
    return "\n".join(lines)


def side_by_side(by_profile: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per metric, one column per LLM profile: "p50 / p95" of each."""
    names = list(by_profile)
    lines = [f"{'metric':34}" + "".join(f"{n:>22}" for n in names)]
    for m in METRICS:
        cells = []
        for n in names:
            s = by_profile[n].get(m.key) or {}
            ok = s.get("p50") is not None
            cells.append(f"{s['p50']:.0f} / {s['p95']:.0f}" if ok else "-")
        lines.append(f"{m.key:34}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def percentiles(
    samples: Sequence[float], qs: Sequence[float] = (50, 99)
) -> dict[str, float | int | None]:
    """n, the given percentiles (keys "p50", "p99", ...), min, max and mean, rounded to 0.01."""
    keys = [f"p{q:g}" for q in qs]
    if not samples:
        return {"n": 0, **{k: None for k in keys}, "min": None, "max": None, "mean": None}
    a = np.asarray(samples, dtype=np.float64)
    out: dict[str, float | int | None] = {"n": int(a.size)}
    for k, q in zip(keys, qs, strict=True):
        out[k] = round(float(np.percentile(a, q)), 2)
    out.update(
        min=round(float(a.min()), 2), max=round(float(a.max()), 2), mean=round(float(a.mean()), 2)
    )
    return out


def write_json(
    record: dict[str, Any], out_dir: Path, stamp: str, name: str = "voice_latency"
) -> list[Path]:
    """`<name>-<stamp>.json` and `<name>-latest.json` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str) + "\n"
    paths = [out_dir / f"{name}-{stamp}.json", out_dir / f"{name}-latest.json"]
    for p in paths:
        p.write_text(text)
    return paths


def save_figure(fig: Any, ax: Any, title: str, path: Path) -> Path:
    """Title `ax`, lay `fig` out and write it as a PNG at `path` (folders made); the path."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
