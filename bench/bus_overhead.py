"""Bus overhead: per-hop latency of the message path, with fake engines that answer at once.

    bench/run.sh bus                       # 200 typed turns (about 2 minutes)
    bench/run.sh bus --turns 1000 --sessions 4
    scripts/netns-run .venv/bin/python -m bench.bus_overhead --help

Starts its own nats-server and redis-server (inside scripts/netns-run, as WebRTC needs) and:

1. **Raw NATS** on that server, before any service runs: request/reply round trips to an echo
   responder and one-way publish -> subscribe times (a small JSON message and a 3,200-byte audio
   chunk), publisher in this process, responder and subscriber in another (bench/bus_peer.py),
   all through nats-py as the services use it. The same one-way messages are also stamped by the
   raw-socket tap (bench/nats_tap.py): nats-py's delivery minus the tap's is what a nats-py
   observer would add to every stamp. Then the floor of a hop on this machine: the same small
   one-way message, and a request/reply, each sent after 100 ms of idleness (as every process
   is when a turn's first message reaches it, a user's turns being seconds apart). Code that has
   not run for a while runs cold: on this machine that costs more than the bus itself. For
   reference, a Redis GET round trip (redis-py asyncio, as the session service uses it): some
   session hops hold one or more.
2. **A real turn through the five services** with VA_ENGINE=fake for asr, llm and tts: a client
   (tests/voice_client.VoiceClient, with a WebRTC peer so the reply is also spoken) types a
   question; the tap, subscribed to `>`, stamps every message of the turn as the server hands it
   out; the client stamps what it sends and receives. Once the first audible reply frame arrives
   the client interrupts the reply (the hops measured are all before it) and types the next
   question. Each hop is the time between two such stamps, matched by turn and reply id; a hop
   includes the work the service does between the two messages, named in the table. Three
   "transit" rows are pure bus: a message that carries its publisher's own `time.time()` stamp
   (TurnSubmit.speech_end_ms, PlaybackStarted.at_ms, Interrupt.at_ms) against the tap's stamp.

Clocks: every stamp is `time.time()` (the client's monotonic stamps are converted with one
offset taken at start), comparable across processes on one machine.

Observer overhead: the tap stamps at `recv()`, in a process of its own, before parsing. Its own
lag is measured all along by probes it publishes to itself every 20 ms (server round trip plus
its wake-up, under the load of the moment); a hop is the difference of two tap stamps, so the
tap's constant lag cancels and only its variation (probe p99 - p50) can enter a hop. The
client's event-loop lag (a 10 ms ticker) bounds the error of the client-side stamps.

Output: tables on stdout (p50 / p99 / max per hop, the targets marked), bench/results/
bus_overhead-<stamp>.json and -latest.json (every turn's stamps), bench/results/
bus_overhead-latest.png, service logs in bench/results/logs/<stamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from harness.local_stack import FAKE_ENGINES, LOAD_GATEWAY_ENV, LocalStack, load_text
from harness.paths import shown
from harness.voice_client import VoiceClient
from services.common import subjects
from services.common.messages import AUDIO, H_REPLY, H_TYPE, AudioChunkHeader
from services.common.subjects import Kind
from services.tts.text import ClauseSplitter

from . import pyspy, report
from .helper import Helper
from .machine import BenchRun
from .nats_tap import read as read_tap
from .runner import arg_parser, say
from .scenarios import PLAIN, QUESTIONS, register_agent
from .signals import cancel_on_signals, signals_ignored, stopped_on_signals

REPO = Path(__file__).resolve().parent.parent
TARGET_P50_MS = 1.0
TARGET_P99_MS = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("bus_overhead", __doc__)
    p.add_argument("--turns", type=int, default=200, help="measured typed turns (200)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured turns first (5)")
    p.add_argument(
        "--sessions", type=int, default=1, help="sessions typing at once, turns split between (1)"
    )
    p.add_argument(
        "--turns-per-session", type=int, default=50, help="a fresh session after as many (50)"
    )
    p.add_argument("--pause", type=float, default=0.1, help="seconds between turns (0.1)")
    p.add_argument(
        "--raw", type=int, default=2000, help="raw NATS samples of each kind (2000); 0: skip"
    )
    p.add_argument(
        "--raw-idle",
        type=int,
        default=100,
        help="raw NATS samples after 100 ms idle, one-way and request/reply (100; 20 s)",
    )
    p.add_argument("--no-voice", action="store_true", help="no WebRTC peer: text only, no TTS")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (if found) the session, gateway, llm and tts at 500 Hz during the turns: where"
        " each spends its busy time per turn (adds load: figures of such a run are not the clean"
        " ones)",
    )
    return p.parse_args(argv)


# -- 1. raw NATS ---------------------------------------------------------------------------------
async def raw_redis(url: str, n: int) -> list[float]:
    """GET round trips with redis-py's asyncio client, as the session service talks to Redis:
    the unit of the Redis work inside the session's hops."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        await r.set("bench:key", "x" * 200)
        out = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            await r.get("bench:key")
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000.0)
        await r.delete("bench:key")
        return out
    finally:
        await r.aclose()


