"""Turn taking: the measured turns. Two agents of each kind (MODES: `fixed` 500 ms and
`semantic` auto) take turns A, B, B, A, ... (`Interleaved`), so that whatever drifts during a run
(load, a warming cache) hits both alike, and the two turns of a pair say the same thing.

The turns: a complete question is scenarios.voice_turn; a paused one is voice_turn plus what the
pause did (`paused_turn`); a real interruption is scenarios.barge_in_turn; a backchannel is
`backchannel_turn`; on a speakerphone, a reply played out with its echo in the microphone and a
person speaking over it (bench/turns_speakerphone.py). `TurnsRun` runs them through
voice_run.Run.series (warm-up, progress lines, CPU, anomalies) and adds what to check in each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness.voice_client import VoiceClient

from .runner import say
from .scenarios import (
    Clip,
    Sessions,
    _ms,
    reply_done,
    story_playing,
    voice_finals,
    voice_turn,
    wind_down,
)
from .turn_log import Record, check, fmt
from .turns_material import Paused
from .turns_speakerphone import echo_problems
from .voice_run import Run

MODES: dict[str, dict[str, Any]] = {
    "fixed": {"turn_detection": {"type": "fixed"}, "end_of_turn_silence_ms": 500},
    "semantic": {"turn_detection": {"type": "semantic", "eagerness": "auto"}},
}
# The groups of turns: section 5 (a speakerphone) has two, its echo alone and a talker over it.
SECTIONS = (
    "complete",
    "paused",
    "backchannel",
    "interruption",
    "speakerphone",
    "speakerphone_talker",
)
# After a backchannel's last frame: how long to watch for the reply being cut or a new turn
# (the decision waits for the speech's first pause and a Whisper pass), and at most how long to
# wait for the reply to resume at all.
DECIDE_S, RESUME_WAIT_S = 3.0, 10.0
# After a paused question's turn: how long another turn of the same clip may take to show.
SETTLE_S, REST_S = 1.5, 20.0
NOT_PAUSED_MS = 150  # a gap in the reply's audio shorter than this: it did not pause


class Interleaved(Sessions):
    """The sessions of one agent per mode, taking turns A, B, B, A, ...; `item` numbers the
    pair, so both turns of a pair can say the same. A turn that comes back not measured is
    tried again with the same agent and the next item."""

    def __init__(self, by_mode: dict[str, Sessions], voice: str) -> None:
        first = next(iter(by_mode.values()))
        super().__init__(first.base_url, first.agent_id, first.per_session)
        self.by_mode = by_mode
        self.voice = voice
        self.modes = list(by_mode)
        self.position = -1
        self.retries = 0
        self.again = False  # set by TurnsRun.add: the last turn was not measured

    @property
    def mode(self) -> str:
        a, b = self.modes
        return b if self.position % 4 in (1, 2) else a

    @property
    def item(self) -> int:
        return self.position // 2 + self.retries

    def tags(self) -> dict[str, Any]:
        return {"mode": self.mode, "voice": self.voice, "item": self.item}

    async def next(self) -> VoiceClient:
        if self.again:
            self.retries += 1
        else:
            self.position += 1
        self.again = False
        client = await self.by_mode[self.mode].next()
        self.opened = sum(s.opened for s in self.by_mode.values())
        return client

    async def discard(self) -> None:
        await self.by_mode[self.mode].discard()

    async def close(self) -> None:
        for s in self.by_mode.values():
            await s.close()


class TurnsRun(Run):
    """The turns of one stack (one LLM profile): every section, both modes, every voice."""

    def __init__(self, args: argparse.Namespace, cpu_split: Callable[[], tuple[float, float]]):
        super().__init__(args, cpu_split)
        self.turns = {s: [] for s in SECTIONS}
        self.pairs: Interleaved | None = None

    async def section(
        self,
        name: str,
        count: int,
        sessions: Callable[[str], dict[str, Sessions]],
        turn: Callable[[VoiceClient, str, int], Awaitable[Record]],
        line: Callable[[Record], str],
        warmup: int = 0,
        spare: int = 0,
        voices: list[str] | None = None,
    ) -> None:
        """`count` turns per mode in each voice (of `voices`, all by default):
        `turn(client, voice, item)`, interleaved."""
        if count <= 0:
            return
        for i, voice in enumerate(voices or self.args.voices):
            pairs = self.pairs = Interleaved(sessions(voice), voice)
            say(
                f"[{name}] {voice}: {count} turns per mode, {' / '.join(pairs.modes)} as A, B, B, A"
            )

            def one(client: VoiceClient, _: int, v: str = voice, p: Interleaved = pairs) -> Any:
                return turn(client, v, p.item)

            await self.series(
                name,
                2 * count,
                pairs,
                one,
                line,
                warmup=2 * warmup if i == 0 else 0,
                spare=2 * spare,
            )

    def add(
        self, group: str, rec: Record, *, warm: bool, measured: list[Record], where: str
    ) -> None:
        """Each record (a failed one too) says its mode, voice and item."""
        assert self.pairs is not None
        rec.update(self.pairs.tags())
        self.pairs.again = "not_measured" in rec
        where = f"{group} {rec['voice']} {rec['mode']}"
        super().add(group, rec, warm=warm, measured=measured, where=where)

    def problems(self, group: str, rec: Record) -> list[str]:
        if group == "speakerphone":
            return echo_problems(rec)
        if group == "speakerphone_talker":
            group = "interruption"
        if "error" in rec or "not_measured" in rec or group == "interruption":
            return check("barge_in" if group == "interruption" else group, rec)
        if group == "complete" or (group == "paused" and not rec["cut_off"]):
            return check("voice", rec)
        if group == "backchannel":
            return backchannel_problems(rec)
        return []


def backchannel_problems(rec: Record) -> list[str]:
    out = []
    if not rec.get("audible_at_barge_in"):
        out.append("the reply was not audible when the backchannel started")
    if rec["treated_as_interruption"]:
        out.append(f"treated as an interruption: {rec['interruption_sign']}")
    elif rec.get("resume_ms") is None:
        out.append(f"resume not measured: {rec['resume_not_measured']}")
    gap = rec.get("reply_gap_ms")
    if gap is not None and gap < NOT_PAUSED_MS:
        out.append(f"the reply did not pause for the backchannel (a gap of {gap:.0f} ms)")
    return out


async def paused_turn(client: VoiceClient, paused: Paused) -> Record:
    """A question with a pause in it. Cut off: the assistant took the turn in the pause, i.e.
    a transcript.final came before the clip's last audible frame went out, or the clip made
    two turns. Voice to voice and end of turn only count when it was not cut off."""
    t0 = time.monotonic()
    rec = await voice_turn(client, paused.clip)  # the first turn, answered
    t_end = client.speaker.last_audible_sent or t0
    seen = {rec["turn_id"]}
    first_final = voice_finals(client, t0)[0][0]
    early = first_final < t_end
    deadline = time.monotonic() + (REST_S if early else SETTLE_S)
    while time.monotonic() < deadline:  # the rest of the clip, heard as a turn of its own
        more = [e for _, e in voice_finals(client, t0) if e["turn_id"] not in seen]
        if not more:
            await asyncio.sleep(0.05)
            continue
        seen.add(more[0]["turn_id"])
        await wind_down(client, more[0]["turn_id"], t0)
        deadline = time.monotonic() + SETTLE_S
    finals = [e["text"] for _, e in voice_finals(client, t0)]
    rec.update(paused.fields(), cut_off=early or len(finals) > 1, finals=finals)
    rec["final_before_end_ms"] = _ms(t_end - first_final) if early else None
    if rec["cut_off"]:
        rec["voice_to_voice_ms"] = rec["end_of_turn_ms"] = None
        rec["not_counted"] = "cut off: voice to voice and end of turn are not the question's"
    return rec


async def backchannel_turn(client: VoiceClient, story: Clip, word: Clip, delay: float) -> Record:
    """`word` said over a story `delay` s into its audio. Treated as an interruption: the
    story's reply.done (interrupted) or a new transcript.final within DECIDE_S of the word's end.
    Otherwise the reply should resume: resume_ms is the word's last audible frame sent -> the
    first audible reply frame received after it."""
    rec: Record = {"question": story.text, "backchannel": word.text, "delay_s": delay}
    playing = await story_playing(client, story, delay, rec)
    if playing is None:
        return rec
    tid = playing.turn_id
    t_said = time.monotonic()
    client.speaker.play(word.pcm, word.rate)
    await client.speaker.done.wait()
    t_on, t_end = client.speaker.first_audible_sent, client.speaker.last_audible_sent
    if t_on is None or t_end is None:
        raise RuntimeError(f"no audible frame of {word.text!r} was sent")
    sign, done = "", None
    while time.monotonic() < t_end + RESUME_WAIT_S:
        done = reply_done(client, tid, t_said)
        finals = voice_finals(client, t_said)
        if done is not None and done["interrupted"]:
            sign = "reply.done interrupted"
        elif finals:
            sign = f"a new turn: transcript.final {finals[0][1]['text']!r}"
        if sign:
            break
        settled = done is not None or client.first_audible_after(t_end) is not None
        if settled and time.monotonic() >= t_end + DECIDE_S:
            break
        await asyncio.sleep(0.02)
    # The reply audio around the backchannel: the last audible frame received before its end,
    # and the first one after it.
    heard = [r.t for r in client.audio if r.audible and playing.t_first <= r.t <= t_end]
    during = [t for t in heard if t >= t_on]
    after = None if sign else client.first_audible_after(t_end)
    rec.update(
        treated_as_interruption=bool(sign),
        interruption_sign=sign or None,
        backchannel_s=round(t_end - t_on, 2),
        # backchannel onset -> the reply's last audible frame before the backchannel ended
        reply_paused_ms=_ms(during[-1] - t_on) if during else None,
        resume_ms=_ms(after - t_end) if after is not None else None,
        # the silence the listener heard in the reply
        reply_gap_ms=_ms(after - heard[-1]) if after is not None and heard else None,
    )
    if sign:
        rec["resume_not_measured"] = "treated as an interruption"
    elif after is None:
        rec["resume_not_measured"] = (
            "the reply ended during the backchannel"
            if done is not None
            else f"no audible reply frame within {RESUME_WAIT_S:.0f} s of the backchannel's end"
        )
    if not during:
        rec["reply_paused_not_measured"] = "no audible reply frame while the backchannel played"
    await wind_down(client, tid, playing.t_play)
    if sign.startswith("reply.done"):  # the backchannel became a turn: its final is coming
        with contextlib.suppress(TimeoutError):
            await client.wait_event("transcript.final", 15, after=t_said, source="voice")
    for _, e in voice_finals(client, t_said):
        await wind_down(client, e["turn_id"], t_said)
    return rec


def complete_line(r: Record) -> str:
    return (
        f"{r['mode']:<8} v2v {fmt(r['voice_to_voice_ms'])} ms, eot {fmt(r['end_of_turn_ms'])} ms"
        f"  | {r['transcript']!r} -> {r['reply'][:50]!r}"
    )


def paused_line(r: Record) -> str:
    what = (
        "CUT OFF"
        if r["cut_off"]
        else f"v2v {fmt(r['voice_to_voice_ms'])} ms, eot {fmt(r['end_of_turn_ms'])} ms"
    )
    return (
        f"{r['mode']:<8} {what} (pause {r['pause_s']:.2f} s after "
        f"{r['said_before_pause']!r}) | finals {r['finals']}"
    )


def backchannel_line(r: Record) -> str:
    what = (
        f"INTERRUPTED ({r['interruption_sign']})"
        if r["treated_as_interruption"]
        else f"resumed {fmt(r['resume_ms'])} ms"
    )
    return (
        f"{r['mode']:<8} {r['backchannel']!r}: {what}, paused after "
        f"{fmt(r['reply_paused_ms'])} ms, gap {fmt(r['reply_gap_ms'])} ms"
    )


def interruption_line(r: Record) -> str:
    return (
        f"{r['mode']:<8} {r['interruption']!r}: detected={r['interrupted']}, stop "
        f"{fmt(r['barge_in_stop_ms'])} ms | heard as {r.get('interruption_transcript', '')!r}"
    )
