"""The side-by-side summary of bench/peer_pipecat.py: percentiles per system, the ratio
ours/pipecat, the table, the JSON record and the plot.

A ratio below 1 means this assistant is faster. Percentiles are bench/report.summarize's (numpy's
linear interpolation); with 10 samples p95 lies between the 9th and the 10th value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import summarize, values
from .runner import Benchmark, say

# (key, group, label, compared): compared rows get a ratio; the others explain the figures.
ROWS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "voice_to_voice_ms",
        "voice",
        "voice to voice: last audible frame sent -> first reply audio",
        True,
    ),
    (
        "barge_in_stop_ms",
        "barge_in",
        "barge-in: first audible interruption frame -> reply audio stops",
        True,
    ),
    (
        "barge_in_gap_rule_ms",
        "barge_in",
        "  the same, voice_latency's rule (stop at a 0.5 s silence)",
        False,
    ),
    ("first_audio_ms", "voice", "  ours: end of speech -> first audio sent (server)", False),
    ("end_of_turn_ms", "voice", "  ours: end of turn (VAD silence)", False),
    ("asr_ms", "voice", "  ours: final ASR pass", False),
    ("llm_first_token_ms", "voice", "  ours: LLM first token", False),
    ("tts_first_audio_ms", "voice", "  ours: TTS first audio", False),
    ("pc_vad_stop_ms", "voice", "  pipecat: since end of speech: Silero VAD stop", False),
    ("pc_transcript_ms", "voice", "  pipecat:   Whisper transcript", False),
    ("pc_turn_end_ms", "voice", "  pipecat:   end of turn (smart-turn v3)", False),
    ("pc_llm_first_text_ms", "voice", "  pipecat:   LLM first text", False),
    ("pc_tts_first_audio_ms", "voice", "  pipecat:   Piper first audio", False),
    ("pc_bot_started_ms", "voice", "  pipecat:   bot started speaking (sent)", False),
    (
        "barge_in_reply_done_ms",
        "barge_in",
        "  ours: interruption -> reply.done (interrupted)",
        False,
    ),
    ("pc_interruption_ms", "barge_in", "  pipecat: interruption -> InterruptionFrame", False),
    ("pc_bot_stopped_ms", "barge_in", "  pipecat: interruption -> BotStoppedSpeaking", False),
)


def ratio(a: Any, b: Any) -> float | None:
    return (
        round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
    )


def summary(turns: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, group, label, compared in ROWS:
        row: dict[str, Any] = {"label": label.strip(), "group": group, "compared": compared}
        for system in ("ours", "pipecat"):
            row[system] = summarize(values(turns[system][group], key))
        if compared:
            row["ratio_ours_over_pipecat"] = {
                p: ratio(row["ours"][p], row["pipecat"][p]) for p in ("p50", "p95")
            }
        out[key] = row
    out["others_cores"] = others_cores(turns)
    return out


def others_cores(turns: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Mean cores that other programs on the machine took during each system's measured turns
    (CPU seconds not used by either system or the client, over the turns' wall time): on a
    shared machine, the first thing to compare before trusting a ratio."""
    out: dict[str, Any] = {}
    for system in ("ours", "pipecat"):
        for group in ("voice", "barge_in"):
            recs = [r for r in turns[system][group] if r.get("wall_s")]
            wall = sum(r["wall_s"] for r in recs)
            cpu = sum(r["cpu_others_s"] for r in recs)
            out[f"{system}_{group}"] = round(cpu / wall, 2) if wall else None
    # Voice to voice over the quiet turns only (other programs under QUIET cores): fewer
    # samples, less of the neighbours' noise.
    for system in ("ours", "pipecat"):
        quiet = [
            r
            for r in turns[system]["voice"]
            if r.get("wall_s") and r["cpu_others_s"] / r["wall_s"] < QUIET
        ]
        out[f"{system}_quiet_voice_to_voice"] = summarize(values(quiet, "voice_to_voice_ms"))
    return out


QUIET = 0.5  # cores


def table(stats: dict[str, dict[str, Any]]) -> str:
    width = max(len(label) for _, _, label, _ in ROWS)

    def cell(v: Any, w: int = 6) -> str:
        return f"{v:{w}.0f}" if isinstance(v, int | float) else f"{'-':>{w}}"

    def rcell(v: Any) -> str:
        return f"{v:6.2f}" if isinstance(v, int | float) else f"{'':>6}"

    head = (
        f"{'metric (ms)':<{width}}  {'n':>5}  {'ours p50':>8} {'p95':>6}  "
        f"{'pipecat p50':>11} {'p95':>6}  {'ratio p50':>9} {'p95':>6}"
    )
    lines = [head, "-" * len(head)]
    for key, _, label, _ in ROWS:
        s = stats[key]
        o, p = s["ours"], s["pipecat"]
        if not o["n"] and not p["n"]:
            continue
        r = s.get("ratio_ours_over_pipecat", {})
        lines.append(
            f"{label:<{width}}  {o['n']:>2}/{p['n']:<2}  {cell(o['p50'], 8)} {cell(o['p95'])}  "
            f"{cell(p['p50'], 11)} {cell(p['p95'])}  {rcell(r.get('p50')):>9} {rcell(r.get('p95'))}"
        )
    lines.append(
        "n = ours/pipecat samples; ratio = ours / pipecat (below 1: this assistant faster)"
    )
    oc = stats.get("others_cores", {})

    def cores(k: str) -> str:
        return f"{oc[k]:.2f}" if isinstance(oc.get(k), int | float) else "-"

    lines.append(
        f"other programs' CPU during the measured turns (cores, of 2): voice ours "
        f"{cores('ours_voice')} / pipecat {cores('pipecat_voice')}; barge-in ours "
        f"{cores('ours_barge_in')} / pipecat {cores('pipecat_barge_in')}"
    )
    qo, qp = oc.get("ours_quiet_voice_to_voice"), oc.get("pipecat_quiet_voice_to_voice")
    if qo and qp and qo["n"] and qp["n"]:
        lines.append(
            f"voice to voice over the turns when other programs took < {QUIET} core: ours p50 "
            f"{qo['p50']:.0f} (n={qo['n']}), pipecat p50 {qp['p50']:.0f} (n={qp['n']}), "
            f"ratio {ratio(qo['p50'], qp['p50'])}"
        )
    return "\n".join(lines)


def write(bench: Any, run: Benchmark, peer_versions: dict[str, str] | None = None) -> None:
    """The record (peer-<stamp>.json, peer-latest.json), the table and the plot of a run."""
    stats = summary(bench.turns)
    peer = peer_versions or {}
    record = run.record(
        peer=peer,
        summary=stats,
        anomalies=bench.anomalies,
        turns=bench.turns,
        warmup=bench.warmup,
        skipped=bench.skipped,
    )
    say("")
    say(run.headline("ours vs pipecat"))
    say(table(stats))
    run.publish(record, "peer")

    def plot_png(title: str) -> Path:
        from .peer_plot import draw

        return draw(bench.turns, stats, title, run.args.out / "peer-latest.png")

    versus = f"this assistant vs Pipecat {peer.get('pipecat-ai', '')}, same models, WebRTC"
    run.plot(plot_png, versus)
    if bench.anomalies:
        say(f"\n{len(bench.anomalies)} anomalies (all of them in the JSON):")
        for a in bench.anomalies:
            say(f"  - {a}")