IDLE_S = 0.1  # a turn's first message finds each service idle this long or longer


async def raw_nats(url: str, n: int, idle_n: int) -> dict[str, Any]:
    """Request/reply round trips and paced one-way publishes (small and audio-sized), then the
    same small messages after IDLE_S of idleness on both ends: the floor of a hop on this
    machine, since every process on it has been idle since the previous turn."""
    from .bus_peer import ECHO, ONEWAY

    nc = await nats.connect(url, name="bench-raw")
    try:
        small = json.dumps({"type": "bench", "v": 1, "text": "x" * 200}).encode()
        audio = bytes(3200)
        rtt: list[float] = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            await nc.request(ECHO, small, timeout=2.0)
            if i >= 50:
                rtt.append((time.perf_counter() - t0) * 1000.0)
        sent: dict[str, dict[int, float]] = {"small": {}, "audio": {}, "idle": {}}
        for kind, payload, count in (
            ("small", small, n),
            ("audio", audio, n),
            ("idle", small, idle_n),
        ):
            headers = {H_TYPE: AUDIO} if kind == "audio" else {}
            for i in range(count):
                if kind == "idle":
                    await asyncio.sleep(IDLE_S)
                t = time.time()
                await nc.publish(
                    f"{ONEWAY}.{kind}",
                    payload,
                    headers={**headers, "Bench-T": f"{t:.6f}", "Bench-Seq": str(i)},
                )
                sent[kind][i] = t
                await asyncio.sleep(0.002)  # paced: one message at a time on the wire
        idle_rtt: list[float] = []
        for _ in range(idle_n):
            await asyncio.sleep(IDLE_S)
            t0 = time.perf_counter()
            await nc.request(ECHO, small, timeout=2.0)
            idle_rtt.append((time.perf_counter() - t0) * 1000.0)
        await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    return {"request_reply_ms": rtt, "request_reply_idle_ms": idle_rtt, "sent": sent}


