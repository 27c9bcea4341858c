"""This assistant and Pipecat side by side: the same spoken WAVs, the same client, one run.

    bench/setup-pipecat.sh                           # once: Pipecat in bench/.venv-pipecat
    bench/peer.sh                                    # 20 voice turns + 10 barge-ins each, ~11 min
    scripts/netns-run .venv/bin/python -m bench.peer_pipecat --turns 10 --barge-ins 5

Starts both systems inside the network namespace: the assistant (nats-server, redis-server, the
five services; harness/local_stack.py) and the peer (SmolLM2 behind `python -m llama_cpp.server`,
bench/pipecat_bot.py in its own venv; bench/pipecat_stack.py), on the same model files. Then
speaks bench/scenarios.py's questions (Piper WAVs from harness/audio.speak_wav, trimmed to their
audible part) over WebRTC to each, with the same aiortc client code (harness/voice_client's
SpeakerTrack and recorder, two-frame jitter buffer), and measures from the audio alone:

- voice to voice: last audible frame of the question sent -> first audible reply frame received;
- barge-in: first audible frame of a spoken interruption sent, `delay` s into a story reply ->
  last audible frame of that reply received before the reply to the interruption begins (as
  each system reports it: the assistant's agent.state speaking for the new turn, Pipecat's
  BotStartedSpeaking after the interruption's user turn ended).
  `barge_in_gap_rule_ms` is bench/voice_latency's rule (stop at the first 0.5 s silence), kept
  for comparison: it under-reads a reply that pauses between sentences, as Pipecat's do under load.

Turns alternate between the systems in blocks of one session (--turns-per-session turns; every
barge-in has a fresh session), ABBA, so a change in the machine's load falls on both. Warm-up
turns (--warmup, one session each) run first and are kept out of the statistics. Each turn notes
the load and the CPU seconds the system under test, the other system, the benchmark client and
everything else used. Output: a table with p50/p95 and the ratio ours/pipecat,
bench/results/peer-<stamp>.json and peer-latest.json, bench/results/peer-latest.png; logs under
bench/results/logs/peer-<stamp>/. If the Pipecat side cannot start, its command and output go to
bench/peer/pipecat-failure.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.local_stack import LocalStack, cpu_s, machine_busy_s
from harness.paths import REPO, shown

from . import peer_report
from .pipecat_client import PipecatSessions, pipecat_barge_in_turn, pipecat_voice_turn
from .pipecat_stack import PipecatStack
from .runner import Benchmark, arg_parser, say
from .scenarios import (
    BARGE_DELAYS,
    INTERRUPTIONS,
    PLAIN,
    QUESTIONS,
    STORY_PROMPTS,
    STORYTELLER,
    Sessions,
    _ms,
    barge_in_turn,
    clip,
    register_agent,
    voice_turn,
)
from .turn_log import TurnLog, fmt, timed_turn

FAILURE = REPO / "bench" / "peer" / "pipecat-failure.txt"
SYSTEMS = ("ours", "pipecat")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("peer_pipecat", __doc__)
    p.add_argument("--turns", type=int, default=20, help="voice turns measured per system (20)")
    p.add_argument("--barge-ins", type=int, default=10, help="barge-ins per system (10)")
    p.add_argument("--turns-per-session", type=int, default=5, help="voice turns a session (5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured voice turns per system (1)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between turns (0.5)")
    return p.parse_args(argv)


def last_audible_before(client: Any, t0: float, t1: float) -> float | None:
    """Time of the last audible frame received in [t0, t1)."""
    found = None
    for r in client.audio:
        if r.t >= t1:
            break
        if r.t >= t0 and r.audible:
            found = r.t
    return found


async def ours_barge_in(client: Any, story: Any, stop: Any, delay: float) -> dict[str, Any]:
    """scenarios.barge_in_turn, plus the stop time read without the silence-gap rule: the last
    audible frame before the interruption's own reply (its agent.state speaking event, which
    precedes that reply's audio by 30-60 ms)."""
    rec = await barge_in_turn(client, story, stop, delay)
    if "not_measured" in rec:
        return rec
    t_barge = client.speaker.first_audible_sent
    speaking = [
        (t, e.get("turn_id"))
        for t, e in client.events
        if e.get("type") == "agent.state" and e.get("state") == "speaking"
    ]
    story_turn = next((tid for t, tid in reversed(speaking) if t < t_barge), None)
    t_bound = next(
        (t for t, tid in speaking if t > t_barge and tid != story_turn), time.monotonic()
    )
    t_last = last_audible_before(client, t_barge, t_bound)
    rec["barge_in_gap_rule_ms"] = rec.pop("barge_in_stop_ms")
    rec["barge_in_stop_ms"] = _ms(t_last - t_barge) if t_last is not None else None
    return rec


