"""Turn taking: the figures of each section per mode, for all voices and for the voices no test
uses (UNSEEN) apart (section 5, in one voice, for that voice alone); the table and the plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import summarize, values
from .turn_log import Record
from .turns_run import MODES, SECTIONS

UNSEEN = ("kokoro:bm_george",)  # voices no test speaks with
MODE_LABELS = {"fixed": "fixed (500 ms)", "semantic": "semantic (auto)"}
ONE_VOICE = ("speakerphone", "speakerphone_talker")  # spoken by the first voice only
# Per section: the shares of turns that went one way (each its key in a record and the
# figure's name), and the latencies reported.
RATES = {
    "paused": (("cut_off", "cut off"),),
    "backchannel": (("treated_as_interruption", "treated as an interruption"),),
    "interruption": (("interrupted", "detected"),),
    "speakerphone": (
        ("interrupted_by_echo", "replies interrupted by their own echo"),
        ("paused_over_100ms", "replies paused > 100 ms"),
    ),
    "speakerphone_talker": (("interrupted", "talker over the echo detected"),),
}
LATENCIES = {
    "complete": ("voice_to_voice_ms", "end_of_turn_ms"),
    "paused": ("voice_to_voice_ms", "end_of_turn_ms"),
    "backchannel": ("resume_ms", "reply_paused_ms", "reply_gap_ms"),
    "interruption": ("barge_in_stop_ms", "barge_in_reply_done_ms"),
    "speakerphone": ("longest_pause_ms", "paused_ms"),
    "speakerphone_talker": ("barge_in_stop_ms", "barge_in_reply_done_ms"),
}
WITH_MAX = ("longest_pause_ms",)  # shown as p50 / p95 / max
LABELS = {
    "voice_to_voice_ms": "voice to voice",
    "end_of_turn_ms": "end of turn (turn.metrics)",
    "resume_ms": "resume: backchannel end -> reply audible",
    "reply_paused_ms": "backchannel onset -> reply paused",
    "reply_gap_ms": "silence heard in the reply",
    "barge_in_stop_ms": "reply audio stopped",
    "barge_in_reply_done_ms": "-> reply.done (interrupted)",
    "longest_pause_ms": "longest pause of a reply",
    "paused_ms": "paused in all, per reply",
}
SHORT = {
    "complete": "1. complete questions",
    "paused": "2. paused questions, not cut off",
    "backchannel": "3. backchannels",
    "interruption": "4. interruptions",
    "speakerphone": "5. speakerphone: its own echo",
    "speakerphone_talker": "5. speakerphone: a talker over it",
}
TITLES = {
    "complete": "1. complete questions",
    "paused": "2. paused questions (voice to voice: those not cut off)",
    "backchannel": "3. backchannels over a story",
    "interruption": "4. real interruptions over a story",
    "speakerphone": "5. speakerphone (its own echo in the microphone): replies played out",
    "speakerphone_talker": "5. speakerphone: a person speaking over the echo",
}


@dataclass(frozen=True)
class Target:
    section: str
    figure: str  # a key of `figures`
    modes: tuple[str, ...]  # the modes it applies to
    goal: str
    met: Callable[[Any], bool]  # on the figure, when measured

    def value(self, f: dict[str, Any]) -> Any:
        v = f.get(self.figure)
        return None if isinstance(v, dict) and not v["n"] else v


TARGETS = (
    Target("paused", "cut_off_pct", ("semantic",), "semantic <= 10 %", lambda v: v <= 10),
    Target("backchannel", "treated_as_interruption_pct", tuple(MODES), "<= 5 %", lambda v: v <= 5),
    Target("backchannel", "resume_ms", tuple(MODES), "<= 400 ms", lambda s: s["p95"] <= 400),
    Target("interruption", "interrupted_pct", tuple(MODES), "100 %", lambda v: v == 100),
    Target("speakerphone", "interrupted_by_echo_pct", tuple(MODES), "0", lambda v: v == 0),
    Target("speakerphone", "paused_over_100ms_pct", tuple(MODES), "0", lambda v: v == 0),
    Target("speakerphone_talker", "interrupted_pct", tuple(MODES), "100 %", lambda v: v == 100),
)


def figures(section: str, recs: list[Record]) -> dict[str, Any]:
    ok = [r for r in recs if "error" not in r]
    out: dict[str, Any] = {"n": len(ok), "failed": len(recs) - len(ok)}
    for key, _ in RATES.get(section, ()):
        hits = sum(1 for r in ok if r.get(key))
        out[key] = hits
        out[f"{key}_pct"] = round(100.0 * hits / len(ok), 1) if ok else None
    for key in LATENCIES[section]:
        out[key] = summarize(values(ok, key))
    return out


def groups(voices: list[str]) -> dict[str, list[str]]:
    """Row groups: all voices, then each unseen voice on its own."""
    out = {"all voices": voices}
    out.update({f"unseen voice {v}": [v] for v in voices if v in UNSEEN})
    return out


def summary(turns: dict[str, list[Record]], voices: list[str]) -> dict[str, Any]:
    """section -> mode -> row group (and each voice) -> figures."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        out[section] = {}
        for mode in MODES:
            recs = [r for r in turns[section] if r.get("mode") == mode]
            by = {g: [r for r in recs if r.get("voice") in vs] for g, vs in groups(voices).items()}
            by.update({v: [r for r in recs if r.get("voice") == v] for v in voices})
            out[section][mode] = {g: figures(section, rs) for g, rs in by.items()}
    return out