def raw_results(
    raw: dict[str, Any], peer_file: Path, rows: list[list[Any]]
) -> dict[str, dict[str, Any]]:
    from .bus_peer import ONEWAY

    peer = json.loads(peer_file.read_text())["oneway"] if peer_file.exists() else []
    by_peer = {(s.rsplit(".", 1)[-1], seq): (sent, got) for s, seq, sent, got in peer}
    by_tap: dict[tuple[str, int], float] = {}
    for t, subject, _reply, headers, _payload, _size in rows:
        if subject.startswith(ONEWAY) and headers and "Bench-Seq" in headers:
            by_tap[(subject.rsplit(".", 1)[-1], int(headers["Bench-Seq"]))] = t
    out: dict[str, dict[str, Any]] = {
        "request_reply": {
            **report.percentiles(raw["request_reply_ms"]),
            "label": "request -> reply round trip (nats-py both ends, echo responder)",
        }
    }
    out["request_reply_idle"] = {
        **report.percentiles(raw.get("request_reply_idle_ms", [])),
        "label": f"  the same after {IDLE_S * 1000:.0f} ms idle (as a turn's first message)",
    }
    out["redis_get"] = {
        **report.percentiles(raw.get("redis_get_ms", [])),
        "label": "Redis GET round trip (redis-py asyncio; not a bus hop: for reference)",
    }
    for kind in ("small", "audio", "idle"):
        size = {
            "small": "256-byte JSON",
            "audio": "3,200-byte audio chunk",
            "idle": f"256-byte JSON after {IDLE_S * 1000:.0f} ms idle",
        }[kind]
        peer_ms, tap_ms, lag_ms = [], [], []
        for seq, sent in raw["sent"][kind].items():
            p = by_peer.get((kind, seq))
            t = by_tap.get((kind, seq))
            if p is not None:
                peer_ms.append((p[1] - sent) * 1000.0)
            if t is not None:
                tap_ms.append((t - sent) * 1000.0)
            if p is not None and t is not None:
                lag_ms.append((p[1] - t) * 1000.0)
        out[f"oneway_{kind}"] = {
            **report.percentiles(peer_ms),
            "lost": len(raw["sent"][kind]) - len(peer_ms),
            "label": f"publish -> subscriber callback, {size} (nats-py both ends)",
        }
        out[f"oneway_{kind}_tap"] = {
            **report.percentiles(tap_ms),
            "label": f"publish -> raw-socket tap recv(), {size}",
        }
        out[f"nats_py_vs_tap_{kind}"] = {
            **report.percentiles(lag_ms),
            "label": f"  nats-py callback stamp minus the tap's, {size}",
        }
    return out


# -- 2. turns through the services ------------------------------------------------------------
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


async def measure(
    stack: LocalStack, args: argparse.Namespace, state: dict[str, Any], work: Path
) -> None:
    if args.raw > 0:
        peer_file = work / "peer.json"
        peer = Helper("bus_peer", ["bench.bus_peer", stack.nats_url, str(peer_file)], say)
        try:
            peer.wait_ready(30)
            say(
                f"[raw] {args.raw} request/reply round trips, {args.raw} x2 one-way publishes,"
                f" {args.raw} Redis GETs"
            )
            state["raw_window"] = [time.time()]
            state["raw"] = await raw_nats(stack.nats_url, args.raw, args.raw_idle)
            state["raw"]["redis_get_ms"] = await raw_redis(stack.redis_url, args.raw)
            state["raw_window"].append(time.time())
        finally:
            peer.stop()
        state["peer_file"] = peer_file
    await asyncio.to_thread(stack.start_services)
    base = stack.base_url
    agent_id = await register_agent(base, PLAIN)
    clock = Clock.now()
    spies: dict[str, tuple[Any, Path]] = {}
    exe = pyspy.find() if args.profile else None
    if args.profile and exe is None:
        say("[profile] py-spy not found (pip install py-spy, or PY_SPY=path): no profile")
    if exe is not None:
        for kind in ("session", "gateway", "llm", "tts"):
            raw = stack.log_dir / f"{kind}-pyspy-bus.txt"
            proc = pyspy.record(stack.by_kind[kind].pid, None, raw, exe, 500, False)
            spies[kind] = (proc, raw)
    lag = LoopLag()
    lag.start()
    state["lag"] = lag
    state["turns_window"] = [time.time()]
    say(
        f"[turns] {args.turns} typed turns ({args.warmup} warm-up), {args.sessions} session(s) "
        f"at once, {'with' if not args.no_voice else 'without'} a WebRTC peer"
    )
    per = [
        args.turns // args.sessions + (1 if i < args.turns % args.sessions else 0)
        for i in range(args.sessions)
    ]
    results = await asyncio.gather(
        *(
            client_turns(base, agent_id, args, n, args.warmup, clock, f"s{i + 1}")
            for i, n in enumerate(per)
        )
    )
    lag.stop()
    state["turns_window"].append(time.time())
    state["profiles"] = {}
    for kind, (proc, raw) in spies.items():
        await asyncio.to_thread(pyspy.stop, proc)
        if raw.exists():
            prof = pyspy.summarize(raw)
            busy_s = prof.get("main_thread_samples", 0) / 500.0
            n = max(1, args.warmup + args.turns)
            state["profiles"][kind] = {
                **prof,
                "main_busy_ms_per_turn": round(busy_s * 1000.0 / n, 2),
                "raw": shown(raw),
            }
    for turns, errors in results:
        state["turns"].extend(turns)
        state["errors"].extend(errors)


