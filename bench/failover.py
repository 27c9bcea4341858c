"""Failover benchmark: the servers the assistant runs on fail, and the conversation goes on.

Three nats-servers clustered on loopback (as the production overlay runs three), every service
given all three URLs; Redis as a primary, a replica and three sentinels, the session service
following the primary they name. Sessions hold a conversation at a steady rate (typed turns, the
next one `--think` s after each reply ends: each turn writes two history entries) while, every
`--between` s, the nats-server the gateway is connected to, the one the session service is
connected to, and the Redis primary are SIGKILLed. Per kill: the outcome of the turns in flight,
how long until a turn is answered again (from the kill to the first reply.done of a turn sent
after it: target <= 5 s for NATS), the longest silence of a session (between two answered turns
across the kill) and how many turns failed; at the end, every session's history against what it
was answered (writes lost to the asynchronous replication, doubled messages). Table, JSON
(bench/results/failover-*.json) and a timeline plot (failover-latest.png).

    bench/run.sh failover                          # 3 sessions, default model, ~3 minutes
    bench/run.sh failover --sessions 4 --profile smollm2-135m
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.local_stack import LOAD_GATEWAY_ENV, LocalStack
from harness.voice_client import VoiceClient

from .report import save_figure
from .runner import Benchmark, arg_parser, say

QUESTIONS = (
    "What is the capital of Italy?",
    "How many days are in a leap year?",
    "Name a fruit that is yellow.",
    "What do bees make?",
    "Which ocean is the largest?",
    "What colour is grass?",
    "How many legs does a cat have?",
    "What is two plus three?",
)
AGENT = {
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 40},
}
TARGET_ANSWERED_S = 5.0


def parse_args(argv: list[str] | None) -> Any:
    p = arg_parser("failover", __doc__)
    p.add_argument("--sessions", type=int, default=3, help="users talking at once (3)")
    p.add_argument(
        "--turns-per-session", type=int, default=5, help="turns before a new conversation (5)"
    )
    p.add_argument("--think", type=float, default=1.0, help="seconds after a reply (1.0)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the first kill")
    p.add_argument("--between", type=float, default=25.0, help="seconds between the kills")
    p.add_argument("--after", type=float, default=25.0, help="seconds after the last kill")
    p.add_argument("--turn-timeout", type=float, default=20.0, help="a turn not ended by then")
    p.add_argument("--profile", default="", help="LLM profile (the services' default)")
    return p.parse_args(argv)


@dataclass
class Turn:
    session: int
    text: str
    sent_s: float  # since the run's start
    ended_s: float | None = None
    first_delta_s: float | None = None  # the reply's first words
    outcome: str = "pending"  # answered | interrupted | failed | timeout
    reply: str = ""


@dataclass
class Kill:
    victim: str  # the service whose server was killed
    server: int
    at_s: float
    # filled in afterwards
    in_flight: list[str] = field(default_factory=list)
    answering_after_s: float | None = None  # kill -> first words of a turn sent after it
    answered_after_s: float | None = None  # kill -> a turn sent after it answered whole
    longest_silence_s: float | None = None
    failed: int = 0


class Talker(VoiceClient):
    """One conversation of a user: typed turns."""

    def __init__(self, base_url: str, index: int, t0: float) -> None:
        super().__init__(base_url)
        self.index, self.t0 = index, t0
        self.turns: list[Turn] = []

    async def turn(self, text: str, timeout: float) -> None:
        t = time.monotonic()
        turn = Turn(self.index, text, t - self.t0)
        self.turns.append(turn)
        try:
            await self.send({"type": "user.text", "text": text})
            _, final = await self.wait_event("transcript.final", timeout, after=t, text=text)
            at, ev = await self.turn_ended(final["turn_id"], timeout - (time.monotonic() - t))
            delta = next(
                (
                    a
                    for a, e in self.events
                    if e.get("turn_id") == final["turn_id"] and e["type"] == "reply.delta"
                ),
                None,
            )
            turn.first_delta_s = None if delta is None else delta - self.t0
            turn.ended_s = at - self.t0
            if ev["type"] == "reply.done":
                turn.outcome = "interrupted" if ev.get("interrupted") else "answered"
                turn.reply = ev.get("text", "")
            else:
                turn.outcome = "failed"
        except (TimeoutError, OSError) as exc:
            turn.outcome = "timeout"
            say(f"  session {self.index}: {text!r}: {exc}")
        finally:
            if turn.ended_s is None:
                turn.ended_s = time.monotonic() - self.t0
            say(
                f"  s{self.index} {turn.sent_s:6.1f} s  {turn.outcome:11} "
                f"{(turn.ended_s - turn.sent_s) * 1000:6.0f} ms  {text!r}"
            )

    async def history_check(self) -> dict[str, int]:
        """The stored history against the turns answered: lost and doubled messages."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as c:
            r = await c.get(f"/v1/sessions/{self.session_id}/messages", headers=self.auth)
            r.raise_for_status()
            stored = [(m["role"], m["text"]) for m in r.json()]
        want = [
            pair
            for t in self.turns
            if t.outcome == "answered"
            for pair in (("user", t.text), ("assistant", t.reply))
        ]
        lost = 0
        it = iter(stored)
        for pair in want:  # each answered pair, in order, somewhere in the history
            if not any(s == pair for s in it):
                lost += 1
        users_sent = [t.text for t in self.turns]
        doubled = sum(
            max(0, sum(1 for r, x in stored if r == "user" and x == q) - users_sent.count(q))
            for q in set(users_sent)
        )
        return {
            "messages": len(stored),
            "expected_at_least": len(want),
            "lost": lost,
            "doubled": doubled,
        }


