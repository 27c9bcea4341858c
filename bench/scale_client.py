"""One process of simulated voice users for bench/scale.py: several VoiceClient sessions (each
with its own WebRTC peer) that speak a question, wait for the whole spoken reply, pause, and
speak again. The clients are lighter than harness/voice_client's (bench/light_client.py):
pre-encoded microphone packets, received audio reduced to arrival times.

    python -m bench.scale_client SPEC.json OUT.json

SPEC: {"base_url", "agent_id", "sessions", "texts": [question, ...], "seed", "pause_s": [lo,
hi], "first_offset_s", "grace_s"}, and for bench/soak.py: "turns_per_session" (after that many
turns a user ends its session with DELETE and opens a new one: churn), "interrupt_every" (every
k-th turn is cut by an `interrupt` message once its reply is audible), "end_sessions" (at the end
every session is ended, not just disconnected). The process connects its sessions, prints
`ready`, and waits for a line `go START END` on stdin (wall-clock seconds): from START each
session begins its first turn after a random offset (so the sessions' turns interleave), and
starts no turn after
END. Turns in flight at END may finish within `grace_s` (then they are cut and counted as
errors); then every peer is closed and OUT is written.

Clients are spread over several such processes (bench/scale.py decides how many) so that one
Python event loop driving many aiortc peers does not itself become the bottleneck the benchmark
is looking for; each process measures its own event-loop lag (a 10 ms ticker) so a gap that a
client's own stall caused can be told from one the server caused.

Per turn OUT holds: voice to voice (last audible frame sent -> first audible reply frame), the
server's turn.metrics, and the arrival gaps between consecutive reply frames while the reply
played (first to last audible frame of the reply), with the silent frames inside that span.
Gaps are taken twice: on the wire (the kernel's receive time of each frame's RTP packet, see
bench/wire_clock.py: what the gateway delivered, whatever this process does) and at the track
(when the decoded frame reached this process's recorder: the wire plus this process's own
stalls).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.voice_client import FRAME, RATE

from . import wire_clock
from .light_client import EncodedClip, EncodedSpeaker, Heard, LightClient, encode_clip
from .scenarios import clip

TICK_S = 0.01
GAP_HIST_MAX_MS = 200  # gaps histogram: 1 ms bins up to this, larger ones listed one by one
BIG_GAP_MS = 60.0  # the target: gaps over it are kept one by one, with their time


def say(line: str) -> None:
    print(line, flush=True)


class Ticker:
    """Event-loop lag of this process: how much longer than 10 ms passed between two wake-ups of
    a 10 ms sleep, with its wall time. Measured from the last wake-up, not from the sleep's
    start, so a stall inside the ticker's own step (the process descheduled, or waiting for the
    GIL) counts too."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (wall time at wake-up, lateness ms)

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.samples.append((time.time(), round((now - last - TICK_S) * 1000.0, 2)))
            last = now