# -- hops ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hop:
    key: str
    start: str
    end: str
    label: str
    # "bus": publisher's stamp -> on the bus; "rtt": a request's round trip, handler included;
    # "work": a hop with the service's own work between the two messages (held to the target:
    # with engines that answer at once that is the message path's overhead); "media": WebRTC
    # pacing and jitter buffer (20 ms frames), not the bus; "total": sums, for reference.
    kind: str


HOPS: tuple[Hop, ...] = (
    Hop(
        "ws_to_gateway",
        "ws_send",
        "gw_final",
        "user.text sent (WS) -> transcript.final on the bus",
        "work",
    ),
    Hop(
        "gateway_submit",
        "gw_final",
        "gw_submit",
        "transcript.final -> turn.submit request (gateway)",
        "work",
    ),
    Hop(
        "submit_to_session",
        "gw_submit",
        "ses_claimed",
        "turn.submit -> work.claimed (session: session and agent kept, 2 SUBs, no Redis)",
        "work",
    ),
    Hop("submit_rtt", "gw_submit", "ses_accepted", "turn.submit -> TurnAccepted reply", "rtt"),
    Hop(
        "session_prepare",
        "ses_claimed",
        "tts_claim",
        "work.claimed -> tts.claim (session: 1 Redis script, sent before the acceptance)",
        "work",
    ),
    Hop("tts_claim_rtt", "tts_claim", "tts_ack", "tts.claim -> ClaimAck (tts replica)", "rtt"),
    Hop(
        "tts_ack_to_llm_claim",
        "tts_ack",
        "llm_claim",
        "tts ClaimAck -> llm.claim (both claims leave at once: <= 0)",
        "work",
    ),
    Hop("llm_claim_rtt", "llm_claim", "llm_ack", "llm.claim -> ClaimAck (llm replica)", "rtt"),
    Hop(
        "llm_first_delta",
        "llm_claim",
        "llm_delta1",
        "llm.claim -> first llm.delta (llm, fake engine)",
        "work",
    ),
    Hop(
        "session_reply_delta",
        "llm_delta1",
        "ev_delta1",
        "first llm.delta -> first reply.delta on the bus (session)",
        "work",
    ),
    Hop(
        "delta_to_client",
        "ev_delta1",
        "ws_delta1",
        "reply.delta on the bus -> at the client WebSocket (gateway)",
        "work",
    ),
    Hop(
        "session_tts_text",
        "llm_delta1",
        "tts_text1",
        "first llm.delta -> first tts.text (session)",
        "work",
    ),
    Hop(
        "tts_segment",
        "tts_clause",
        "tts_seg0",
        "tts.text completing clause 1 -> tts.segment (tts, fake engine)",
        "work",
    ),
    Hop("tts_first_chunk", "tts_seg0", "audio0", "tts.segment -> first audio chunk (tts)", "work"),
    Hop(
        "gateway_first_frame",
        "audio0",
        "pb_at",
        "first audio chunk -> first frame to WebRTC (gateway: next 20 ms frame; at once if idle)",
        "media",
    ),
    Hop(
        "webrtc_to_client",
        "pb_at",
        "client_audible",
        "first frame to WebRTC -> first audible frame at the client",
        "media",
    ),
    Hop(
        "transit_turn_submit",
        "submit_stamp",
        "gw_submit",
        "transit: gateway's TurnSubmit stamp -> on the bus",
        "bus",
    ),
    Hop(
        "transit_playback_started",
        "pb_at",
        "pb_seen",
        "transit: gateway's playback.started stamp -> on the bus",
        "bus",
    ),
    Hop(
        "transit_interrupt",
        "intr_stamp",
        "intr_seen",
        "transit: gateway's Interrupt stamp -> on the bus",
        "bus",
    ),
    Hop(
        "total_first_delta",
        "ws_send",
        "ws_delta1",
        "total: user.text sent -> first reply.delta at the client",
        "total",
    ),
    Hop(
        "total_first_chunk",
        "ws_send",
        "audio0",
        "total: user.text sent -> first audio chunk at the gateway",
        "total",
    ),
    Hop(
        "total_first_audible",
        "ws_send",
        "client_audible",
        "total: user.text sent -> first audible reply frame",
        "total",
    ),
)


