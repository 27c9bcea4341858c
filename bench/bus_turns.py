"""Bus overhead, part 2: typed turns through the five services, stamped at the client (a
VoiceClient with a WebRTC peer, so the reply is also spoken): each turn is interrupted once its
first audible reply frame arrives; bench/bus_overhead.py runs it."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from harness.local_stack import load_text
from harness.voice_client import VoiceClient

from .runner import say
from .scenarios import QUESTIONS


class LoopLag:
    """The client's own event-loop lag: a 10 ms ticker's overshoot."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            self.samples.append((time.monotonic() - t0 - 0.01) * 1000.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class Clock:
    """Monotonic (the VoiceClient's stamps) to wall clock (the tap's and the services')."""

    offset: float

    @classmethod
    def now(cls) -> Clock:
        samples = []
        for _ in range(5):
            a = time.monotonic()
            w = time.time()
            b = time.monotonic()
            samples.append((b - a, w - (a + b) / 2))
        return cls(min(samples)[1])

    def wall(self, mono: float | None) -> float | None:
        return None if mono is None else mono + self.offset


async def open_client(base_url: str, agent_id: str, voice: bool) -> VoiceClient:
    client = VoiceClient(base_url)
    await client.create_session(agent_id)
    await client.connect_events()
    if voice:
        await client.connect_media()
        await asyncio.sleep(0.3)
    return client


def first_audible(client: VoiceClient, start: int, after: float) -> tuple[int, float | None]:
    """(index to resume from, time of the first audible frame received at or after `after`)."""
    audio = client.audio
    i = start
    while i < len(audio):
        r = audio[i]
        if r.t >= after and r.audible:
            return i, r.t
        i += 1
    return i, None


async def one_turn(client: VoiceClient, text: str, clock: Clock, voice: bool) -> dict[str, Any]:
    scan = len(client.audio)
    m0 = time.monotonic()
    t_send = time.time()
    await client.send({"type": "user.text", "text": text})
    t_final, final = await client.wait_event("transcript.final", 10, after=m0, source="text")
    tid = final["turn_id"]
    t_delta, delta = await client.wait_event("reply.delta", 10, after=m0, turn_id=tid)
    t_audible: float | None = None
    if voice:
        deadline = time.monotonic() + 5.0
        while t_audible is None and time.monotonic() < deadline:
            scan, t_audible = first_audible(client, scan, m0)
            if t_audible is None:
                await asyncio.sleep(0.002)
    # Everything measured has happened: stop the reply instead of listening to all of it.
    await client.send({"type": "interrupt"})
    await client.wait_event("reply.done", 10, after=m0, turn_id=tid)
    await client.wait_event("agent.state", 10, after=m0, state="listening", turn_id=tid)
    return {
        "session_id": client.session_id,
        "turn_id": tid,
        "reply_id": delta.get("reply_id"),
        "ws_send": t_send,
        "ws_final": clock.wall(t_final),
        "ws_delta1": clock.wall(t_delta),
        "client_audible": clock.wall(t_audible),
    }


async def client_turns(
    base_url: str,
    agent_id: str,
    args: argparse.Namespace,
    count: int,
    warmup: int,
    clock: Clock,
    label: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    voice = not args.no_voice
    turns: list[dict[str, Any]] = []
    errors: list[str] = []
    client: VoiceClient | None = None
    used = 0
    done = 0
    try:
        for i in range(warmup + count):
            if client is None or used >= args.turns_per_session:
                if client is not None:
                    await client.close()
                client = await open_client(base_url, agent_id, voice)
                used = 0
            used += 1
            try:
                rec = await one_turn(client, QUESTIONS[i % len(QUESTIONS)], clock, voice)
            except (TimeoutError, RuntimeError, OSError) as exc:
                errors.append(f"{label} turn {i}: {type(exc).__name__}: {exc}")
                say(f"  ! {errors[-1]}")
                await client.close()
                client = None
                continue
            if i >= warmup:
                turns.append(rec)
                done += 1
                if done % 50 == 0 or done == count:
                    say(f"[turns] {label}: {done}/{count} measured (load {load_text()})")
            await asyncio.sleep(args.pause)
    finally:
        if client is not None:
            await asyncio.wait_for(client.close(), 5.0)
    return turns, errors
