"""bench/peer_pipecat.py's PNG: the two systems' distributions side by side (voice to voice,
barge-in), every voice turn in run order with the CPU other programs took meanwhile, and the
median milestones of a voice turn in each system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .report import values  # noqa: E402

COLORS = {"ours": "#4c72b0", "pipecat": "#dd8452"}
NAMES = {"ours": "this assistant", "pipecat": "Pipecat"}
MILESTONES = {
    "ours": (
        ("end_of_turn_ms", "turn ends"),
        ("first_audio_ms", "first audio sent"),
        ("voice_to_voice_ms", "heard"),
    ),
    "pipecat": (
        ("pc_vad_stop_ms", "VAD stop"),
        ("pc_transcript_ms", "transcript"),
        ("pc_turn_end_ms", "turn ends"),
        ("pc_llm_first_text_ms", "LLM text"),
        ("pc_tts_first_audio_ms", "TTS audio"),
        ("pc_bot_started_ms", "sent"),
        ("voice_to_voice_ms", "heard"),
    ),
}


def _distribution(
    ax: Any, turns: dict[str, Any], stats: dict[str, Any], key: str, group: str
) -> None:
    rng = np.random.default_rng(0)
    row = stats[key]
    for y, system in enumerate(("pipecat", "ours")):
        data = values(turns[system][group], key)
        s = row[system]
        if not data:
            ax.text(
                0.5,
                y,
                f"{NAMES[system]}: no samples",
                va="center",
                transform=ax.get_yaxis_transform(),
            )
            continue
        ax.scatter(
            data,
            y + rng.uniform(-0.15, 0.15, len(data)),
            s=22,
            alpha=0.75,
            color=COLORS[system],
            edgecolors="none",
        )
        ax.boxplot(
            data,
            vert=False,
            positions=[y - 0.32],
            widths=0.14,
            whis=(0, 100),
            manage_ticks=False,
            medianprops={"color": "black"},
        )
        for p, ls, dy in (("p50", "-", 0.27), ("p95", "--", 0.42)):
            ax.plot([s[p], s[p]], [y - 0.42, y + dy - 0.02], color="black", ls=ls, lw=1.1)
            ax.annotate(f"{p} {s[p]:.0f}", (s[p], y + dy), fontsize=7, ha="center")
    ax.set_yticks(
        [0, 1],
        [
            f"{NAMES['pipecat']}\n(n={row['pipecat']['n']})",
            f"{NAMES['ours']}\n(n={row['ours']['n']})",
        ],
    )
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlim(left=0)
    ax.set_xlabel("ms")
    r = row.get("ratio_ours_over_pipecat", {})
    ratios = ", ".join(f"{p} {r[p]:.2f}" for p in ("p50", "p95") if r.get(p) is not None)
    ax.set_title(f"{row['label']}\nratio ours/pipecat: {ratios or '-'}", fontsize=9)


def draw(turns: dict[str, Any], stats: dict[str, Any], title: str, path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), constrained_layout=True)
    _distribution(axes[0][0], turns, stats, "voice_to_voice_ms", "voice")
    _distribution(axes[0][1], turns, stats, "barge_in_stop_ms", "barge_in")

    ax = axes[1][0]
    ax2 = ax.twinx()
    for system in ("ours", "pipecat"):
        recs = [r for r in turns[system]["voice"] if r.get("voice_to_voice_ms") is not None]
        ax.plot(
            [r["seq"] for r in recs],
            [r["voice_to_voice_ms"] for r in recs],
            "o",
            color=COLORS[system],
            label=NAMES[system],
        )
        others = [
            (r["seq"], r["cpu_others_s"] / r["wall_s"])
            for r in turns[system]["voice"]
            if r.get("wall_s")
        ]
        if others:
            ax2.plot(*zip(*others, strict=True), "D", ms=3.5, color="grey", alpha=0.6)
    ax2.set_ylabel("cores taken by other programs (grey)", fontsize=8)
    ax2.set_ylim(0, 2.2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("turn in run order (the systems alternate, one session at a time)")
    ax.set_ylabel("voice to voice, ms")
    ax.set_title("every voice turn, with the machine's other load", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1][1]
    for y, system in enumerate(("pipecat", "ours")):
        points = []
        for key, name in MILESTONES[system]:
            p50 = stats.get(key, {}).get(system, {}).get("p50")
            if p50 is not None:
                points.append((p50, name))
        if not points:
            continue
        xs = [x for x, _ in points]
        ax.plot([0, max(xs)], [y, y], color=COLORS[system], lw=6, alpha=0.35, solid_capstyle="butt")
        for i, (x, name) in enumerate(points):
            ax.plot(x, y, "|", color="black", ms=16)
            dy = (0.12, -0.32, 0.34, -0.54)[i % 4]
            ax.annotate(f"{name}\n{x:.0f}", (x, y + dy), fontsize=7, ha="center")
    ax.set_yticks([0, 1], [NAMES["pipecat"], NAMES["ours"]])
    ax.set_ylim(-0.8, 1.7)
    ax.set_xlim(left=0)
    ax.set_xlabel("ms after the last audible frame of the question was sent (p50 of each)")
    ax.set_title(
        "median milestones of a voice turn (ours overlaps ASR and LLM with its silence window)",
        fontsize=9,
    )

    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