def index_rows(rows: list[list[Any]]) -> dict[str, Any]:
    """One pass over the tap's messages: the first stamp of each thing a hop needs."""
    ix: dict[str, Any] = defaultdict(dict)
    first = ix  # alias: every table keeps the first occurrence only

    def put(table: str, key: Any, value: Any) -> None:
        first[table].setdefault(key, value)

    for t, subject, reply, headers, payload, _size in rows:
        if subject.startswith("_INBOX."):
            put("reply", subject, t)
            continue
        at = subjects.parse(subject)
        if at is None:
            continue
        if AudioChunkHeader.is_audio(headers):
            put("audio0", headers.get(H_REPLY), t)
            continue
        if payload is None:
            continue
        try:
            msg = json.loads(payload)
        except ValueError:
            continue
        mtype = msg.get("type")
        kind = at.kind
        if kind is Kind.EVENTS:
            put("event", (mtype, msg.get("turn_id"), msg.get("state")), t)
        elif kind is Kind.SESSION_TURN:
            put("submit", msg.get("turn_id"), (t, reply, msg.get("speech_end_ms")))
        elif kind is Kind.WORK_CLAIMED:
            put("claimed", (msg.get("kind"), msg.get("turn_id")), (t, msg.get("reply_id")))
        elif kind is Kind.TTS_CLAIM:
            put("tts_claim", msg.get("turn_id"), (t, reply))
        elif kind is Kind.LLM_CLAIM:
            put("llm_claim", msg.get("turn_id"), (t, reply, msg.get("stream_id")))
        elif kind is Kind.LLM_OUT and mtype == "llm.delta":
            put("llm_delta", at.id, t)
        elif kind is Kind.TTS_IN:
            ix["tts_text"].setdefault(at.id, []).append(
                (msg.get("seq"), t, msg.get("text", ""), msg.get("final", False))
            )
        elif kind is Kind.TTS_OUT and mtype == "tts.segment":
            put("segment", (msg.get("reply_id"), msg.get("index")), t)
        elif kind is Kind.PLAYBACK and mtype == "playback.started":
            put("pb_started", msg.get("reply_id"), (t, msg.get("at_ms")))
        elif kind is Kind.INTERRUPT and mtype == "interrupt":
            put("interrupt", msg.get("turn_id"), (t, msg.get("at_ms")))
    return ix


def clause_stamp(texts: list[tuple[int, float, str, bool]]) -> float | None:
    """Stamp of the tts.text whose arrival completes the first clause (as the TTS splits it)."""
    splitter = ClauseSplitter()
    for _seq, t, text, final in sorted(texts, key=lambda x: x[0]):
        clauses = splitter.feed(text)
        if final:
            clauses += splitter.flush()
        if clauses:
            return t
    return None


