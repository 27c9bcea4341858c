"""Turn taking, section 5: a speakerphone. A client that cancels no echo itself (a phone on
speaker: `echo_cancellation: true` in its offer, so the gateway's AEC3 takes the echo out) in a
room (harness/room.py: the reply it receives comes back into its microphone 50-300 ms later,
-6 to -12 dB, through a reverberant room, with a drifting clock and room noise; Opus both ways).
A room is drawn per session from a fixed seed, the same rooms for both modes.

`echo_turn`: a short story asked for, its reply left to play to its end with nobody speaking.
Interrupted by its own echo: its reply.done says interrupted, or a voice transcript.final of
another turn came while it played or within SETTLE_S after (the echo's tail heard as a turn).
Paused: the gateway's own account in reply.done (longest_pause_ms, paused_ms); a pause over
PAUSE_MS is one a listener hears. `talker_turn`: a person speaking over the reply, the room on
(scenarios.barge_in_turn): detected or not, and how soon the reply's audio stopped.
"""

from __future__ import annotations

import asyncio
import random
import time

from harness.room import EchoPath, RoomParams
from harness.voice_client import VoiceClient

from .scenarios import (
    Clip,
    Sessions,
    barge_in_turn,
    reply_done,
    voice_finals,
    voice_turn,
    wind_down,
)
from .turn_log import Record, check, fmt

SPEAKERPHONE = {
    "name": "bench-speakerphone",
    "system_prompt": "You are a storyteller. Always answer with a short story of three "
    "sentences in English.",
    "llm": {"temperature": 0.0, "max_tokens": 48},
}
ROOM_SEED = "speakerphone"
SETTLE_S = 2.5  # after the reply: the echo's tail, an end-of-turn silence and an ASR pass
PAUSE_MS = 100  # a pause of the reply longer than this is heard
MIN_REPLY_S = 4.0  # a reply with less audio than this does not test the echo: asked again


class SpeakerphoneSessions(Sessions):
    """Sessions of a client in a room, the gateway cancelling its echo. The n-th session of
    `part` gets the same room in every mode and every run."""

    def __init__(
        self, base_url: str, agent_id: str, per_session: int, part: str, seed: str = ROOM_SEED
    ) -> None:
        super().__init__(base_url, agent_id, per_session)
        self.part = part
        self.seed = seed

    async def open(self) -> VoiceClient:
        room = RoomParams.draw(random.Random(f"{self.seed}|{self.part}|{self.opened}"))
        client = VoiceClient(self.base_url, room=EchoPath(room))
        await client.create_session(self.agent_id)
        await client.connect_events()
        await client.connect_media(echo_cancellation=True)
        return client


async def echo_turn(client: VoiceClient, request: Clip) -> Record:
    """`request` spoken; its reply plays to its end while its echo comes back in the
    microphone. What the echo did to it (see the module)."""
    assert client.room is not None
    t0 = time.monotonic()
    replies_before = sum(1 for _, e in client.events if e.get("type") == "reply.done")
    rec = await voice_turn(client, request)  # ends once the reply is over and the agent listens
    tid = rec["turn_id"]
    done = reply_done(client, tid, t0) or {}
    others: list[str] = []
    seen = {tid}
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        for _, e in voice_finals(client, t0):
            if e["turn_id"] not in seen:  # the echo taken for the user: stop what it started
                seen.add(e["turn_id"])
                others.append(e["text"])
                await wind_down(client, e["turn_id"], t0)
                deadline = time.monotonic() + SETTLE_S
        await asyncio.sleep(0.05)
    sign = ""
    if done.get("interrupted"):
        sign = "reply.done interrupted"
    elif others:
        sign = f"a new turn: transcript.final {others[0]!r}"
    longest = done.get("longest_pause_ms")
    rec.update(
        room=client.room.params.fields(),
        reply_of_session=replies_before + 1,
        interrupted_by_echo=bool(sign),
        echo_sign=sign or None,
        echo_finals=others,
        paused_ms=done.get("paused_ms"),
        longest_pause_ms=longest,
        pauses=done.get("pauses"),
        paused_over_100ms=None if longest is None else longest > PAUSE_MS,
    )
    if not sign and (rec.get("reply_audio_s") or 0.0) < MIN_REPLY_S:
        rec["not_measured"] = (
            f"the reply had {rec.get('reply_audio_s')} s of audio, under {MIN_REPLY_S} s: "
            f"{rec['reply'][:60]!r}"
        )
    return rec


async def talker_turn(client: VoiceClient, request: Clip, stop: Clip, delay: float) -> Record:
    """A person speaking `stop` over the reply to `request`, `delay` s into its audio, its echo
    still coming back."""
    assert client.room is not None
    rec = await barge_in_turn(client, request, stop, delay)
    rec["room"] = client.room.params.fields()
    return rec


def echo_problems(rec: Record) -> list[str]:
    if "error" in rec or "not_measured" in rec:
        return check("speakerphone", rec)
    out = []
    if rec["interrupted_by_echo"]:
        out.append(f"interrupted by its own echo: {rec['echo_sign']}")
    if rec["longest_pause_ms"] is None:
        out.append("reply.done carries no pause figures (the gateway's playback.done)")
    elif rec["paused_over_100ms"]:
        out.append(
            f"the reply paused {rec['longest_pause_ms']:.0f} ms ({rec['pauses']} pauses, "
            f"{rec['paused_ms']:.0f} ms in all) for its own echo"
        )
    return out


def echo_line(r: Record) -> str:
    room = r["room"]
    what = f"ECHO INTERRUPTED ({r['echo_sign']})" if r["interrupted_by_echo"] else "played out"
    return (
        f"{r['mode']:<8} {what}, longest pause {fmt(r['longest_pause_ms'])} ms "
        f"({r['pauses']} pauses), reply {r['reply_audio_s']} s, #{r['reply_of_session']} of "
        f"its session | room {room['delay_ms']:.0f} ms {room['gain_db']:.1f} dB RT60 "
        f"{room['rt60_s']:.2f} s {room['drift_ppm']:+.0f} ppm"
    )


def talker_line(r: Record) -> str:
    return (
        f"{r['mode']:<8} {r['interruption']!r}: detected={r['interrupted']}, stop "
        f"{fmt(r['barge_in_stop_ms'])} ms | heard as {r.get('interruption_transcript', '')!r}"
        f" | room {r['room']['delay_ms']:.0f} ms {r['room']['gain_db']:.1f} dB"
    )
