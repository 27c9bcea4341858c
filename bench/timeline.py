"""Where a voice turn's time goes, read off the bus: each step's message as the raw-socket tap
(bench/nats_tap.py) saw it, in ms after the client sent the question's last audible frame.

`bench/run.sh voice --tap` records the bus during the run; for every measured voice turn this
finds, by turn and reply id, the first message of each step:

    peek        gateway -> ASR: `Va-Ctl: peek`, the speculative final pass starts
    asr_text    ASR -> gateway: the pass's text (the reply to the peek)
    submit      gateway -> session: `va.session.turn` (speculative)
    llm_claim   session -> LLM: `va.llm.claim`
    tts_claim   session -> TTS: `va.tts.claim` (both claims leave together)
    llm_first   LLM -> session: the first `va.llm.out` delta
    tts_in      session -> TTS: the first clause on `va.tts.in`
    tts_audio   TTS -> gateway: the first audio chunk on `va.tts.out.{sid}.audio`
    confirm     gateway -> session: `turn.confirmed` (the end-of-turn silence is over)
    received    the client: the first audible reply frame (from the benchmark, not the bus)

The gaps between them are what the stage figures of `turn.metrics` leave out: bus hops, queueing
behind other work on two cores, the session's Redis reads.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from services.common import subjects
from services.common.messages import H_CTL, H_REPLY, AsrControl, AudioChunkHeader
from services.common.subjects import Kind

STEPS = (
    "peek",
    "asr_text",
    "submit",
    "llm_claim",
    "tts_claim",
    "llm_first",
    "tts_in",
    "tts_audio",
    "confirm",
    "received",
)


def _payload(row: list[Any]) -> dict[str, Any]:
    text = row[4]
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def turn_steps(rows: list[list[Any]], turn: dict[str, Any]) -> dict[str, float]:
    """Wall times (s) of each step of one voice turn; steps not seen are left out."""
    tid, rid, t0 = turn.get("turn_id"), turn.get("reply_id"), turn.get("t_end_wall")
    if not tid or t0 is None:
        return {}
    out: dict[str, float] = {}
    sid = ""
    # The final pass's peek: the last one by a second after the end of speech (a pause inside
    # the question may have started a speculative turn of its own, retracted when speech went on)
    peek: tuple[float, str] | None = None
    for row in rows:
        t, at = row[0], subjects.parse(row[1])
        if t0 - 30.0 <= t <= t0 + 1.0 and at and at.kind is Kind.ASR_UTTERANCE and at.id == tid:
            sid = at.session_id or ""
            if (row[3] or {}).get(H_CTL) == AsrControl.PEEK:
                peek = (t, row[2])
    if peek is not None:
        out["peek"] = peek[0]
    peek_inbox = peek[1] if peek else ""
    stream = ""
    lo, hi = peek[0] if peek else t0, t0 + 30.0
    for row in rows:
        t, subject, headers = row[0], row[1], row[3] or {}
        if t < lo or t > hi:
            continue
        if peek_inbox and subject == peek_inbox and "asr_text" not in out:
            out["asr_text"] = t
            continue
        if row[4] is None and not (rid and headers.get(H_REPLY) == rid):
            continue
        body = _payload(row)
        at = subjects.parse(subject)
        kind, session, ident = (at.kind, at.session_id, at.id) if at else (None, None, None)
        key = None
        if kind is Kind.SESSION_TURN and body.get("turn_id") == tid:
            key = "submit"
        elif kind is Kind.LLM_CLAIM and body.get("reply_id") == rid:
            key = "llm_claim"
            # the LLM's output subject carries the claim's stream id, not the reply id
            stream = body.get("stream_id") or rid
        elif stream and kind is Kind.LLM_OUT and (session, ident) == (sid, stream):
            key = "llm_first"
        elif kind is Kind.TTS_CLAIM and body.get("reply_id") == rid:
            key = "tts_claim"
        elif rid and kind is Kind.TTS_IN and ident == rid:
            key = "tts_in"
        elif kind is Kind.TTS_OUT and AudioChunkHeader.is_audio(headers):
            key = "tts_audio" if headers.get(H_REPLY) == rid else None
        elif kind is Kind.PLAYBACK and body.get("turn_id") == tid:
            key = "confirm" if body.get("type") == "turn.confirmed" else None
        if key and key not in out:
            out[key] = t
    if turn.get("t_received_wall") is not None:
        out["received"] = turn["t_received_wall"]
    return out


def timelines(rows: list[list[Any]], turns: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per turn: each step in ms after the client's last audible question frame."""
    out = []
    for turn in turns:
        steps = turn_steps(rows, turn)
        t0 = turn.get("t_end_wall")
        if t0 is None:
            continue
        out.append({k: round((v - t0) * 1000.0, 1) for k, v in steps.items()})
    return out


def table(per_turn: list[dict[str, float]]) -> str:
    """Median, p10 and p90 of each step, and the median gap from the step before."""
    lines = [
        "| step (ms after the last audible question frame) | n | p10 | p50 | p90 | gap p50 |",
        "|---|---|---|---|---|---|",
    ]
    prev: str | None = None
    for step in STEPS:
        values = sorted(t[step] for t in per_turn if step in t)
        if not values:
            continue
        gaps = [t[step] - t[prev] for t in per_turn if prev and step in t and prev in t]
        gap = f"{statistics.median(gaps):.0f}" if gaps else "-"
        q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
        lines.append(
            f"| {step} | {len(values)} | {q[0]:.0f} | {statistics.median(values):.0f} | "
            f"{q[-1]:.0f} | {gap} |"
        )
        prev = step
    return "\n".join(lines)


def draw(per_turn: list[dict[str, float]], title: str, path: Any) -> Any:
    """Every turn's time of every step (a dot each, p50 marked), steps top to bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [s for s in STEPS if any(s in t for t in per_turn)]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(steps) + 1.6), constrained_layout=True)
    rng = np.random.default_rng(0)
    for row, step in enumerate(steps):
        xs = np.array([t[step] for t in per_turn if step in t])
        y = len(steps) - 1 - row
        ax.scatter(xs, y + rng.uniform(-0.18, 0.18, xs.size), s=10, alpha=0.6, color="#4c72b0")
        p50 = float(np.median(xs))
        ax.plot([p50, p50], [y - 0.3, y + 0.3], color="#c44e52", lw=2)
        ax.text(p50, y + 0.32, f"{p50:.0f}", fontsize=7, ha="center", color="#c44e52")
    ax.set_yticks(range(len(steps)), list(reversed(steps)), fontsize=8)
    ax.set_xlabel("ms after the last audible question frame was sent (red: p50)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
