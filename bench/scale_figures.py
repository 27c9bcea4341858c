"""Scale: the figures of one level from its client processes' results: reply-frame gaps on the
wire and at the track (`GapTally`), voice to voice, stage latencies, turns per second counted
inside the measured window, client event-loop lag (`summarize_level`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import report

GAP_HIST_BINS = 201  # bench/scale_client.py: 1 ms bins 0-200


def stall_near(stalls: list[tuple[float, float]], t: float, gap_ms: float) -> float:
    """The largest client event-loop stall that ended within the gap ending at `t`."""
    lo = t - gap_ms / 1000.0 - 0.02
    return max((lag for ts, lag in stalls if lo <= ts <= t + 0.02), default=0.0)


class GapTally:
    """One clock's reply-frame gaps over a level's sessions (bench/scale_client.py takes them on
    the wire and at the track): a 1 ms histogram, the large ones, those over the target."""

    def __init__(self, at_client: bool) -> None:
        # Only gaps timed at the client's recorder can be caused by the client's own stalls;
        # the kernel's receive stamps are taken before the client's event loop sees a packet.
        self.at_client = at_client
        self.hist = np.zeros(GAP_HIST_BINS, dtype=np.int64)
        self.over: list[float] = []
        self.big: list[list[dict[str, Any]]] = []  # per session
        self.worst: list[float] = []

    def add(
        self, s: dict[str, Any], prefix: str, stalls: list[tuple[float, float]]
    ) -> float | None:
        """A session's gaps; returns its longest."""
        summary = s.get(f"{prefix}gaps")
        if summary is not None:
            self.hist += np.asarray(summary["hist_1ms"], dtype=np.int64)
            self.over += summary["over_hist"]
        self.big.append(
            [
                {"at": at, "gap_ms": gap}
                | ({"client_stall_ms": stall_near(stalls, at, gap)} if self.at_client else {})
                for t in s["turns"]
                for at, gap in t.get(f"{prefix}big_gaps", [])
            ]
        )
        worst = max((t.get(f"{prefix}max_gap_ms") or 0.0 for t in s["turns"]), default=None)
        if worst is not None:
            self.worst.append(worst)
        return worst

    def figures(self, turns_on_track: int | None = None) -> dict[str, Any]:
        gaps = np.concatenate(
            [np.repeat(np.arange(GAP_HIST_BINS) + 0.5, self.hist), np.asarray(self.over)]
        )

        def pct(q: float) -> float | None:
            return round(float(np.percentile(gaps, q)), 1) if gaps.size else None

        big = [b for per_session in self.big for b in per_session]
        out = {
            "n": int(gaps.size),
            "p50": pct(50),
            "p99": pct(99),
            "p99.9": pct(99.9),
            "max": max(self.worst, default=None),
            "over_target": len(big),
            "sessions_over_target": sum(1 for b in self.big if b),
            "hist_1ms": self.hist.tolist(),
            "over_hist": self.over,
        }
        if self.at_client:
            out["explained_by_client_stall"] = sum(
                1 for b in big if b["client_stall_ms"] >= b["gap_ms"] - 40.0
            )
        if turns_on_track is not None:
            out["turns_timed_at_track"] = turns_on_track  # no kernel stamps: the track's times
        return out


def summarize_level(
    part: str,
    n: int,
    window: tuple[float, float],
    connect_s: float,
    outs: list[dict[str, Any]],
    win: dict[str, Any],
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    start, end = window
    seconds = end - start
    turns: list[dict[str, Any]] = []
    errors: list[str] = []
    sessions: list[dict[str, Any]] = []
    lag_p99, lag_max = [], []
    # the kernel's receive times (what the gateway delivered), and the decoded frames at the
    # recorder (plus the client's own stalls)
    wire, track = GapTally(at_client=False), GapTally(at_client=True)
    for o in outs:
        errors += o.get("connect_errors", [])
        lag = o.get("loop_lag_ms", {})
        if lag.get("p99") is not None:
            lag_p99.append(lag["p99"])
            lag_max.append(lag["max"])
        stalls = [(float(t), float(ms)) for t, ms in lag.get("stalls", [])]
        for s in o["sessions"]:
            errors += s["errors"]
            sessions.append(
                {
                    "session_id": s["session_id"],
                    "connect_s": s["connect_s"],
                    "turns": len(s["turns"]),
                    "errors": len(s["errors"]),
                    "max_gap_ms": wire.add(s, "", stalls),
                    "gaps_over_target": wire.big[-1],
                    "track_max_gap_ms": track.add(s, "track_", stalls),
                    "track_gaps_over_target": track.big[-1],
                }
            )
            turns += s["turns"]
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    metric_keys = (
        "asr_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "first_audio_ms",
        "end_of_turn_ms",
    )
    stages = {
        k: report.percentiles([t["metrics"][k] for t in turns if t["metrics"].get(k) is not None])
        for k in metric_keys
    }
    # Rates count turns by the share of each (question start -> last reply frame) that fell
    # inside the window: the window's CPU seconds are spent on exactly that much work.
    equiv = 0.0
    for t in turns:
        a, b = t.get("t_start"), t.get("reply_last_wall")
        if a is not None and b is not None and b > a:
            equiv += max(0.0, min(b, end) - max(a, start)) / (b - a)
    return {
        "part": part,
        "sessions": n,
        "seconds": round(seconds, 1),
        "connect_s": connect_s,
        "turns": len(turns),
        "turns_in_window": round(equiv, 1),
        "turns_per_s": round(equiv / seconds, 3) if seconds else None,
        "errors": errors,
        "voice_to_voice_ms": report.percentiles(v2v, (50, 95)),
        "stages_ms": stages,
        "gaps": wire.figures(sum(1 for t in turns if t.get("gap_clock") == "track")),
        "track_gaps": track.figures(),
        "silent_frames_inside_replies": sum(t.get("silent_frames_inside", 0) for t in turns),
        "reply_frames": sum(t.get("reply_frames", 0) for t in turns),
        "client_loop_lag_ms": {
            "p99_worst_proc": max(lag_p99) if lag_p99 else None,
            "max": max(lag_max) if lag_max else None,
        },
        "machine": win,
        "gateway_profile": profile,
        "per_session": sessions,
        "turn_records": turns,
    }
