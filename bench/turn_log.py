"""One measured turn of a voice benchmark, as bench/voice_run.py and bench/peer_pipecat.py both
take it: `timed_turn` runs it on a session's client and times it (wall clock, load, CPU seconds),
`TurnLog` files its record (warm-up, skipped or measured) and notes what `check` finds wrong."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from harness.audio import word_overlap

from .runner import say
from .scenarios import Sessions

Record = dict[str, Any]


@dataclass(frozen=True)
class Took:
    """What a turn took: wall-clock seconds, the 1-minute load average at its end, and the CPU
    seconds used during it, one figure per reading of the meter."""

    wall_s: float
    load1: float
    cpu_s: dict[str, float]


async def timed_turn(
    sessions: Sessions,
    cpu: Callable[[], dict[str, float]],
    turn: Callable[..., Awaitable[Record]],
    *args: Any,
) -> tuple[Record, Took]:
    """`turn(client, *args)` on the next client of `sessions`, timed, `cpu` read before and
    after. A turn that times out or loses its connection comes back as an `error` record, and
    the next turn gets a fresh session."""
    client = await sessions.next()
    t0, cpu0 = time.monotonic(), cpu()
    try:
        rec = await turn(client, *args)
    except (TimeoutError, RuntimeError, OSError) as exc:
        rec = {"error": f"{type(exc).__name__}: {exc}"}
        await sessions.discard()
    cpu1 = cpu()
    took = Took(
        wall_s=round(time.monotonic() - t0, 1),
        load1=round(os.getloadavg()[0], 2),
        cpu_s={k: cpu1[k] - cpu0[k] for k in cpu0},
    )
    return rec, took


class TurnLog:
    """The turns of a run as its results record them: warm-up and skipped turns (each tagged
    with its group) in run order, measured ones in the caller's lists, and the problems found."""

    def __init__(self) -> None:
        self.warmup: list[Record] = []
        self.skipped: list[Record] = []
        self.anomalies: list[str] = []

    def add(
        self, group: str, rec: Record, *, warm: bool, measured: list[Record], where: str
    ) -> None:
        """File `rec`, its `turn` label set, and report its problems as "<where> turn <turn>:
        <problem>". A turn that comes back `not_measured` (the situation did not arise) is
        skipped; a failed one counts as measured, and as a failure."""
        for problem in self.problems(group, rec):
            self.anomalies.append(f"{where} turn {rec['turn']}: {problem}")
            say(f"  ! {problem}")
        if warm:
            self.warmup.append(rec | {"group": group})
        elif "not_measured" in rec:
            self.skipped.append(rec | {"group": group})
        else:
            measured.append(rec)

    def problems(self, group: str, rec: Record) -> list[str]:
        """What `check` finds wrong with a turn; a benchmark with turns of its own adds to it."""
        return check(group, rec)


def check(group: str, rec: Record) -> list[str]:
    """What a reader of the figures should know about this turn."""
    if "error" in rec:
        return [rec["error"]]
    if "not_measured" in rec:
        return [f"not measured: {rec['not_measured']}"]
    out = []
    for k, v in rec.items():
        if k.endswith("_ms") and isinstance(v, int | float) and v < 0:
            out.append(f"{k} is negative ({v:.0f} ms)")
    if group == "voice":
        if rec.get("voice_to_voice_ms") is None:
            out.append("no audible reply audio received")
        if rec.get("interrupted"):
            out.append("the reply was marked interrupted")
        if word_overlap(rec["question"], rec.get("transcript", "")) < 0.8:
            out.append(f"ASR heard {rec.get('transcript')!r} for {rec['question']!r}")
    elif group == "barge_in":
        if not rec.get("interrupted"):
            out.append("the reply was not interrupted by the barge-in")
        if not rec.get("audible_at_barge_in"):
            out.append("the reply was not audible when the interruption started")
        if rec.get("barge_in_stop_ms") is None:
            out.append("no audible reply frame after the barge-in (stop time not measured)")
    elif group == "text" and rec.get("text_first_audio_ms") is None:
        out.append("no audible reply audio received")
    return out


def fmt(v: Any) -> str:
    """A figure in a turn's progress line: whole milliseconds, or "-" when missing."""
    return f"{v:.0f}" if isinstance(v, int | float) else "-"
