"""Voice latency over real WebRTC, end to end, on the embedded defaults (Whisper tiny.en,
SmolLM2 through llama.cpp, Piper).

    scripts/netns-run .venv/bin/python -m bench.voice_latency --turns 20 --barge-ins 10
    bench/run.sh --turns 20            # the same, through netns-run

Starts its own nats-server, redis-server and the five services (logs in
bench/results/logs/<stamp>/), registers two agents, and measures with tests/voice_client's
aiortc client:

1. voice to voice: last audible frame of the spoken question sent -> first audible reply frame
   received, with the server's stage breakdown from `turn.metrics` and the transport remainder;
2. barge-in: first audible frame of a spoken interruption sent (the reply audibly playing) ->
   last audible reply frame received, i.e. the reply audio stopping;
3. text: `user.text` sent -> first `reply.delta`, and -> first audible reply frame.

The stage figures are the services' own. ASR, LLM and TTS start speculatively 96 ms into the
end-of-turn silence, so they overlap it: the path decomposes as end_of_turn_ms + `after_eot_ms`
(end of turn -> first audio frame sent: what the silence did not hide) + `transport_ms` = voice
to voice, and the stage durations are listed beside it. `transport_ms` is voice to voice
minus first_audio_ms: the two jitter buffers, Opus, pacing, and where the gateway's VAD puts the
end of speech. Each barge-in runs in a fresh session (a story cut short in the history makes the
next story short); one whose reply ends before the interruption is skipped and replaced.

Warm-up turns (--warmup) run first and are kept out of the statistics. Every turn waits for
reply.done and agent.state listening, then --pause seconds. Output: a table on stdout,
bench/results/voice_latency-<stamp>.json and -latest.json, and bench/results/
voice_latency-latest.png. Every process started is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.audio import word_overlap
from harness.local_stack import LocalStack
from harness.paths import shown
from services.llm import fetch
from services.llm.models import DEFAULT_PROFILE

from . import report, timeline
from .asr import engine_settings
from .helper import Helper
from .machine import BenchRun
from .nats_tap import read as read_tap
from .runner import arg_parser, say
from .scenarios import (
    BARGE_DELAYS,
    INTERRUPTIONS,
    PLAIN,
    QUESTIONS,
    STORY_PROMPTS,
    STORYTELLER,
    Sessions,
    barge_in_turn,
    clip,
    register_agent,
    text_turn,
    voice_turn,
)
from .signals import cancel_on_signals, signals_ignored, stopped_on_signals

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("voice_latency", __doc__)
    p.add_argument("--turns", type=int, default=20, help="spoken questions measured (20)")
    p.add_argument("--barge-ins", type=int, default=10, help="barge-ins measured (10)")
    p.add_argument(
        "--text-turns", type=int, default=None, help="typed questions measured (default: --turns)"
    )
    p.add_argument(
        "--turns-per-session",
        type=int,
        default=5,
        help="voice and text turns before a fresh session, to keep the history short "
        "(5); every barge-in gets a session of its own",
    )
    p.add_argument("--warmup", type=int, default=1, help="unmeasured turns of each kind first (1)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between turns (0.5)")
    p.add_argument(
        "--profiles",
        default=DEFAULT_PROFILE,
        help=f"LLM model profiles, measured one after another in this run and compared in a "
        f"last table (default {DEFAULT_PROFILE}; e.g. smollm2-135m,{DEFAULT_PROFILE})",
    )
    p.add_argument(
        "--asr-engines",
        default="faster-whisper",
        help="ASR engines (services/asr), measured one after another with each profile and "
        "compared in the last table (default faster-whisper; e.g. faster-whisper,moonshine or "
        "faster-whisper,faster-whisper:beam_size=5)",
    )
    p.add_argument(
        "--tap",
        action="store_true",
        help="record the bus with a raw-socket tap and print where each voice turn's time goes "
        "(bench/timeline.py)",
    )
    args = p.parse_args(argv)
    if args.text_turns is None:
        args.text_turns = args.turns
    return args


class Run:
    """The measured turns of one benchmark run, and what looked wrong in them."""

    def __init__(
        self, args: argparse.Namespace, cpu_split: Callable[[], tuple[float, float]]
    ) -> None:
        self.args = args
        self.cpu_split = cpu_split
        self.turns: dict[str, list[dict[str, Any]]] = {"voice": [], "barge_in": [], "text": []}
        self.warmup: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.anomalies: list[str] = []
        self.sessions_opened: dict[str, int] = {}
        self.timelines: list[dict[str, float]] = []  # --tap: bench/timeline.py

    async def series(
        self,
        group: str,
        count: int,
        sessions: Sessions,
        turn: Callable[[Any, int], Awaitable[dict[str, Any]]],
        line: Callable[[dict[str, Any]], str],
        warmup: int = 0,
        spare: int = 0,
    ) -> None:
        """`warmup` unmeasured turns, then turns until `count` are measured. A turn that comes
        back `not_measured` (the situation did not arise) is reported and replaced, up to `spare`
        times; a failed turn (timeout) is reported, kept as a failure and not replaced."""
        try:
            measured = attempt = 0
            while measured < count and attempt < warmup + count + spare:
                warm = attempt < warmup
                label = "warm-up" if warm else f"{measured + 1:>2}/{count}"
                client = await sessions.next()
                t0 = time.monotonic()
                cpu0 = self.cpu_split()
                try:
                    rec = await turn(client, attempt - warmup if not warm else attempt)
                except (TimeoutError, RuntimeError, OSError) as exc:
                    rec = {"error": f"{type(exc).__name__}: {exc}"}
                    await sessions.discard()
                attempt += 1
                cpu1 = self.cpu_split()
                rec.update(
                    turn=f"w{attempt}" if warm else measured + 1,
                    session=sessions.opened,
                    wall_s=round(time.monotonic() - t0, 1),
                    load1=round(os.getloadavg()[0], 2),
                    # CPU seconds used during the turn by the benchmark (client, services, NATS,
                    # Redis) and by everything else on the machine: other programs' share of the
                    # cores is what makes a figure an outlier on a shared machine.
                    cpu_ours_s=round(cpu1[1] - cpu0[1], 1),
                    cpu_others_s=round(max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])), 1),
                )
                if "not_measured" in rec:
                    label = "skipped"
                    rec["turn"] = f"skipped{attempt - warmup}"
                elif not warm:
                    measured += 1
                for problem in check(group, rec):
                    self.anomalies.append(f"{group} turn {rec['turn']}: {problem}")
                    say(f"  ! {problem}")
                if warm:
                    self.warmup.append(rec | {"group": group})
                elif "not_measured" in rec:
                    self.skipped.append(rec | {"group": group})
                else:
                    self.turns[group].append(rec)
                shown_line = rec.get("not_measured") or (
                    line(rec) if "error" not in rec else "FAILED " + rec["error"]
                )
                say(
                    f"{group:<8} {label}  {shown_line}  [load {rec['load1']:.2f}, cpu-s "
                    f"ours {rec['cpu_ours_s']:.1f} others {rec['cpu_others_s']:.1f} in "
                    f"{rec['wall_s']:.1f} s]"
                )
                await asyncio.sleep(self.args.pause)
            if measured < count:
                self.anomalies.append(f"{group}: only {measured} of {count} turns measured")
        finally:  # on Ctrl-C too: close the peer connections before the loop ends
            self.sessions_opened[group] = sessions.opened
            await sessions.close()


def check(group: str, rec: dict[str, Any]) -> list[str]:
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
        if rec["voice_to_voice_ms"] is None:
            out.append("no audible reply audio received")
        if rec["interrupted"]:
            out.append("the reply was marked interrupted")
        if word_overlap(rec["question"], rec["transcript"]) < 0.8:
            out.append(f"ASR heard {rec['transcript']!r} for {rec['question']!r}")
    elif group == "barge_in":
        if not rec["interrupted"]:
            out.append("the reply was not interrupted by the barge-in")
        if not rec["audible_at_barge_in"]:
            out.append("the reply was not audible when the interruption started")
        if rec["barge_in_stop_ms"] is None:
            out.append("no audible reply frame after the barge-in (stop time not measured)")
    elif group == "text" and rec["text_first_audio_ms"] is None:
        out.append("no audible reply audio received")
    return out


def fmt(v: Any) -> str:
    return f"{v:.0f}" if isinstance(v, int | float) else "-"


def voice_line(r: dict[str, Any]) -> str:
    return (
        f"v2v {fmt(r['voice_to_voice_ms'])} ms = eot {fmt(r['end_of_turn_ms'])} + after "
        f"{fmt(r['after_eot_ms'])} + transport {fmt(r['transport_ms'])} (asr "
        f"{fmt(r['asr_ms'])}, wait {fmt(r['asr_wait_ms'])}, llm {fmt(r['llm_first_token_ms'])}, "
        f"tts {fmt(r['tts_first_audio_ms'])})  | {r['transcript']!r} -> {r['reply'][:60]!r}"
    )


def barge_line(r: dict[str, Any]) -> str:
    return (
        f"stop {fmt(r['barge_in_stop_ms'])} ms, reply.done {fmt(r['barge_in_reply_done_ms'])}"
        f" ms (after {r['delay_s']} s of reply, interrupted={r['interrupted']})  "
        f"| {r['interruption']!r} heard as {r.get('interruption_transcript', '')!r}"
    )


def text_line(r: dict[str, Any]) -> str:
    return (
        f"first delta {fmt(r['text_first_delta_ms'])} ms, first audio "
        f"{fmt(r['text_first_audio_ms'])} ms (llm {fmt(r['llm_first_token_ms'])}, tts "
        f"{fmt(r['tts_first_audio_ms'])})  | {r['question']!r} -> {r['reply'][:60]!r}"
    )


async def measure(run: Run, base_url: str) -> None:
    args = run.args
    say("[setup] synthesizing the spoken clips with Piper (cached in tests/artifacts/)")
    questions = [clip(q) for q in QUESTIONS]
    stories = [clip(s) for s in STORY_PROMPTS]
    stops = [clip(s) for s in INTERRUPTIONS]
    plain = await register_agent(base_url, PLAIN)
    teller = await register_agent(base_url, STORYTELLER)
    say(f"[setup] agents: plain {plain}, storyteller {teller}")
    per = args.turns_per_session

    await run.series(
        "voice",
        args.turns,
        Sessions(base_url, plain, per),
        lambda c, i: voice_turn(c, questions[i % len(questions)]),
        voice_line,
        warmup=args.warmup,
    )
    # One session per barge-in: with cut stories in its history SmolLM2 imitates them and
    # answers the next story prompt with one short sentence, over before the barge-in.
    await run.series(
        "barge_in",
        args.barge_ins,
        Sessions(base_url, teller, 1),
        lambda c, i: barge_in_turn(
            c, stories[i % len(stories)], stops[i % len(stops)], BARGE_DELAYS[i % len(BARGE_DELAYS)]
        ),
        barge_line,
        spare=args.barge_ins,
    )
    await run.series(
        "text",
        args.text_turns,
        Sessions(base_url, plain, per),
        lambda c, i: text_turn(c, QUESTIONS[i % len(QUESTIONS)]),
        text_line,
        warmup=args.warmup,
    )


def write_results(
    run: Run,
    stack: LocalStack,
    bench_run: BenchRun,
    cpu_used: dict[str, float],
    interrupted: bool,
    setup: Setup,
) -> dict[str, Any]:
    args = run.args
    stats = report.summary(run.turns)
    record = bench_run.record(
        args,
        interrupted,
        stack.log_dir,
        agents={"plain": PLAIN, "storyteller": STORYTELLER},
        sessions_opened=run.sessions_opened,
        service_cpu_s=cpu_used,
        summary=stats,
        anomalies=run.anomalies,
        turns=run.turns,
        warmup=run.warmup,
        skipped=run.skipped,
        timelines=run.timelines,
    )
    say("")
    say(
        bench_run.headline(
            f"voice latency, LLM {setup.profile}, ASR {setup.asr_engine}", interrupted
        )
    )
    say(report.table(stats))
    if run.timelines:
        say("\nvoice turns on the bus (--tap):")
        say(timeline.table(run.timelines))
    name = setup.name
    for path in report.write_json(record, args.out, bench_run.stamp, name=name):
        say(f"wrote {shown(path)}")
    try:
        from .plot import draw

        title = bench_run.plot_title("voice latency over WebRTC")
        png = draw(run.turns, stats, title, args.out / f"{name}-latest.png")
        say(f"wrote {shown(png)}")
        if run.timelines:
            title = bench_run.plot_title("voice turns on the bus, step by step (--tap)")
            png = timeline.draw(run.timelines, title, args.out / "voice_timeline-latest.png")
            say(f"wrote {shown(png)}")
    except ImportError as exc:
        say(f"no plot ({exc}): pip install -e '.[bench]'")
    if run.anomalies:
        say(f"\n{len(run.anomalies)} anomalies (all of them in the JSON):")
        for a in condensed(run.anomalies):
            say(f"  - {a}")
    return stats


def condensed(anomalies: list[str]) -> list[str]:
    """The same problem in many turns as one line: "<group> turns 1, 2, 5: <problem>", with
    the figures of the problem ("(-263 ms)") dropped when they differ."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for a in anomalies:
        where, _, problem = a.partition(": ")
        group, _, turn = where.partition(" turn ")
        key = (group, re.sub(r"\(-?[\d.]+ ms\)", "(… ms)", problem))
        groups.setdefault(key, []).append((turn, problem))
    out = []
    for (group, problem), hits in groups.items():
        if len(hits) == 1:
            turn, text = hits[0]
            out.append(f"{group} turn {turn}: {text}" if turn else f"{group}: {text}")
        else:
            turns = ", ".join(t for t, _ in hits)
            out.append(f"{group} turns {turns} ({len(hits)}): {problem}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("VA_NETNS") != "1":
        say("note: not inside scripts/netns-run; WebRTC may not connect (use bench/run.sh)")
    profiles = args.profiles.split(",")
    engines = args.asr_engines.split(",")
    for profile in profiles:
        fetch.fetch(profile)
    rc, compared = 0, {}
    for profile in profiles:
        for engine in engines:
            setup = Setup(profile, engine)
            if len(profiles) * len(engines) > 1:
                say(f"\n=== {setup.label(len(profiles) > 1, len(engines) > 1)} ===")
            rc, stats = run_profile(args, setup)
            if stats:
                compared[setup.label(len(profiles) > 1, len(engines) > 1)] = stats
            if rc:
                return rc
    if len(compared) > 1:
        say("\nside by side (p50 / p95 ms):")
        say(report.side_by_side(compared))
    return rc


@dataclass(frozen=True)
class Setup:
    """What one run measures: the llm service's model profile and the asr service's engine."""

    profile: str
    asr_engine: str = "faster-whisper"

    def label(self, profiles_vary: bool = True, engines_vary: bool = False) -> str:
        """Its name in a side-by-side table: what differs between the runs."""
        if not engines_vary:
            return self.profile
        return f"{self.profile} + {self.asr_engine}" if profiles_vary else self.asr_engine

    @property
    def name(self) -> str:
        """The results' file name: voice_latency for the defaults."""
        parts = [p for p in (self.profile, self.asr_engine) if p not in DEFAULTS]
        return re.sub(r"[^\w.-]+", "_", "-".join(["voice_latency", *parts]))


DEFAULTS = (DEFAULT_PROFILE, "faster-whisper")


def run_profile(args: argparse.Namespace, setup: Setup) -> tuple[int, dict[str, Any]]:
    """One full run (stack, measured turns, results) with the services set up as `setup`."""
    bench_run = BenchRun.begin("voice_latency", say)
    bench_run.machine["llm_profile"] = setup.profile
    bench_run.machine["asr_engine"] = setup.asr_engine
    rc = 0
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="va-bench-") as tmp, stopped_on_signals():
        stack = LocalStack(
            Path(tmp),
            args.out / "logs" / bench_run.stamp,
            say,
            env={
                "llm": {"VA_MODEL": setup.profile},
                "asr": {f"VA_{k.upper()}": v for k, v in engine_settings(setup.asr_engine).items()},
            },
        )
        run = Run(args, stack.cpu_split)
        interrupted = False
        cpu_before: dict[str, float] = {}
        cpu_used: dict[str, float] = {}
        tap: Helper | None = None
        tap_file = Path(tmp) / "tap.jsonl"
        try:
            stack.start()
            if args.tap:
                tap = Helper("tap", ["bench.nats_tap", stack.nats_url, str(tap_file)], say)
                tap.wait_ready(30)
            cpu_before = stack.cpu_seconds()
            stopped_by = asyncio.run(cancel_on_signals(measure(run, stack.base_url)))
            if stopped_by is not None:
                raise KeyboardInterrupt(stopped_by)
        except KeyboardInterrupt as exc:
            interrupted, rc = True, 130
            say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping everything")
        except Exception as exc:
            interrupted, rc = True, 1
            say(f"\nbenchmark failed: {type(exc).__name__}: {exc}")
        finally:
            with signals_ignored():
                # CPU seconds each service used after start-up (model loading not counted)
                cpu_used = {
                    k: round(v - cpu_before.get(k, 0.0), 1) for k, v in stack.cpu_seconds().items()
                }
                if tap is not None:
                    tap.stop()
                stack.stop()
        if tap is not None and tap_file.exists():
            rows, _ = read_tap(tap_file)
            run.timelines = timeline.timelines(rows, run.turns["voice"])
        if any(run.turns.values()):
            stats = write_results(run, stack, bench_run, cpu_used, interrupted, setup)
    return rc, stats


if __name__ == "__main__":
    sys.exit(main())
