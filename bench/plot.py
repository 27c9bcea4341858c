"""The distributions of a voice latency run as one PNG: a strip plot per metric (every sample,
with p50 and p95 marked) and a stacked bar of the stage breakdown of each voice turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from .report import METRICS, STAGES, values  # noqa: E402

STAGE_COLORS = {
    "end_of_turn_ms": "#9e9e9e",
    "after_eot_ms": "#dd8452",
    "transport_ms": "#8172b3",
}
GROUP_COLORS = {"voice": "#4c72b0", "barge_in": "#c44e52", "text": "#55a868"}


def draw(
    turns: dict[str, list[dict[str, Any]]], stats: dict[str, dict[str, Any]], title: str, path: Path
) -> Path:
    cols = 3
    rows = -(-len(METRICS) // cols)
    fig = plt.figure(figsize=(15, 2.3 * rows + 4.5), constrained_layout=True)
    grid = fig.add_gridspec(rows + 2, cols)
    rng = np.random.default_rng(0)
    for i, m in enumerate(METRICS):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        data = values(turns.get(m.group, []), m.key)
        s = stats[m.key]
        ax.set_title(f"{m.key}  (n={s['n']})", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=8)
        if not data:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            continue
        y = rng.uniform(0.0, 0.5, len(data))
        ax.scatter(data, y, s=18, alpha=0.7, color=GROUP_COLORS[m.group], edgecolors="none")
        ax.boxplot(
            data,
            vert=False,
            positions=[-0.3],
            widths=0.3,
            whis=(0, 100),
            manage_ticks=False,
            medianprops={"color": "black"},
        )
        ax.axvline(s["p50"], color="black", lw=1.2, label=f"p50 {s['p50']:.0f}")
        ax.axvline(s["p95"], color="black", lw=1.0, ls="--", label=f"p95 {s['p95']:.0f}")
        if min(data) < 0:
            ax.axvline(0, color="red", lw=0.8)
        ax.set_ylim(-0.6, 0.9)
        # From zero (or the lowest sample) so that panels read as absolute times, not spreads.
        ax.set_xlim(min(0.0, min(data)) * 1.1, max(max(data), 1.0) * 1.08)
        ax.set_xlabel("ms", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", ncol=2, frameon=False)

    ax = fig.add_subplot(grid[rows:, :])
    voice = turns.get("voice", [])
    x = np.arange(len(voice))
    pos_bottom = np.zeros(len(voice))
    neg_bottom = np.zeros(len(voice))
    for stage in STAGES:
        h = np.array([float(t.get(stage) or 0.0) for t in voice])
        bottom = np.where(h >= 0, pos_bottom, neg_bottom)
        ax.bar(x, h, bottom=bottom, color=STAGE_COLORS[stage], label=stage, width=0.8)
        pos_bottom += np.where(h >= 0, h, 0)
        neg_bottom += np.where(h < 0, h, 0)
    v2v = [t.get("voice_to_voice_ms") for t in voice]
    ax.scatter(
        x,
        [v if v is not None else np.nan for v in v2v],
        marker="_",
        s=300,
        color="black",
        zorder=3,
        label="voice_to_voice_ms",
    )
    ax.axhline(0, color="black", lw=0.6)
    # How much of the machine other programs took during each turn: the usual cause of outliers
    # on a shared machine.
    others = [
        (t["cpu_others_s"] / t["wall_s"]) if t.get("wall_s") and "cpu_others_s" in t else np.nan
        for t in voice
    ]
    if voice and not np.all(np.isnan(others)):
        ax2 = ax.twinx()
        ax2.plot(
            x,
            others,
            "D",
            color="black",
            ms=4,
            alpha=0.6,
            label="other programs' CPU during the turn (cores, right axis)",
        )
        ax2.set_ylim(0, max(float(np.nanmax(others)), 1.0) * 1.5)
        ax2.set_ylabel("cores used by other programs", fontsize=8)
        ax2.legend(fontsize=8, loc="upper right", frameon=False)
    ax.set_xticks(x, [str(t.get("turn")) for t in voice], fontsize=8)
    ax.set_xlabel(
        "voice turn: end-of-turn silence + what the server path adds after it + transport"
        " = voice to voice (ASR, LLM and TTS start speculatively inside the silence).",
        fontsize=8,
    )
    ax.set_ylabel("ms")
    ax.set_title(
        "stage breakdown per voice turn (stacked; black bar: measured voice to voice)", fontsize=10
    )
    ax.legend(fontsize=8, ncol=7, loc="upper left", frameon=False)
    top = max([v for v in v2v if v is not None] + [float(pos_bottom.max()) if len(x) else 1])
    ax.set_ylim(min(0.0, float(neg_bottom.min()) if len(x) else 0.0) * 1.1, top * 1.18)

    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
