"""Voice latency: the measured turns of one run (`Run.series`: warm-up, measured, skipped and
failed turns, the CPU other programs took during each) and the three series `measure` runs:
spoken questions, barge-ins, typed questions. One turn timed, filed and checked: bench/turn_log.py
(shared with bench/peer_pipecat.py)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .runner import say
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
from .turn_log import TurnLog, fmt, timed_turn


class Run(TurnLog):
    """The measured turns of one benchmark run, and what looked wrong in them."""

    def __init__(
        self, args: argparse.Namespace, cpu_split: Callable[[], tuple[float, float]]
    ) -> None:
        super().__init__()
        self.args = args
        self.cpu_split = cpu_split
        self.turns: dict[str, list[dict[str, Any]]] = {"voice": [], "barge_in": [], "text": []}
        self.sessions_opened: dict[str, int] = {}
        self.timelines: list[dict[str, float]] = []  # --tap: bench/timeline.py

    def cpu(self) -> dict[str, float]:
        """The meter timed_turn reads: the whole machine's and this benchmark's CPU seconds."""
        busy, ours = self.cpu_split()
        return {"busy": busy, "ours": ours}

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
                i = attempt - warmup if not warm else attempt
                rec, took = await timed_turn(sessions, self.cpu, turn, i)
                attempt += 1
                rec.update(
                    turn=f"w{attempt}" if warm else measured + 1,
                    session=sessions.opened,
                    wall_s=took.wall_s,
                    load1=took.load1,
                    # CPU seconds used during the turn by the benchmark (client, services, NATS,
                    # Redis) and by everything else on the machine: other programs' share of the
                    # cores is what makes a figure an outlier on a shared machine.
                    cpu_ours_s=round(took.cpu_s["ours"], 1),
                    cpu_others_s=round(max(0.0, took.cpu_s["busy"] - took.cpu_s["ours"]), 1),
                )
                if "not_measured" in rec:
                    label = "skipped"
                    rec["turn"] = f"skipped{attempt - warmup}"
                elif not warm:
                    measured += 1
                self.add(group, rec, warm=warm, measured=self.turns[group], where=group)
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
            self.sessions_opened[group] = self.sessions_opened.get(group, 0) + sessions.opened
            await sessions.close()


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
