"""Turn taking over real WebRTC: `fixed` (500 ms of silence) against `semantic` (auto) end of
turn, side by side in one run, on complete questions, questions with a pause inside, backchannels
and real interruptions over a story, in several voices, and on a speakerphone (the reply's own
echo in the microphone).

    bench/run.sh turns                                  # every section, default counts
    bench/run.sh turns --complete 1 --paused 1 --backchannels 1 --interruptions 1 \\
        --speakerphone 2 --voices piper,kokoro:bm_george  # a smoke test
    bench/run.sh turns --complete 0 --paused 0 --backchannels 0 --interruptions 0 \\
        --voices piper                                  # section 5 alone
    bench/run.sh turns --profiles smollm2-135m,qwen2.5-coder-1.5b

For each LLM profile of --profiles its own stack (nats-server, redis-server, the five services;
logs in bench/results/logs/<stamp>/<profile>/) and six agents: a plain one, a storyteller
(bench/scenarios.py) and a teller of short stories (bench/turns_speakerphone.py), each with
`fixed` and with `semantic` turn detection. The two agents of a kind take turns A, B, B, A, ...,
both saying the same thing in a pair (bench/turns_run.py); every voice of --voices speaks
sections 1-4 (bench/turns_material.py: held-out texts, Piper and Kokoro voices; kokoro:bm_george
is used by no test and is also reported on its own), the first voice section 5. Sections 1-4
have N turns per mode in each voice:

1. complete questions (--complete): voice to voice (last audible question frame sent -> first
   audible reply frame received) and the server's end_of_turn_ms (turn.metrics);
2. paused questions (--paused): a sentence spoken whole, cut at a word boundary between 30 and
   75 % of its words, 0.6-1.5 s of silence inserted. Cut off: a transcript.final came before
   the clip's last audible frame was sent, or the clip made two turns. Cut-off share (target
   for semantic <= 10 %), and voice to voice of the turns not cut off;
3. backchannels (--backchannels): "Yeah.", "Uh-huh.", "Okay." ... said 1.5-3 s into a story's
   audio. Treated as an interruption (reply.done interrupted, or a new transcript.final): share,
   target <= 5 %; resume latency (the backchannel's last audible frame sent -> the first audible
   reply frame received after it), target p50 and p95 <= 400 ms; how soon the reply paused;
4. real interruptions (--interruptions): "Wait, stop.", "No, tell me about dragons instead." ...
   over a story (scenarios.barge_in_turn): detected share (target 100 %), reply audio stopped
   (first audible interruption frame sent -> last audible reply frame received).
5. speakerphone (--speakerphone, N replies per mode in the first voice): a client that cancels
   no echo itself (the gateway's AEC3 does, `echo_cancellation: true`) in a room that plays the
   reply back into its microphone (harness/room.py: 50-300 ms, -6 to -12 dB, RT60 0.2-0.6 s,
   50-200 ppm of clock drift, room noise; Opus both ways; a room per session of
   REPLIES_PER_ROOM replies, the same rooms for both modes). Each reply, a short story, plays
   to its end with nobody speaking: interrupted by its own echo (reply.done interrupted, or a
   voice transcript.final of another turn), target 0; the gateway's account of its pauses
   (reply.done longest_pause_ms): paused > 100 ms, target 0, and the longest pause p50 / p95 /
   max. Then max(2, N / 5) turns per mode of a person speaking over such a reply, the room on
   (scenarios.barge_in_turn): detected share, target 100 %, and reply audio stopped.

A story turn whose reply ends before the listener speaks is skipped and replaced; a failed turn
(timeout) is kept as a failure and left out of the figures; a figure a turn could not give is
None in its record, with the reason beside it and in the anomalies. Output: a table per
profile on stdout, bench/results/turns-<stamp>.json and turns-latest.json, and
bench/results/turns-latest.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.local_stack import LocalStack
from harness.voice_client import VoiceClient
from services.llm import fetch

from .runner import Benchmark, arg_parser, say
from .scenarios import PLAIN, STORYTELLER, Sessions, barge_in_turn, register_agent, voice_turn
from .turn_log import Record
from .turns_material import BACKCHANNELS, INTERRUPTIONS, Material
from .turns_report import draw, summary, table, verdicts
from .turns_run import (
    MODES,
    TurnsRun,
    backchannel_line,
    backchannel_turn,
    complete_line,
    interruption_line,
    paused_line,
    paused_turn,
)
from .turns_speakerphone import (
    SPEAKERPHONE,
    SpeakerphoneSessions,
    echo_line,
    echo_turn,
    talker_line,
    talker_turn,
)
from .voice_latency import condensed

VOICES = "piper,kokoro:af_heart,kokoro:bm_george"
AGENTS = {"plain": PLAIN, "storyteller": STORYTELLER, "speakerphone": SPEAKERPHONE}
REPLIES_PER_ROOM = 2  # speakerphone: replies per session, and so per room


def talkers(replies: int) -> int:
    """Speakerphone: the turns of a person speaking over the echo, per mode."""
    return max(2, replies // 5) if replies > 0 else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("turns", __doc__)
    p.add_argument("--complete", type=int, default=8, help="complete questions (8)")
    p.add_argument("--paused", type=int, default=8, help="questions with a pause inside (8)")
    p.add_argument("--backchannels", type=int, default=8, help="backchannels over a story (8)")
    p.add_argument("--interruptions", type=int, default=6, help="interruptions of a story (6)")
    p.add_argument(
        "--speakerphone",
        type=int,
        default=20,
        help="speakerphone: replies played out with their echo in the microphone, per mode, "
        "in the first voice of --voices (20); and max(2, N / 5) talkers over the echo",
    )
    p.add_argument(
        "--voices",
        default=VOICES,
        help=f"who speaks: piper, kokoro:VOICE (default {VOICES}); the counts above are per "
        "voice and per mode (the speakerphone's: the first voice)",
    )
    p.add_argument(
        "--profiles",
        default="smollm2-135m",
        help="LLM model profiles, one stack each (default smollm2-135m; e.g. "
        "smollm2-135m,qwen2.5-coder-1.5b)",
    )
    p.add_argument(
        "--first-item",
        type=int,
        default=0,
        help="where each list of texts starts (0): a later run can say what an earlier did not",
    )
    p.add_argument("--warmup", type=int, default=1, help="unmeasured questions per mode first (1)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between turns (0.5)")
    p.add_argument(
        "--turns-per-session",
        type=int,
        default=5,
        help="questions before a fresh session (5); every story turn gets a session of its own",
    )
    args = p.parse_args(argv)
    args.voices = args.voices.split(",")
    return args


async def measure(run: TurnsRun, base_url: str, material: Material) -> None:
    """The five sections on one stack, in order."""
    args = run.args
    agents: dict[str, dict[str, str]] = {kind: {} for kind in AGENTS}
    for mode, detection in MODES.items():
        for kind, config in AGENTS.items():
            name = f"{config['name']}-{mode}"
            agents[kind][mode] = await register_agent(
                base_url, {**config, **detection, "name": name}
            )
    say(f"[setup] agents: {agents}")

    def sessions(kind: str, per_session: int) -> Any:
        return lambda voice: {
            m: Sessions(base_url, a, per_session) for m, a in agents[kind].items()
        }

    per = args.turns_per_session
    await run.section(
        "complete",
        args.complete,
        sessions("plain", per),
        lambda c, voice, item: voice_turn(c, material.complete(voice, item)),
        complete_line,
        warmup=args.warmup,
    )
    await run.section(
        "paused",
        args.paused,
        sessions("plain", per),
        lambda c, voice, item: paused_turn(c, material.paused(voice, item)),
        paused_line,
    )
    # A session per story: a story cut short in the history makes the next one short. A story
    # over before the listener speaks is replaced (spare).
    stories = (
        ("backchannel", args.backchannels, backchannel_turn, BACKCHANNELS, backchannel_line),
        ("interruption", args.interruptions, barge_in_turn, INTERRUPTIONS, interruption_line),
    )
    for name, count, over, said, line in stories:

        async def turn(
            c: VoiceClient, voice: str, item: int, over: Any = over, said: Any = said
        ) -> Record:
            return await over(c, *material.over_story(voice, item, said))

        await run.section(name, count, sessions("storyteller", 1), turn, line, spare=count)

    # 5. A speakerphone, in one voice: a room per session, the same rooms for both modes; the
    # talkers' turns a session (and a room) each, as in section 4.
    def phone(part: str, per_session: int) -> Any:
        return lambda voice: {
            m: SpeakerphoneSessions(base_url, a, per_session, part)
            for m, a in agents["speakerphone"].items()
        }

    first = args.voices[:1]
    await run.section(
        "speakerphone",
        args.speakerphone,
        phone("echo", REPLIES_PER_ROOM),
        lambda c, voice, item: echo_turn(c, material.speakerphone(voice, item)),
        echo_line,
        spare=args.speakerphone,
        voices=first,
    )
    await run.section(
        "speakerphone_talker",
        talkers(args.speakerphone),
        phone("talker", 1),
        lambda c, voice, item: talker_turn(c, *material.over_speakerphone(voice, item)),
        talker_line,
        spare=talkers(args.speakerphone),
        voices=first,
    )


def write_results(bench: Benchmark, runs: dict[str, TurnsRun]) -> None:
    args = bench.args
    results: dict[str, dict[str, Any]] = {}
    for profile, run in runs.items():
        stats = summary(run.turns, args.voices)
        results[profile] = {
            "summary": stats,
            "targets": verdicts(stats),
            "sessions_opened": run.sessions_opened,
            "anomalies": run.anomalies,
            "turns": run.turns,
            "warmup": run.warmup,
            "skipped": run.skipped,
        }
    record = bench.record(
        voices=args.voices,
        modes=MODES,
        agents=AGENTS,
        speakerphone_replies_per_room=REPLIES_PER_ROOM,
        profiles=results,
    )
    for profile, run in runs.items():
        say("")
        say(bench.headline(f"turn taking, LLM {profile}", f", voices {', '.join(args.voices)}"))
        say(table(results[profile]["summary"], args.voices))
        if run.anomalies:
            say(f"\n{len(run.anomalies)} anomalies (all of them in the JSON):")
            for a in condensed(run.anomalies):
                say(f"  - {a}")
    bench.publish(record)

    def plot(title: str) -> Path:
        return draw(results, title, args.out / "turns-latest.png")

    bench.plot(plot, "turn taking over WebRTC: fixed against semantic end of turn")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = args.profiles.split(",")
    for profile in profiles:
        fetch.fetch(profile)
    counts = {
        "complete": args.complete + args.warmup,  # the warm-up pairs come first
        "paused": args.paused,
        "backchannels": args.backchannels,
        "interruptions": args.interruptions,
        "speakerphone": max(args.speakerphone, talkers(args.speakerphone)),
    }
    runs: dict[str, TurnsRun] = {}
    with Benchmark("turns", args, webrtc="bench/run.sh turns") as bench:
        bench.run.machine["llm_profiles"] = profiles
        with bench.measuring():
            material = Material(args.voices, args.first_item)
            material.prepare(counts)  # before any service takes the CPU
            for profile in profiles:
                say(f"\n=== {profile} ===")
                (bench.work / profile).mkdir()
                stack = LocalStack(
                    bench.work / profile,
                    bench.log_dir / profile,
                    say,
                    env={"llm": {"VA_MODEL": profile}},
                )
                bench.on_cleanup(stack.stop)
                stack.start()
                runs[profile] = TurnsRun(args, stack.cpu_split)
                bench.run_async(measure(runs[profile], stack.base_url, material))
                stack.stop()
        if any(any(run.turns.values()) for run in runs.values()):
            write_results(bench, runs)
    return bench.rc


if __name__ == "__main__":
    sys.exit(main())
