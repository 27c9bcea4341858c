"""Bus overhead: the printed tables (per hop, against the targets) and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bus_hops import HOPS
from .bus_raw import IDLE_S
from .runner import say

TARGET_P50_MS = 1.0


TARGET_P99_MS = 10.0


def verdict(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no data"
    ok50 = s["p50"] <= TARGET_P50_MS
    ok99 = s["p99"] <= TARGET_P99_MS
    return (
        "ok"
        if ok50 and ok99
        else ("p50 over" if not ok50 else "") + (" p99 over" if not ok99 else "")
    )


def table(rows: list[tuple[str, dict[str, Any], str]], title: str) -> str:
    width = max(len(label) for label, _, _ in rows)
    head = f"{title:<{width}}  {'n':>5}  {'p50':>7}  {'p99':>7}  {'max':>7}  {'mean':>7}  target"
    lines = [head, "-" * len(head)]

    def cell(v: Any) -> str:
        return f"{v:7.2f}" if isinstance(v, int | float) else f"{'-':>7}"

    for label, s, mark in rows:
        lines.append(
            f"{label:<{width}}  {s.get('n', 0):>5}  {cell(s.get('p50'))}  {cell(s.get('p99'))}  "
            f"{cell(s.get('max'))}  {cell(s.get('mean'))}  {mark}"
        )
    return "\n".join(lines)


def print_tables(res: dict[str, Any]) -> None:
    raw = res.get("raw")
    if raw:
        # Each idle row sits under the busy row it repeats: the floor of a hop, no target.
        judged = ("request_reply", "oneway_small", "oneway_audio")
        floor = ("request_reply_idle", "oneway_idle")
        rows = []
        for key in (
            "request_reply",
            "request_reply_idle",
            "oneway_small",
            "oneway_audio",
            "oneway_idle",
            "oneway_small_tap",
            "oneway_audio_tap",
            "oneway_idle_tap",
            "nats_py_vs_tap_small",
            "nats_py_vs_tap_audio",
            "redis_get",
        ):
            mark = verdict(raw[key]) if key in judged else "floor" if key in floor else ""
            rows.append((raw[key]["label"], raw[key], mark))
        say("")
        say(table(rows, "raw NATS on this machine (ms)"))
    say("")
    hops = res["hops"]
    rows = [
        (
            hops[h.key]["label"],
            hops[h.key],
            hops[h.key]["target"]
            + (f"  ({hops[h.key]['same_recv']} in one recv)" if hops[h.key]["same_recv"] else ""),
        )
        for h in HOPS
    ]
    say(table(rows, "per hop of a typed turn, fake engines (ms)"))
    obs = res["observer"]
    say("")
    say(
        table(
            [
                ("tap probe: publish -> tap recv() (raw phase)", obs["tap_probe_raw_ms"], ""),
                ("tap probe: publish -> tap recv() (turns phase)", obs["tap_probe_turns_ms"], ""),
                ("client event-loop lag (10 ms ticker overshoot)", obs["client_loop_lag_ms"], ""),
            ],
            "observer overhead (ms)",
        )
    )


def draw(res: dict[str, Any], raw: dict[str, Any], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series: list[tuple[str, list[float], str]] = []
    colors = {
        "bus": "#4c72b0",
        "rtt": "#55a868",
        "work": "#dd8452",
        "media": "#c44e52",
        "total": "#8172b3",
    }
    if raw.get("request_reply_ms"):
        series.append(
            ("raw NATS request -> reply (no service)", raw["request_reply_ms"], "#937860")
        )
    if raw.get("request_reply_idle_ms"):
        series.append(
            (
                f"raw NATS request -> reply after {IDLE_S * 1000:.0f} ms idle (no service)",
                raw["request_reply_idle_ms"],
                "#937860",
            )
        )
    for h in HOPS:
        series.append((res["hops"][h.key]["label"], res["samples"][h.key], colors[h.kind]))
    fig, ax = plt.subplots(figsize=(14, 0.42 * len(series) + 2.2), constrained_layout=True)
    rng = np.random.default_rng(0)
    for i, (_label, data, color) in enumerate(series):
        y = len(series) - 1 - i
        if data:
            d = np.clip(np.asarray(data), 0.01, None)
            ax.scatter(d, y + rng.uniform(-0.28, 0.28, d.size), s=5, alpha=0.35, color=color)
            p50, p99 = np.percentile(d, 50), np.percentile(d, 99)
            ax.plot([p50, p50], [y - 0.38, y + 0.38], color="black", lw=1.6)
            ax.plot([p99, p99], [y - 0.38, y + 0.38], color="black", lw=1.0, ls="--")
    ax.set_yticks(range(len(series)), [s[0] for s in reversed(series)], fontsize=8)
    ax.set_xscale("log")
    ax.axvline(TARGET_P50_MS, color="green", lw=1, alpha=0.6, label="target p50 1 ms")
    ax.axvline(TARGET_P99_MS, color="red", lw=1, alpha=0.6, label="target p99 10 ms")
    ax.set_xlabel(
        "ms (log; 0 = both messages in one recv() of the tap, drawn at 0.01).  black: p50,"
        " dashed: p99.\nblue: publisher's stamp -> bus, green: request round trip incl. handler,"
        " orange: hop incl. the service's work, red: WebRTC pacing / jitter buffer, purple: totals",
        fontsize=8,
    )
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_profiles(profiles: dict[str, dict[str, Any]]) -> None:
    """The py-spy section (--profile): each service's event-loop thread, busy time per turn."""
    for kind, prof in profiles.items():
        if not prof.get("main_thread_samples"):
            continue
        say("")
        say(
            f"py-spy, {kind} event-loop thread: busy {prof['main_busy_ms_per_turn']} ms per turn"
            f" (500 Hz, running samples only; includes the other turns' idle-time work, e.g."
            f" the gateway's media); inclusive, % of its busy samples:"
        )
        for name, pct in prof["main_top_inclusive_pct"]:
            say(f"  {pct:5.1f}  {name}")
        say(f"  raw stacks: {prof['raw']}")