def points(turn: dict[str, Any], ix: dict[str, Any]) -> dict[str, float | None]:
    """Every stamp of one turn (seconds, wall clock), None where it is missing."""
    tid, rid = turn["turn_id"], turn["reply_id"]
    p: dict[str, float | None] = {
        k: turn.get(k) for k in ("ws_send", "ws_final", "ws_delta1", "client_audible")
    }
    ev = ix["event"]
    p["gw_final"] = ev.get(("transcript.final", tid, None))
    p["ses_thinking"] = ev.get(("agent.state", tid, "thinking"))
    p["ev_delta1"] = ev.get(("reply.delta", tid, None))
    submit = ix["submit"].get(tid)
    p["gw_submit"] = submit[0] if submit else None
    p["ses_accepted"] = ix["reply"].get(submit[1]) if submit else None
    p["submit_stamp"] = submit[2] / 1000.0 if submit and submit[2] else None
    claimed = ix["claimed"].get(("session", tid))
    p["ses_claimed"] = claimed[0] if claimed else None
    rid = rid or (claimed[1] if claimed else None)
    tc = ix["tts_claim"].get(tid)
    p["tts_claim"] = tc[0] if tc else None
    p["tts_ack"] = ix["reply"].get(tc[1]) if tc else None
    lc = ix["llm_claim"].get(tid)
    p["llm_claim"] = lc[0] if lc else None
    p["llm_ack"] = ix["reply"].get(lc[1]) if lc else None
    p["llm_delta1"] = ix["llm_delta"].get(lc[2]) if lc else None
    texts = ix["tts_text"].get(rid, [])
    p["tts_text1"] = min((t for seq, t, _x, _f in texts if seq == 1), default=None)
    p["tts_clause"] = clause_stamp(texts) if texts else None
    p["tts_seg0"] = ix["segment"].get((rid, 0))
    p["audio0"] = ix["audio0"].get(rid)
    pb = ix["pb_started"].get(rid)
    p["pb_seen"] = pb[0] if pb else None
    p["pb_at"] = pb[1] / 1000.0 if pb and pb[1] else None
    intr = ix["interrupt"].get(tid)
    p["intr_seen"] = intr[0] if intr else None
    p["intr_stamp"] = intr[1] / 1000.0 if intr and intr[1] else None
    return p


