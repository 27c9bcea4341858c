"""Voice latency over real WebRTC, end to end, on the embedded defaults (Whisper tiny.en,
SmolLM2 through llama.cpp, Piper).

    scripts/netns-run .venv/bin/python -m bench.voice_latency --turns 20 --barge-ins 10
    bench/run.sh --turns 20            # the same, through netns-run

Starts its own nats-server, redis-server and the five services (logs in
bench/results/logs/<stamp>/), registers two agents, and measures with harness/voice_client's
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
The turns themselves: bench/voice_run.py.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm import fetch
from services.llm.models import DEFAULT_PROFILE

from . import report, timeline
from .asr import engine_settings
from .nats_tap import read as read_tap
from .runner import Benchmark, arg_parser, say, webrtc_note
from .scenarios import PLAIN, STORYTELLER
from .voice_run import Run, measure


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


def write_results(
    run: Run, bench: Benchmark, cpu_used: dict[str, float], setup: Setup
) -> dict[str, Any]:
    args = run.args
    stats = report.summary(run.turns)
    record = bench.record(
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
    say(bench.headline(f"voice latency, LLM {setup.profile}, ASR {setup.asr_engine}"))
    say(report.table(stats))
    if run.timelines:
        say("\nvoice turns on the bus (--tap):")
        say(timeline.table(run.timelines))
    name = setup.name
    bench.publish(record, name)

    def plot_latency(title: str) -> Path:
        from .plot import draw

        return draw(run.turns, stats, title, args.out / f"{name}-latest.png")

    if bench.plot(plot_latency, "voice latency over WebRTC") and run.timelines:
        bench.plot(
            lambda title: timeline.draw(
                run.timelines, title, args.out / "voice_timeline-latest.png"
            ),
            "voice turns on the bus, step by step (--tap)",
        )
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
    webrtc_note("bench/run.sh")
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
    stats: dict[str, Any] = {}
    with Benchmark("voice_latency", args) as bench:
        bench.run.machine["llm_profile"] = setup.profile
        bench.run.machine["asr_engine"] = setup.asr_engine
        asr_env = {f"VA_{k.upper()}": v for k, v in engine_settings(setup.asr_engine).items()}
        stack = bench.local_stack(env={"llm": {"VA_MODEL": setup.profile}, "asr": asr_env})
        run = Run(args, stack.cpu_split)
        cpu_used: dict[str, float] = {}
        tap_file = bench.work / "tap.jsonl"
        tapped = False
        with bench.measuring():
            stack.start()
            if args.tap:
                tap = bench.helper("tap", ["bench.nats_tap", stack.nats_url, str(tap_file)])
                tap.wait_ready(30)
                tapped = True
            cpu_before = stack.cpu_seconds()

            def cpu_since_start() -> None:
                """CPU seconds each service used after start-up (model loading not counted)."""
                now = stack.cpu_seconds()
                cpu_used.update({k: round(v - cpu_before.get(k, 0.0), 1) for k, v in now.items()})

            bench.on_cleanup(cpu_since_start)
            bench.run_async(measure(run, stack.base_url))
        if tapped and tap_file.exists():
            rows, _ = read_tap(tap_file)
            run.timelines = timeline.timelines(rows, run.turns["voice"])
        if any(run.turns.values()):
            stats = write_results(run, bench, cpu_used, setup)
    return bench.rc, stats


if __name__ == "__main__":
    sys.exit(main())