async def user(
    index: int, base_url: str, agent: str, t0: float, args: Any, stop: asyncio.Event,
    talkers: list[Talker],
) -> None:  # fmt: skip
    """A user talking until `stop`: a conversation of `--turns-per-session` turns (the next one
    `--think` s after each reply), then a new one, so the prompt stays the same size."""
    n = 0
    while not stop.is_set():
        talker = Talker(base_url, index, t0)
        try:
            await talker.create_session(agent)
            await talker.connect_events()
        except (httpx.HTTPError, OSError) as exc:
            say(f"  user {index}: no new conversation: {exc}")
            await asyncio.sleep(args.think)
            continue
        talkers.append(talker)
        try:
            for _ in range(args.turns_per_session):
                if stop.is_set():
                    break
                await talker.turn(QUESTIONS[(n + 3 * index) % len(QUESTIONS)], args.turn_timeout)
                n += 1
                await asyncio.sleep(args.think)
        finally:
            await talker.close()


def analyse(kills: list[Kill], turns: list[Turn]) -> None:
    """Fill in each kill's figures from the turns around it."""
    for i, kill in enumerate(kills):
        end = kills[i + 1].at_s if i + 1 < len(kills) else float("inf")
        kill.in_flight = [
            t.outcome for t in turns if t.sent_s <= kill.at_s < (t.ended_s or float("inf"))
        ]
        after = [t for t in turns if kill.at_s <= t.sent_s < end and t.outcome == "answered"]
        done = [t.ended_s for t in after if t.ended_s is not None]
        kill.answered_after_s = round(min(done) - kill.at_s, 2) if done else None
        words = [t.first_delta_s for t in after if t.first_delta_s is not None]
        kill.answering_after_s = round(min(words) - kill.at_s, 2) if words else None
        kill.failed = sum(
            1
            for t in turns
            if t.outcome in ("failed", "timeout")
            and t.sent_s < end
            and (t.ended_s or 0) >= kill.at_s
        )
        silences = []
        for s in {t.session for t in turns}:
            mine = [t.ended_s for t in turns if t.session == s and t.outcome == "answered"]
            before = [e for e in mine if e is not None and e <= kill.at_s]
            later = [e for e in mine if e is not None and e > kill.at_s]
            if before and later:
                silences.append(min(later) - max(before))
        kill.longest_silence_s = round(max(silences), 2) if silences else None


def _what(kill: Kill) -> str:
    return "the Redis primary" if kill.victim == "redis" else f"the {kill.victim}'s nats-server"


def table(kills: list[Kill], turns: list[Turn], histories: list[dict[str, int]]) -> str:
    rows = [
        "| | "
        + " | ".join(f"kill {i + 1}: {_what(k)}" for i, k in enumerate(kills))
        + " | target |",
        "|---|" + "---|" * len(kills) + "---|",
    ]

    def row(label: str, cells: list[str], target: str = "") -> None:
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    def s(x: float | None) -> str:
        return "never" if x is None else f"{x:.2f} s"

    row(
        "turns in flight at the kill: how they ended",
        [", ".join(k.in_flight) or "none" for k in kills],
        "reply or turn_failed",
    )
    row(
        "kill -> first words of a turn sent after it",
        [s(k.answering_after_s) for k in kills],
        f"<= {TARGET_ANSWERED_S:.0f} s (NATS)",
    )
    row("kill -> a turn sent after it answered whole", [s(k.answered_after_s) for k in kills])
    row("longest silence of a session across the kill", [s(k.longest_silence_s) for k in kills])
    row("turns failed or timed out", [str(k.failed) for k in kills], "0 beyond those in flight")
    answered = sum(t.outcome == "answered" for t in turns)
    first = kills[0].at_s if kills else float("inf")
    calm = [
        t.first_delta_s - t.sent_s
        for t in turns
        if t.first_delta_s is not None and t.ended_s is not None and t.ended_s < first
    ]
    whole = [t.ended_s - t.sent_s for t in turns if t.ended_s is not None and t.ended_s < first]
    if calm:
        rows.append("")
        rows.append(
            f"before the first kill: turn sent -> first words p50 {np.median(calm):.2f} s, "
            f"-> answered whole p50 {np.median(whole):.2f} s ({len(calm)} turns)"
        )
    lost = sum(h["lost"] for h in histories)
    doubled = sum(h["doubled"] for h in histories)
    rows.append("")
    rows.append(
        f"turns: {len(turns)} sent, {answered} answered; history: {lost} answered turns lost, "
        f"{doubled} user messages doubled, over {len(histories)} sessions"
    )
    return "\n".join(rows)