def hop_samples(turn_points: list[dict[str, float | None]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {h.key: [] for h in HOPS}
    for p in turn_points:
        for h in HOPS:
            a, b = p.get(h.start), p.get(h.end)
            if a is not None and b is not None:
                out[h.key].append((b - a) * 1000.0)
    return out


def verdict(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no data"
    ok50 = s["p50"] <= TARGET_P50_MS
    ok99 = s["p99"] <= TARGET_P99_MS
    return (
        "ok"
        if ok50 and ok99
        else ("p50 over" if not ok50 else "") + (" p99 over" if not ok99 else "")
    )


def table(rows: list[tuple[str, dict[str, Any], str]], title: str) -> str:
    width = max(len(label) for label, _, _ in rows)
    head = f"{title:<{width}}  {'n':>5}  {'p50':>7}  {'p99':>7}  {'max':>7}  {'mean':>7}  target"
    lines = [head, "-" * len(head)]

    def cell(v: Any) -> str:
        return f"{v:7.2f}" if isinstance(v, int | float) else f"{'-':>7}"

    for label, s, mark in rows:
        lines.append(
            f"{label:<{width}}  {s.get('n', 0):>5}  {cell(s.get('p50'))}  {cell(s.get('p99'))}  "
            f"{cell(s.get('max'))}  {cell(s.get('mean'))}  {mark}"
        )
    return "\n".join(lines)


def window(samples: list[tuple[float, float]], span: list[float] | None) -> list[float]:
    if not span or len(span) < 2:
        return []
    return [(got - sent) * 1000.0 for sent, got in samples if span[0] <= sent <= span[1]]


def analyse(state: dict[str, Any], tap_file: Path) -> dict[str, Any]:
    rows, probes = read_tap(tap_file)
    out: dict[str, Any] = {"tap_messages": len(rows)}
    if state.get("raw"):
        out["raw"] = raw_results(state["raw"], state["peer_file"], rows)
    ix = index_rows(rows)
    turn_points = [points(t, ix) for t in state["turns"]]
    samples = hop_samples(turn_points)
    out["hops"] = {
        h.key: {
            **report.percentiles(samples[h.key]),
            # both messages came in one recv() of the tap: back-to-back writes, or the tap late
            "same_recv": sum(1 for v in samples[h.key] if v == 0.0),
            "label": h.label,
            "kind": h.kind,
        }
        for h in HOPS
    }
    for h in HOPS:
        s = out["hops"][h.key]
        s["target"] = verdict(s) if h.kind in ("bus", "rtt", "work") else "info"
    out["observer"] = {
        "tap_probe_raw_ms": report.percentiles(window(probes, state.get("raw_window"))),
        "tap_probe_turns_ms": report.percentiles(window(probes, state.get("turns_window"))),
        "client_loop_lag_ms": report.percentiles(state["lag"].samples if state.get("lag") else []),
    }
    out["turn_points"] = turn_points
    out["samples"] = {k: [round(v, 3) for v in vs] for k, vs in samples.items()}
    return out


def print_tables(res: dict[str, Any]) -> None:
    raw = res.get("raw")
    if raw:
        # Each idle row sits under the busy row it repeats: the floor of a hop, no target.
        judged = ("request_reply", "oneway_small", "oneway_audio")
        floor = ("request_reply_idle", "oneway_idle")
        rows = []
        for key in (
            "request_reply",
            "request_reply_idle",
            "oneway_small",
            "oneway_audio",
            "oneway_idle",
            "oneway_small_tap",
            "oneway_audio_tap",
            "oneway_idle_tap",
            "nats_py_vs_tap_small",
            "nats_py_vs_tap_audio",
            "redis_get",
        ):
            mark = verdict(raw[key]) if key in judged else "floor" if key in floor else ""
            rows.append((raw[key]["label"], raw[key], mark))
        say("")
        say(table(rows, "raw NATS on this machine (ms)"))
    say("")
    hops = res["hops"]
    rows = [
        (
            hops[h.key]["label"],
            hops[h.key],
            hops[h.key]["target"]
            + (f"  ({hops[h.key]['same_recv']} in one recv)" if hops[h.key]["same_recv"] else ""),
        )
        for h in HOPS
    ]
    say(table(rows, "per hop of a typed turn, fake engines (ms)"))
    obs = res["observer"]
    say("")
    say(
        table(
            [
                ("tap probe: publish -> tap recv() (raw phase)", obs["tap_probe_raw_ms"], ""),
                ("tap probe: publish -> tap recv() (turns phase)", obs["tap_probe_turns_ms"], ""),
                ("client event-loop lag (10 ms ticker overshoot)", obs["client_loop_lag_ms"], ""),
            ],
            "observer overhead (ms)",
        )
    )


def draw(res: dict[str, Any], raw: dict[str, Any], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series: list[tuple[str, list[float], str]] = []
    colors = {
        "bus": "#4c72b0",
        "rtt": "#55a868",
        "work": "#dd8452",
        "media": "#c44e52",
        "total": "#8172b3",
    }
    if raw.get("request_reply_ms"):
        series.append(
            ("raw NATS request -> reply (no service)", raw["request_reply_ms"], "#937860")
        )
    if raw.get("request_reply_idle_ms"):
        series.append(
            (
                f"raw NATS request -> reply after {IDLE_S * 1000:.0f} ms idle (no service)",
                raw["request_reply_idle_ms"],
                "#937860",
            )
        )
    for h in HOPS:
        series.append((res["hops"][h.key]["label"], res["samples"][h.key], colors[h.kind]))
    fig, ax = plt.subplots(figsize=(14, 0.42 * len(series) + 2.2), constrained_layout=True)
    rng = np.random.default_rng(0)
    for i, (_label, data, color) in enumerate(series):
        y = len(series) - 1 - i
        if data:
            d = np.clip(np.asarray(data), 0.01, None)
            ax.scatter(d, y + rng.uniform(-0.28, 0.28, d.size), s=5, alpha=0.35, color=color)
            p50, p99 = np.percentile(d, 50), np.percentile(d, 99)
            ax.plot([p50, p50], [y - 0.38, y + 0.38], color="black", lw=1.6)
            ax.plot([p99, p99], [y - 0.38, y + 0.38], color="black", lw=1.0, ls="--")
    ax.set_yticks(range(len(series)), [s[0] for s in reversed(series)], fontsize=8)
    ax.set_xscale("log")
    ax.axvline(TARGET_P50_MS, color="green", lw=1, alpha=0.6, label="target p50 1 ms")
    ax.axvline(TARGET_P99_MS, color="red", lw=1, alpha=0.6, label="target p99 10 ms")
    ax.set_xlabel(
        "ms (log; 0 = both messages in one recv() of the tap, drawn at 0.01).  black: p50,"
        " dashed: p99.\nblue: publisher's stamp -> bus, green: request round trip incl. handler,"
        " orange: hop incl. the service's work, red: WebRTC pacing / jitter buffer, purple: totals",
        fontsize=8,
    )
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.sessions = max(1, args.sessions)
    if os.environ.get("VA_NETNS") != "1" and not args.no_voice:
        say("note: not inside scripts/netns-run; WebRTC may not connect (use bench/run.sh bus)")
    run = BenchRun.begin("bus_overhead", say)
    env = {k: dict(v) for k, v in FAKE_ENGINES.items()} | {"gateway": LOAD_GATEWAY_ENV}
    state: dict[str, Any] = {"turns": [], "errors": []}
    rc = 0
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="va-bus-") as tmp, stopped_on_signals():
        work = Path(tmp)
        stack = LocalStack(work, args.out / "logs" / run.stamp, say, env=env)
        tap_file = work / "tap.jsonl"
        tap: Helper | None = None
        try:
            stack.start_servers()
            tap = Helper("tap", ["bench.nats_tap", stack.nats_url, str(tap_file)], say)
            tap.wait_ready(30)
            say(f"[setup] raw-socket tap subscribed to '>' on {stack.nats_url}")
            stopped = asyncio.run(cancel_on_signals(measure(stack, args, state, work)))
            if stopped is not None:
                raise KeyboardInterrupt(stopped)
        except KeyboardInterrupt as exc:
            interrupted, rc = True, 130
            say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping everything")
        except Exception as exc:
            interrupted, rc = True, 1
            say(f"\nbenchmark failed: {type(exc).__name__}: {exc}")
        finally:
            with signals_ignored():
                if tap is not None:
                    tap.stop()
                stack.stop()
        if state["turns"] or state.get("raw"):
            write(state, args, stack, run, tap_file, interrupted)
    return rc


def write(
    state: dict[str, Any],
    args: argparse.Namespace,
    stack: LocalStack,
    run: BenchRun,
    tap_file: Path,
    interrupted: bool,
) -> None:
    res = analyse(state, tap_file)
    record = run.record(
        args,
        interrupted,
        stack.log_dir,
        engines=FAKE_ENGINES,
        targets_ms={"p50": TARGET_P50_MS, "p99": TARGET_P99_MS},
        errors=state["errors"],
        profiles=state.get("profiles", {}),
        **res,
    )
    say("")
    say(
        run.headline(
            "bus overhead",
            interrupted,
            f", {len(state['turns'])} turns, {res['tap_messages']} bus messages seen",
        )
    )
    print_tables(res)
    for kind, prof in state.get("profiles", {}).items():
        if not prof.get("main_thread_samples"):
            continue
        say("")
        say(
            f"py-spy, {kind} event-loop thread: busy {prof['main_busy_ms_per_turn']} ms per turn"
            f" (500 Hz, running samples only; includes the other turns' idle-time work, e.g."
            f" the gateway's media); inclusive, % of its busy samples:"
        )
        for name, pct in prof["main_top_inclusive_pct"]:
            say(f"  {pct:5.1f}  {name}")
        say(f"  raw stacks: {prof['raw']}")
    for path in report.write_json(record, args.out, run.stamp, name="bus_overhead"):
        say(f"wrote {shown(path)}")
    try:
        title = run.plot_title("bus overhead per hop, fake engines")
        png = draw(res, state.get("raw") or {}, title, args.out / "bus_overhead-latest.png")
        say(f"wrote {shown(png)}")
    except ImportError as exc:
        say(f"no plot ({exc}): pip install -e '.[bench]'")
    if state["errors"]:
        say(f"\n{len(state['errors'])} failed turns (all in the JSON)")


if __name__ == "__main__":
    sys.exit(main())