def verdicts(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target in each mode it concerns, on all voices: met (true or false), or None when
    not measured."""
    out = []
    for t in TARGETS:
        for mode in t.modes:
            v = t.value(stats[t.section][mode]["all voices"])
            out.append(
                {
                    "section": t.section,
                    "figure": t.figure,
                    "mode": mode,
                    "target": t.goal,
                    "met": None if v is None else t.met(v),
                }
            )
    return out


def _rate(f: dict[str, Any], key: str) -> str:
    return f"{f[key]} of {f['n']} ({f[key + '_pct']:.0f} %)" if f["n"] else "-"


def _ms(f: dict[str, Any], key: str) -> str:
    s = f[key]
    if not s["n"]:
        return "- (n 0)"
    top = f" / {s['max']:.0f}" if key in WITH_MAX else ""
    return f"{s['p50']:.0f} / {s['p95']:.0f}{top} (n {s['n']})"


def table(stats: dict[str, Any], voices: list[str]) -> str:
    width, cell = 46, 24
    goals = {(t.section, t.figure): t.goal for t in TARGETS}
    head = f"{'p50 / p95 ms, or count':<{width}}" + "".join(
        f"{MODE_LABELS[m]:>{cell}}" for m in MODES
    )
    lines = [head + "  target", "-" * (len(head) + 20)]

    def row(label: str, cells: list[str], goal: str = "") -> None:
        lines.append(f"{label:<{width}}" + "".join(f"{c:>{cell}}" for c in cells) + f"  {goal}")

    for section in SECTIONS:
        lines.append(TITLES[section])
        for group in groups(voices[:1] if section in ONE_VOICE else voices):
            indent = "  "
            if group != "all voices":
                lines.append(f"  {group}")
                indent = "    "
            fs = [stats[section][m][group] for m in MODES]
            for key, label in RATES.get(section, ()):
                goal = goals.get((section, f"{key}_pct"), "") if group == "all voices" else ""
                row(indent + label, [_rate(f, key) for f in fs], goal)
            for key in LATENCIES[section]:
                goal = goals.get((section, key), "") if group == "all voices" else ""
                label = LABELS[key] + (", max" if key in WITH_MAX else "")
                row(indent + label, [_ms(f, key) for f in fs], goal)
            if any(f["failed"] for f in fs):
                row(indent + "failed turns (not counted)", [str(f["failed"]) for f in fs])
    lines.append("targets (all voices):")
    for v in verdicts(stats):
        met = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
        lines.append(f"  {v['section']} {v['figure']} {v['target']}, {v['mode']}: {met}")
    return "\n".join(lines)


# Each panel's target line: where the figure on its x axis should stay below.
LIMITS = {"backchannel": 400.0, "speakerphone": 100.0}
COLUMNS = 3  # panels per row; a profile takes as many rows as its sections need


def draw(results: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    """Per LLM profile, one panel per section (COLUMNS to a row): every turn's main latency by
    mode (unseen voices as crosses), p50 marked, the target as a red line; the section's rates
    beside the modes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(results)
    rows = -(-len(SECTIONS) // COLUMNS)
    fig, axes = plt.subplots(
        rows * len(profiles),
        COLUMNS,
        figsize=(6 * COLUMNS, 3.2 * rows * len(profiles) + 1),
        squeeze=False,
    )
    colors = {"fixed": "#4c72b0", "semantic": "#dd8452"}
    for p, profile in enumerate(profiles):
        turns, stats = results[profile]["turns"], results[profile]["summary"]
        panels = axes[p * rows : (p + 1) * rows].reshape(-1)
        for ax in panels[len(SECTIONS) :]:
            ax.set_axis_off()
        for ax, section in zip(panels, SECTIONS, strict=False):
            key = LATENCIES[section][0]
            names = []
            for y, mode in enumerate(MODES):
                recs = [r for r in turns[section] if r.get("mode") == mode]
                for unseen in (False, True):
                    xs = values([r for r in recs if (r.get("voice") in UNSEEN) == unseen], key)
                    ax.scatter(
                        xs,
                        [y] * len(xs),
                        color=colors[mode],
                        marker="x" if unseen else "o",
                        alpha=0.7,
                        s=30,
                    )
                f = stats[section][mode]["all voices"]
                if f[key]["n"]:
                    ax.plot([f[key]["p50"]] * 2, [y - 0.3, y + 0.3], color="black", lw=1.5)
                rates = [f"{label}: {_rate(f, k)}" for k, label in RATES.get(section, ())]
                names.append("\n".join([mode, *rates]))
            ax.set_yticks(range(len(MODES)), names, fontsize=8)
            ax.set_ylim(-0.6, len(MODES) - 0.4)
            ax.set_xlabel(f"{LABELS[key]} (ms)", fontsize=8)
            ax.set_title(f"{profile}: {SHORT[section]}", fontsize=9)
            limit = LIMITS.get(section)
            if limit is not None:
                ax.axvline(limit, color="red", lw=0.8, ls="--")
            top = max(values(turns[section], key) + [1.1 * limit if limit else 1.0])
            ax.set_xlim(0, top * 1.1)
    fig.suptitle(title + "\n(o: seen voices, x: unseen voice; black bar: p50)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