class User:
    """One simulated user: a session, its event socket and WebRTC peer, and its turns."""

    def __init__(
        self,
        index: int,
        spec: dict[str, Any],
        clips: list[EncodedClip],
        silence: bytes,
        offset: float,
    ) -> None:
        self.index = index
        self.spec = spec
        self.clips = clips
        self.rng = random.Random(spec["seed"] * 1000 + index)
        self.silence = silence
        self.speaker = EncodedSpeaker(silence, dtx=bool(spec.get("dtx")))
        self.client = LightClient(spec["base_url"], speaker=self.speaker)  # type: ignore[arg-type]
        self.session_ids: list[str] = []
        self.server_errors: list[dict[str, Any]] = []
        self.turns: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.mono_to_wall = time.time() - time.monotonic()
        self.connect_s = 0.0
        self.offset = offset

    async def connect(self) -> None:
        t0 = time.monotonic()
        await self.client.create_session(self.spec["agent_id"])
        self.session_ids.append(self.client.session_id)
        await self.client.connect_events()
        await self.client.connect_media()
        self.connect_s = round(time.monotonic() - t0, 2)

    async def run(self, start_wall: float, end_wall: float) -> None:
        await asyncio.sleep(max(0.0, start_wall - time.time()) + self.offset)
        n = 0
        per_session = self.spec.get("turns_per_session") or 0
        every = self.spec.get("interrupt_every") or 0
        while time.time() < end_wall:
            question = self.clips[(self.index + n) % len(self.clips)]
            n += 1
            try:
                if per_session and n > 1 and (n - 1) % per_session == 0:
                    await self.renew()
                self.turns.append(await self.turn(question, cut=bool(every) and n % every == 0))
            except (TimeoutError, RuntimeError, OSError, httpx.HTTPError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                self.errors.append("turn unfinished when the level's grace time ran out")
                raise
            lo, hi = self.spec.get("pause_s", [0.5, 1.5])
            await asyncio.sleep(self.rng.uniform(lo, hi))

    async def renew(self) -> None:
        """End this session and go on in a new one (a new peer, socket and history)."""
        await self.client.end_session()
        await self.close()
        self.speaker = EncodedSpeaker(self.silence, dtx=bool(self.spec.get("dtx")))
        self.client = LightClient(self.spec["base_url"], speaker=self.speaker)  # type: ignore[arg-type]
        await self.connect()

    async def turn(self, question: EncodedClip, cut: bool = False) -> dict[str, Any]:
        c = self.client
        t_play = time.monotonic()
        scan0 = len(c.audio)
        self.speaker.play_encoded(question)
        await self.speaker.done.wait()
        t_end = self.speaker.last_audible_sent or t_play
        _, final = await c.wait_event("transcript.final", 20, after=t_play, source="voice")
        tid = final["turn_id"]
        if cut:  # the user stops the reply once it is heard
            deadline = time.monotonic() + 30
            while not any(h.loud for h in c.audio[scan0:]):  # type: ignore[attr-defined]
                if time.monotonic() > deadline:
                    raise TimeoutError("no reply audio to interrupt within 30 s")
                await asyncio.sleep(0.02)
            await c.send({"type": "interrupt"})
        t_done, done = await c.wait_event("reply.done", 90, after=t_play, turn_id=tid)
        if cut and not done.get("interrupted"):
            self.errors.append(f"turn {tid}: interrupt sent, reply.done not marked interrupted")
        metrics: dict[str, Any] = {}
        try:
            _, metrics = await c.wait_event("turn.metrics", 10, after=t_play, turn_id=tid)
        except TimeoutError:
            pass
        await asyncio.sleep(0.3)  # the reply's last frames are still in flight at reply.done
        rec: dict[str, Any] = {
            "turn_id": tid,
            "question": question.text,
            "t_start": round(t_play + self.mono_to_wall, 3),
            "interrupted": done.get("interrupted"),
            "cut": cut,
            "metrics": {k: v for k, v in metrics.items() if k.endswith("_ms") or k.endswith("_s")},
        }
        rec.update(self.reply_audio(scan0, t_end, t_done))
        return rec

    def reply_audio(self, scan0: int, t_end: float, t_done: float) -> dict[str, Any]:
        """Voice to voice and the frame arrival gaps while the reply played, on the wire and at
        the track (module docstring)."""
        frames: list[Heard] = self.client.audio[scan0:]  # type: ignore[assignment]
        times = [r.t for r in frames]
        loud = [r.loud for r in frames]
        first = next((i for i, r in enumerate(frames) if r.t >= t_end and loud[i]), None)
        if first is None:
            return {"voice_to_voice_ms": None, "gaps_ms": [], "reply_frames": 0}
        last = max(
            (i for i in range(first, len(frames)) if loud[i] and times[i] <= t_done + 0.5),
            default=first,
        )
        span = frames[first : last + 1]
        track = self._gaps([r.t for r in span])
        stamped = [r.wire for r in span if r.wire is not None]
        # Wire gaps where (nearly) every frame has its stamp; else the track's, and it says so.
        clock = "wire" if len(stamped) >= 0.9 * len(span) else "track"
        wire = self._gaps(stamped) if clock == "wire" else track
        return {
            "voice_to_voice_ms": round((times[first] - t_end) * 1000.0, 1),
            "reply_frames": last - first + 1,
            "reply_s": round((times[last] - times[first]), 3),
            "silent_frames_inside": sum(1 for r in span if not r.loud),
            # frames whose packet had no kernel stamp (left out of the wire gaps)
            "unstamped_frames": len(span) - len(stamped),
            "gap_clock": clock,  # what gaps_ms / max_gap_ms / big_gaps were timed on
            "gaps_ms": wire["gaps"],
            "max_gap_ms": wire["max"],
            "big_gaps": wire["big"],  # (wall time of the frame after the gap, gap ms), over 60
            "max_gap_at": wire["max_at"],
            "track_gaps_ms": track["gaps"],
            "track_max_gap_ms": track["max"],
            "track_big_gaps": track["big"],
            "reply_first_wall": round(times[first] + self.mono_to_wall, 3),
            "reply_last_wall": round(times[last] + self.mono_to_wall, 3),
        }

    def _gaps(self, times: list[float]) -> dict[str, Any]:
        """Gaps between consecutive arrival times, in ms, with those over the target."""
        gaps = [round((b - a) * 1000.0, 2) for a, b in zip(times, times[1:], strict=False)]
        worst = int(np.argmax(gaps)) if gaps else None
        return {
            "gaps": gaps,
            "max": max(gaps) if gaps else None,
            "big": [
                (round(times[k + 1] + self.mono_to_wall, 3), g)
                for k, g in enumerate(gaps)
                if g > BIG_GAP_MS
            ],
            "max_at": round(times[worst + 1] + self.mono_to_wall, 3) if worst is not None else None,
        }

    async def close(self) -> None:
        # error events the server sent this session (turn_failed, limits, ...): kept for the record
        self.server_errors += [ev for _, ev in self.client.events if ev.get("type") == "error"]
        try:
            await asyncio.wait_for(self.client.close(), 5.0)
        except (TimeoutError, Exception):  # never hang the worker's end on a close
            pass


def gap_summary(turns: list[dict[str, Any]], key: str = "gaps_ms") -> dict[str, Any]:
    """All gaps of a session as a 1 ms histogram plus the large ones, so the JSON stays small."""
    hist = [0] * (GAP_HIST_MAX_MS + 1)
    large: list[float] = []
    for t in turns:
        for g in t.pop(key, []):
            if g < GAP_HIST_MAX_MS:
                hist[max(0, int(g))] += 1
            else:
                large.append(g)
    return {"hist_1ms": hist, "over_hist": large}


async def main_async(spec: dict[str, Any], out: Path) -> None:
    if not wire_clock.install():
        say("no kernel receive stamps here: gaps are timed at the track")
    clips = [encode_clip(c.text, c.pcm, c.rate) for c in map(clip, spec["texts"])]
    silence = encode_clip("", np.zeros(FRAME, dtype=np.int16), RATE).packets[0][0]
    rng = random.Random(spec["seed"])
    span = float(spec.get("first_offset_s", 5.0))
    users = [User(i, spec, clips, silence, rng.uniform(0.0, span)) for i in range(spec["sessions"])]
    ticker = Ticker()
    tick_task = asyncio.create_task(ticker.run())
    connect_errors: list[str] = []
    live: list[User] = []
    for u in users:
        try:
            await u.connect()
            live.append(u)
        except Exception as exc:
            connect_errors.append(f"session {u.index}: {type(exc).__name__}: {exc}"[:300])
            say(f"connect failed: {connect_errors[-1]}")
    gc.freeze()  # the clips and connections stay: full collections need not walk them
    say("ready")
    line = await asyncio.to_thread(sys.stdin.readline)
    parts = line.split()
    if len(parts) != 3 or parts[0] != "go":
        raise SystemExit(f"expected 'go START END', got {line!r}")
    start, end = float(parts[1]), float(parts[2])
    tick_from = len(ticker.samples)
    tasks = [asyncio.create_task(u.run(start, end)) for u in live]
    if tasks:
        # Turns under way at END finish, within a grace time: an overloaded server must not
        # keep the level (and its results) waiting for ever.
        grace = float(spec.get("grace_s", 30.0))
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, end - time.time()) + grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    tick_task.cancel()
    if spec.get("end_sessions"):
        for u in live:
            try:
                await u.client.end_session()
            except (httpx.HTTPError, OSError) as exc:
                u.errors.append(f"ending session {u.client.session_id}: {exc}"[:300])
    await asyncio.gather(*(u.close() for u in live))
    ticks = ticker.samples[tick_from:]
    lags = [lag for _, lag in ticks]
    result: dict[str, Any] = {
        "sessions": [
            {
                "index": u.index,
                "session_id": u.client.session_id,
                "session_ids": u.session_ids,
                "server_errors": u.server_errors,
                "connect_s": u.connect_s,
                "errors": u.errors,
                "turns": u.turns,
            }
            for u in live
        ],
        "connect_errors": connect_errors,
        "loop_lag_ms": {
            "n": len(lags),
            "p50": float(np.percentile(lags, 50)) if lags else None,
            "p99": float(np.percentile(lags, 99)) if lags else None,
            "max": max(lags) if lags else None,
            # the stalls themselves, to match against gaps seen at the same time
            "stalls": [(round(t, 3), lag) for t, lag in ticks if lag >= 20.0],
        },
    }
    for s in result["sessions"]:
        s["gaps"] = gap_summary(s["turns"])
        s["track_gaps"] = gap_summary(s["turns"], "track_gaps_ms")
    text = json.dumps(result)
    await asyncio.to_thread(out.write_text, text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    asyncio.run(main_async(spec, Path(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
