"""The soak benchmark as one PNG: each service's resident memory over the run, per part, with the
warm-up and the 10 % band it must stay in; voice to voice of every turn over the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from .scale_plot import COLORS  # noqa: E402  (one colour per process in every plot)


def draw(parts: list[dict[str, Any]], warmup_min: float, title: str, path: Path) -> Path:
    fig, axes = plt.subplots(
        len(parts), 2, figsize=(18, 5.2 * len(parts)), squeeze=False, constrained_layout=True
    )
    for row, p in zip(axes, parts, strict=True):
        ax = row[0]
        for kind, points in p["rss_series"].items():
            if not points:
                continue
            t = [x / 60.0 for x, _ in points]
            ax.plot(
                t,
                [v for _, v in points],
                color=COLORS.get(kind),
                lw=1.2,
                label=f"{kind} ({p['rss_growth'][kind]['growth_pct']:+.1f} %)",
            )
            base = p["rss_growth"][kind]["after_warmup_mib"]
            if base:
                ax.fill_between(
                    [warmup_min, p["minutes"]],
                    base,
                    base * 1.1,
                    color=COLORS.get(kind),
                    alpha=0.08,
                    lw=0,
                )
        ax.axvline(warmup_min, color="k", lw=0.8, ls=":", label="end of warm-up")
        ax.set(
            title=f"{p['part']} engines: resident memory per service "
            f"(band: +10 % over the first minute after warm-up)",
            xlabel="minutes",
            ylabel="MiB",
            xlim=(0, p["minutes"] + 0.5),
        )
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)

        ax = row[1]
        pts = p["voice_to_voice_points"]
        ax.scatter([x / 60.0 for x, _ in pts], [v for _, v in pts], s=6, alpha=0.6, color="#4c72b0")
        ax.set(
            title=f"{p['part']} engines: voice to voice per turn ({p['turns']} turns, "
            f"{p['sessions_at_once']} users, {p['sessions_created']} sessions, "
            f"{p['errors']['count']} errors)",
            xlabel="minutes",
            ylabel="ms",
            xlim=(0, p["minutes"] + 0.5),
        )
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