async def pipecat_barge_in(client: Any, story: Any, stop: Any, delay: float) -> dict[str, Any]:
    rec = await pipecat_barge_in_turn(client, story, stop, delay)
    if "not_measured" in rec:
        return rec
    t_barge = client.speaker.first_audible_sent
    t_bound = rec.pop("_t_bound")
    t_last = last_audible_before(client, t_barge, t_bound)
    rec["barge_in_gap_rule_ms"] = rec.pop("barge_in_stop_ms")
    rec["barge_in_stop_ms"] = _ms(t_last - t_barge) if t_last is not None else None
    return rec


class CpuMeter:
    """CPU seconds since boot: the whole machine, each system's processes, the client."""

    def __init__(self, ours: LocalStack, peer: PipecatStack) -> None:
        self.ours, self.peer = ours, peer

    def now(self) -> dict[str, float]:
        return {
            "busy": machine_busy_s(),
            "ours": cpu_s(list(self.ours.pids().values())),
            "pipecat": cpu_s(self.peer.pids()),
            "client": cpu_s([os.getpid()]),
        }


class Bench(TurnLog):
    def __init__(self, args: argparse.Namespace, meter: CpuMeter) -> None:
        super().__init__()
        self.args = args
        self.meter = meter
        self.turns: dict[str, dict[str, list[dict[str, Any]]]] = {
            s: {"voice": [], "barge_in": []} for s in SYSTEMS
        }
        self.sessions_opened = {s: 0 for s in SYSTEMS}
        self.seq = 0  # every turn, in run order

    async def turn(
        self,
        system: str,
        group: str,
        sessions: Any,
        run: Callable[[Any], Awaitable[dict[str, Any]]],
        warm: bool,
    ) -> dict[str, Any]:
        rec, took = await timed_turn(sessions, self.meter.now, run)
        d = took.cpu_s
        other = "pipecat" if system == "ours" else "ours"
        self.seq += 1
        rec.update(
            seq=self.seq,
            system=system,
            session=getattr(sessions, "number", None),
            turn_in_session=sessions.used,
            wall_s=took.wall_s,
            load1=took.load1,
            cpu_system_s=round(d[system], 1),
            cpu_other_system_s=round(d[other], 1),
            cpu_client_s=round(d["client"], 1),
            cpu_others_s=round(max(0.0, d["busy"] - d["ours"] - d["pipecat"] - d["client"]), 1),
        )
        measured = self.turns[system][group]
        if warm:
            rec["turn"] = "warm-up"
        elif "not_measured" in rec:
            rec["turn"] = "skipped"
        else:
            rec["turn"] = len(measured) + 1
        self.add(group, rec, warm=warm, measured=measured, where=f"{system} {group}")
        say(f"{system:<7} {group:<8} {rec['turn']!s:>7}  {line(group, rec)}")
        await asyncio.sleep(self.args.pause)
        return rec


def line(group: str, r: dict[str, Any]) -> str:
    cpu = (
        f"[load {r['load1']:.2f}; cpu-s system {r['cpu_system_s']:.1f}, other system "
        f"{r['cpu_other_system_s']:.1f}, client {r['cpu_client_s']:.1f}, others "
        f"{r['cpu_others_s']:.1f} in {r['wall_s']:.1f} s]"
    )
    if "error" in r:
        return f"FAILED {r['error']} {cpu}"
    if "not_measured" in r:
        return f"skipped: {r['not_measured']} {cpu}"
    if group == "voice":
        return (
            f"v2v {fmt(r.get('voice_to_voice_ms'))} ms  {r.get('transcript', '')!r} -> "
            f"{str(r.get('reply', ''))[:50]!r} {cpu}"
        )
    return (
        f"stop {fmt(r.get('barge_in_stop_ms'))} ms (gap rule {fmt(r.get('barge_in_gap_rule_ms'))}"
        f", after {r['delay_s']} s of reply, interrupted={r.get('interrupted')}) {cpu}"
    )