def draw(kills: list[Kill], turns: list[Turn], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "answered": "tab:green",
        "interrupted": "tab:orange",
        "failed": "tab:red",
        "timeout": "black",
        "pending": "grey",
    }
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.5 * (1 + max(t.session for t in turns))))
    for t in turns:
        end = t.ended_s if t.ended_s is not None else t.sent_s
        ax.barh(
            t.session,
            max(0.05, end - t.sent_s),
            left=t.sent_s,
            height=0.5,
            color=colours[t.outcome],
        )
    for k in kills:
        ax.axvline(k.at_s, color="red", linestyle="--")
        ax.text(k.at_s, -0.8, f" {_what(k)} killed", color="red", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("user")
    ax.set_yticks(sorted({t.session for t in turns}))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), loc="upper right", fontsize=7, ncol=5)
    return save_figure(fig, ax, title, path)


async def measure(
    args: Any,
    stack: LocalStack,
    kills: list[Kill],
    talkers: list[Talker],
    histories: list[dict[str, int]],
) -> None:
    assert stack.cluster is not None
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        r = await c.post("/v1/agents", json=AGENT)
        r.raise_for_status()
        agent = r.json()["agent_id"]
    t0 = time.monotonic()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(user(i, stack.base_url, agent, t0, args, stop, talkers))
        for i in range(args.sessions)
    ]
    try:
        await asyncio.sleep(args.warmup)
        for n, victim in enumerate(("gateway", "session", "redis")):
            if n:
                await asyncio.sleep(args.between)
            if victim == "redis":
                assert stack.sentinels is not None
                primary = stack.sentinels.primary()
                primary.kill()
                kills.append(Kill("redis", 0, round(time.monotonic() - t0, 3)))
                say(f"[kill] redis primary {primary.url} at {kills[-1].at_s:.1f} s")
                continue
            server = stack.cluster.serving(f"{victim}-")
            if server is None:
                raise RuntimeError(f"no live nats-server lists a {victim} connection")
            stack.cluster.kill(server)
            kills.append(Kill(victim, server, round(time.monotonic() - t0, 3)))
            say(f"[kill] nats-server {server} ({victim}'s) at {kills[-1].at_s:.1f} s")
        await asyncio.sleep(args.after)
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=args.turn_timeout + 5)
    for t in talkers:
        histories.append(await t.history_check())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kills: list[Kill] = []
    talkers: list[Talker] = []
    histories: list[dict[str, int]] = []
    env = {"gateway": dict(LOAD_GATEWAY_ENV)}
    if args.profile:
        env["llm"] = {"VA_MODEL": args.profile}
    with Benchmark("failover", args, webrtc="bench/run.sh failover") as bench:
        stack = bench.local_stack(env=env, nats_servers=3, redis_sentinel=True)
        with bench.measuring():
            stack.start()
            bench.run_async(measure(args, stack, kills, talkers, histories))
        turns = [t for talker in talkers for t in talker.turns]
        if not turns:
            return bench.rc or 1
        analyse(kills, turns)
        record = bench.record(
            kills=[asdict(k) for k in kills],
            turns=[asdict(t) for t in turns],
            histories=histories,
            target_answered_s=TARGET_ANSWERED_S,
        )
        say("")
        say(bench.headline("Failover (NATS)"))
        say(table(kills, turns, histories))
        bench.publish(record)
        bench.plot(
            lambda title: draw(kills, turns, title, args.out / "failover-latest.png"),
            "Failover: NATS servers and the Redis primary killed mid-conversation",
        )
    return bench.rc


if __name__ == "__main__":
    raise SystemExit(main())
