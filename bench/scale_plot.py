"""The scale benchmark as one PNG: reply-frame gap distribution per level, voice to voice
against sessions, CPU and RSS per process against sessions, and the real models' turns/s and
stage latencies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

GAP_TARGET_MS = 60.0
PROCS = ("gateway", "clients", "session", "tts", "asr", "llm", "nats-server", "redis-server")
COLORS = {
    "gateway": "#c44e52",
    "clients": "#8c8c8c",
    "session": "#4c72b0",
    "tts": "#55a868",
    "asr": "#dd8452",
    "llm": "#8172b3",
    "nats-server": "#937860",
    "redis-server": "#da8bc3",
}


def _legend(ax: Any, **kw: Any) -> None:
    """A legend where the panel drew something labelled (a skipped real-model level draws none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _gaps(lv: dict[str, Any], key: str = "gaps") -> np.ndarray:
    g = lv.get(key) or lv["gaps"]
    hist = np.asarray(g["hist_1ms"])
    return np.concatenate([np.repeat(np.arange(hist.size) + 0.5, hist), np.asarray(g["over_hist"])])


def _series(levels: list[dict[str, Any]], get: Any) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for lv in levels:
        v = get(lv)
        if isinstance(v, int | float):
            xs.append(lv["sessions"])
            ys.append(float(v))
    return xs, ys


def draw(fake: list[dict[str, Any]], real: list[dict[str, Any]], title: str, path: Path) -> Path:
    fig, axes = plt.subplots(2, 4, figsize=(25, 10.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis")

    # 1. gap distribution per level: the share of gaps longer than x (log), every gap counted
    ax = axes[0, 0]
    for i, lv in enumerate(fake):
        g = np.sort(_gaps(lv))
        if not g.size:
            continue
        ccdf = 1.0 - np.arange(g.size) / g.size
        color = cmap(i / max(1, len(fake) - 1))
        ax.step(g, ccdf, where="post", color=color,
                label=f"{lv['sessions']} sessions (max {g.max():.0f} ms)")  # fmt: skip
        t = np.sort(_gaps(lv, "track_gaps"))
        if t.size and "track_gaps" in lv:
            ax.step(t, 1.0 - np.arange(t.size) / t.size, where="post", color=color, lw=0.8,
                    ls=":", label=f"  at the recorder (max {t.max():.0f} ms)")  # fmt: skip
    ax.axvline(GAP_TARGET_MS, color="red", lw=1, ls="--", label="target: none over 60 ms")
    ax.axvline(20, color="black", lw=0.6, alpha=0.4)
    ax.set_yscale("log")
    ax.set_xlabel(
        "gap between reply frames at the client (ms; 20 = on time)\nsolid: on the wire (kernel"
        " receive time); dotted: at the client's recorder"
    )
    ax.set_ylabel("share of gaps longer than x")
    ax.set_title("fake engines: reply-frame arrival gaps, per level", fontsize=10)
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.25)

    # 2. the worst gap of each session, per level
    ax = axes[0, 1]
    rng = np.random.default_rng(0)
    for lv in fake:
        ys = [s["max_gap_ms"] for s in lv["per_session"] if s["max_gap_ms"] is not None]
        xs = lv["sessions"] * (1 + rng.uniform(-0.06, 0.06, len(ys)))
        ax.scatter(xs, ys, s=14, alpha=0.6, color="#4c72b0")
    xs, ys = _series(fake, lambda lv: lv["gaps"]["p99"])
    ax.plot(xs, ys, "o-", color="black", ms=3, lw=1, label="p99 of all gaps")
    ax.axhline(GAP_TARGET_MS, color="red", lw=1, ls="--", label="60 ms")
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("ms")
    ax.set_title("fake engines: worst gap of each session (dots), p99 of all gaps", fontsize=10)
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.25)

    # 3. voice to voice against sessions
    ax = axes[0, 2]
    for levels, name, color in (
        (fake, "fake engines", "#4c72b0"),
        (real, "real models", "#c44e52"),
    ):
        for key, ls in (("p50", "-"), ("p95", "--")):
            xs, ys = _series(levels, lambda lv, k=key: lv["voice_to_voice_ms"][k])
            if xs:
                ax.plot(xs, ys, "o" + ls, color=color, ms=4, label=f"{name} {key}")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("ms (log)")
    ax.set_title("voice to voice (fake engines: 500 ms end of turn + transport)", fontsize=10)
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.25, which="both")

    # 4. event-loop lag: the gateway's (/healthz from outside) and the clients' own
    ax = axes[0, 3]
    for levels, name, mark in ((fake, "fake", "o"), (real, "real", "^")):
        for key, ls in (("p50", ":"), ("p99", "-"), ("max", "--")):
            xs, ys = _series(
                levels, lambda lv, k=key: lv.get("machine", {}).get("healthz_ms", {}).get(k)
            )
            if xs:
                ax.plot(
                    xs,
                    ys,
                    mark + ls,
                    color="#c44e52",
                    ms=4,
                    label=f"gateway /healthz {key} ({name})",
                )
        xs, ys = _series(levels, lambda lv: lv["client_loop_lag_ms"]["max"])
        if xs:
            ax.plot(
                xs, ys, mark + "-", color="#8c8c8c", ms=4, label=f"worst client loop lag ({name})"
            )
    ax.axhline(GAP_TARGET_MS, color="red", lw=0.8, ls=":")
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("ms")
    ax.set_title("event-loop lag: gateway (/healthz answer time) and client processes", fontsize=10)
    _legend(ax, fontsize=7)
    ax.grid(alpha=0.25)

    # 5. CPU per process (fake)
    ax = axes[1, 0]
    for name in PROCS:
        xs, ys = _series(fake, lambda lv, n=name: lv.get("machine", {}).get("cpu_pct", {}).get(n))
        if xs and max(ys) >= 1:
            ax.plot(xs, ys, "o-", color=COLORS[name], ms=4, label=name)
    xs, ys = _series(fake, lambda lv: lv.get("idle_machine", {}).get("cpu_pct", {}).get("gateway"))
    if xs:
        ax.plot(xs, ys, "x:", color=COLORS["gateway"], ms=6, label="gateway, sessions silent")
    xs, ys = _series(fake, lambda lv: 100 * lv.get("machine", {}).get("machine_busy_cores", 0))
    ax.plot(xs, ys, "k--", lw=1, label="whole machine")
    xs, ys = _series(fake, lambda lv: 100 * lv.get("machine", {}).get("others_cores", 0))
    ax.plot(xs, ys, "k:", lw=1, label="other programs on the machine")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.axhline(200, color="red", lw=0.8, ls=":", label="2 cores")
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("CPU, % of one core")
    ax.set_title("fake engines: CPU per process (one replica each)", fontsize=10)
    _legend(ax, fontsize=8, ncol=2)
    ax.grid(alpha=0.25)

    # 6. RSS per process (fake)
    ax = axes[1, 1]
    for name in PROCS:
        xs, ys = _series(fake, lambda lv, n=name: lv.get("machine", {}).get("rss_mib", {}).get(n))
        if xs:
            ax.plot(xs, ys, "o-", color=COLORS[name], ms=4, label=name)
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("fake engines: memory per process", fontsize=10)
    _legend(ax, fontsize=8, ncol=2)
    ax.grid(alpha=0.25)

    # 7. real models: CPU per process
    ax = axes[1, 2]
    for name in PROCS:
        xs, ys = _series(real, lambda lv, n=name: lv.get("machine", {}).get("cpu_pct", {}).get(n))
        if xs and max(ys) >= 1:
            ax.plot(xs, ys, "o-", color=COLORS[name], ms=4, label=name)
    xs, ys = _series(real, lambda lv: 100 * lv.get("machine", {}).get("others_cores", 0))
    if xs:
        ax.plot(xs, ys, "k:", lw=1, label="other programs on the machine")
        ax.set_xticks(sorted({lv["sessions"] for lv in real}))
    else:
        ax.text(0.5, 0.5, "real models not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("CPU, % of one core")
    ax.set_title("real models: CPU per process", fontsize=10)
    _legend(ax, fontsize=8, ncol=2)
    ax.grid(alpha=0.25)

    # 8. real models: stage latency and turns/s
    ax = axes[1, 3]
    if real:
        for key, color in (
            ("asr_ms", "#dd8452"),
            ("llm_first_token_ms", "#8172b3"),
            ("tts_first_audio_ms", "#55a868"),
            ("first_audio_ms", "#c44e52"),
        ):
            xs, ys = _series(real, lambda lv, k=key: lv["stages_ms"][k]["p50"])
            if xs:
                ax.plot(xs, ys, "o-", color=color, ms=4, label=f"{key} p50")
        ax.set_yscale("log")
        ax2 = ax.twinx()
        xs, ys = _series(real, lambda lv: lv["turns_per_s"])
        ax2.plot(xs, ys, "s--", color="black", ms=5, label="turns/s (right)")
        ax2.set_ylabel("completed turns per second")
        ax2.set_ylim(0, max([*ys, 0.1]) * 1.4)
        _legend(ax2, fontsize=8, loc="upper right")
        _legend(ax, fontsize=8, loc="upper left")
        ax.set_xticks(sorted({lv["sessions"] for lv in real}))
    else:
        ax.text(0.5, 0.5, "real models not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("concurrent voice sessions")
    ax.set_ylabel("stage latency p50 (ms, log; from turn.metrics)")
    ax.set_title("real models: stage latency and turns/s", fontsize=10)
    ax.grid(alpha=0.25, which="both")

    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