async def measure(bench: Bench, ours_url: str, peer: PipecatStack) -> None:
    args = bench.args
    say("[setup] synthesizing the spoken clips with Piper (cached in tests/artifacts/)")
    questions = [clip(q) for q in QUESTIONS]
    stories = [clip(s) for s in STORY_PROMPTS]
    stops = [clip(s) for s in INTERRUPTIONS]
    plain = await register_agent(ours_url, PLAIN)
    teller = await register_agent(ours_url, STORYTELLER)
    per = max(1, args.turns_per_session)

    def sessions(system: str, story: bool, n: int) -> Any:
        bench.sessions_opened[system] += 1
        s: Any
        if system == "ours":
            s = Sessions(ours_url, teller if story else plain, n)
        else:
            s = PipecatSessions(peer.base_url, peer.events_dir, STORYTELLER if story else PLAIN, n)
        s.number = bench.sessions_opened[system]  # one session per Sessions here
        return s

    def ask(system: str, i: int) -> Callable[[Any], Awaitable[dict[str, Any]]]:
        q = questions[i % len(questions)]
        return lambda c: (voice_turn if system == "ours" else pipecat_voice_turn)(c, q)

    def order(i: int) -> tuple[str, ...]:
        return SYSTEMS if i % 4 in (0, 3) else SYSTEMS[::-1]  # ABBA

    if args.warmup:
        for system in SYSTEMS:
            s = sessions(system, False, args.warmup)
            try:
                for i in range(args.warmup):
                    await bench.turn(system, "voice", s, ask(system, i), warm=True)
            finally:
                await s.close()
    block = 0
    done = {s: 0 for s in SYSTEMS}
    while any(done[s] < args.turns for s in SYSTEMS):
        for system in order(block):
            n = min(per, args.turns - done[system])
            if n <= 0:
                continue
            s = sessions(system, False, per)
            try:
                for _ in range(n):
                    await bench.turn(system, "voice", s, ask(system, done[system]), warm=False)
                    done[system] += 1
            finally:
                await s.close()
        block += 1

    # Barge-ins: a fresh session each; one whose reply ended before the interruption is
    # replaced (up to as many spares as barge-ins).
    for i in range(args.barge_ins):
        story, stop, delay = stories[i % 5], stops[i % 5], BARGE_DELAYS[i % len(BARGE_DELAYS)]
        for system in order(i):
            fn = ours_barge_in if system == "ours" else pipecat_barge_in
            for _attempt in range(3):
                s = sessions(system, True, 1)
                try:
                    rec = await bench.turn(
                        system,
                        "barge_in",
                        s,
                        partial_turn(fn, story, stop, delay),
                        warm=False,
                    )
                finally:
                    await s.close()
                if "not_measured" not in rec:
                    break


def partial_turn(
    fn: Callable[..., Awaitable[dict[str, Any]]], *args: Any
) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    return lambda client: fn(client, *args)


def write_failure(stage: str, exc: BaseException, peer: PipecatStack) -> Path:
    FAILURE.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        f"bench/peer_pipecat.py: the Pipecat side failed while {stage}",
        f"date: {datetime.now(UTC).astimezone().isoformat(timespec='seconds')}",
        f"error: {type(exc).__name__}: {exc}",
        "",
        "".join(traceback.format_exception(exc)),
    ]
    for log in sorted(peer.log_dir.glob("*.log")):
        parts += [f"==== {shown(log)} (full output) ====", log.read_text(errors="replace")]
    FAILURE.write_text("\n".join(parts) + "\n")
    return FAILURE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with Benchmark("peer_pipecat", args, webrtc="bench/peer.sh", logs="peer-{stamp}") as run:
        ours = run.local_stack("ours")
        peer = PipecatStack(run.log_dir / "pipecat", run.work / "pipecat-events", say)
        run.on_cleanup(peer.stop)
        bench = Bench(args, CpuMeter(ours, peer))
        stage = "starting Pipecat"
        with run.measuring():
            say("[setup] starting Pipecat (llama_cpp.server + bench/pipecat_bot.py)")
            peer.start()
            stage = "starting the assistant"
            say("[setup] starting the assistant (nats, redis, five services)")
            ours.start()
            stage = "measuring"
            run.run_async(measure(bench, ours.base_url, peer))
        if run.error is not None and stage == "starting Pipecat":
            say(f"wrote {shown(write_failure(stage, run.error, peer))}")
        if any(v for s in bench.turns.values() for v in s.values()):
            peer_report.write(bench, run, peer.versions)
    return run.rc


if __name__ == "__main__":
    sys.exit(main())
