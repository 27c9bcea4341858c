"""A client of bench/pipecat_bot.py that hears and speaks exactly as
harness/voice_client.VoiceClient does for this assistant (the same SpeakerTrack, the same
recorder, the same two-frame jitter buffer, like a browser), and the Pipecat counterparts of
bench/scenarios.py's voice and barge-in turns, measured the same way from the audio sent and
received.

The assistant has an event WebSocket; Pipecat's bot has none here, so the turns are paced by the
events bench/pipecat_bot.py writes to <events-dir>/<pc_id>.jsonl (times on CLOCK_MONOTONIC, the
clock of `time.monotonic()` in this process too), which a task of the client tails into
`client.events`, so VoiceClient.wait_event works unchanged. Events never enter a latency figure:
voice to voice and barge-in are read from the audio, as for the assistant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from harness.voice_client import VoiceClient
from services.gateway.webrtc import set_jitter_prefetch

from .scenarios import Clip, Sessions, _audible_now, _ms, reply_audio_stop

BOT = ("bot.start", "bot.stop")
RTVI_CLIENT_READY = {
    "label": "rtvi-ai",
    "type": "client-ready",
    "id": "client-ready",
    "data": {"version": "2.2.0", "about": {"library": "bench/pipecat_client.py"}},
}


@dataclass
class PipecatClient(VoiceClient):
    """VoiceClient's audio half, signalled the SmallWebRTC way (POST /api/offer)."""

    events_dir: Path = field(default_factory=Path)
    pc_id: str = ""
    rtvi_messages: int = 0  # RTVI messages the bot sent over the data channel

    def _open_data_channel(self, pc: RTCPeerConnection) -> None:
        """What Pipecat's browser client (small-webrtc-transport) does: a "chat" data channel,
        RTVI's client-ready once it opens, and a "ping" every second, the bot's liveness check.
        The bot then sends its RTVI messages (transcripts, speaking events, ...) here, as it
        would to a browser; they are counted, not used."""
        dc = pc.createDataChannel("chat", ordered=True)

        async def keepalive() -> None:
            while True:
                if dc.readyState == "open":
                    dc.send(f"ping-{int(time.time() * 1000)}")
                await asyncio.sleep(1.0)

        @dc.on("open")
        def on_open() -> None:
            dc.send(json.dumps(RTVI_CLIENT_READY))

        @dc.on("message")
        def on_message(message: Any) -> None:
            self.rtvi_messages += 1

        self._tasks.append(asyncio.create_task(keepalive()))

    async def connect(self, agent: dict[str, Any], ready_timeout: float = 60.0) -> None:
        """Offer, answer, ICE; then wait until the bot's pipeline runs ("client.connected")."""
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.speaker)
        self._open_data_channel(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as c:
            r = await c.post(
                "/api/offer",
                json={
                    "sdp": pc.localDescription.sdp,
                    "type": "offer",
                    "request_data": {
                        "system_prompt": agent["system_prompt"],
                        "temperature": agent["llm"]["temperature"],
                        "max_tokens": agent["llm"]["max_tokens"],
                    },
                },
            )
            r.raise_for_status()
            answer = r.json()
        self.pc_id = answer["pc_id"]
        self._tasks.append(asyncio.create_task(self._tail_events()))
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        for receiver in pc.getReceivers():
            set_jitter_prefetch(receiver, self.jitter_frames)
        deadline = time.monotonic() + ready_timeout
        while pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise RuntimeError(f"webrtc did not connect: {pc.connectionState}")
            await asyncio.sleep(0.05)
        await self.wait_event("client.connected", max(1.0, deadline - time.monotonic()))

    async def _tail_events(self) -> None:
        path = self.events_dir / f"{self.pc_id}.jsonl"
        pos = 0
        buf = ""
        while True:
            with contextlib.suppress(FileNotFoundError):
                with path.open() as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                buf += chunk
                *lines, buf = buf.split("\n")
                for line in lines:
                    if line.strip():
                        ev = json.loads(line)
                        self.events.append((float(ev.pop("t")), ev))
                if lines:
                    self._new_event.set()
            await asyncio.sleep(0.02)

    async def wait_idle(self, after: float, timeout: float = 120.0, quiet: float = 0.7) -> float:
        """Wait until the reply begun after `after` is over: the LLM has finished (llm.end) and
        the bot has stopped speaking for `quiet` s (BotStoppedSpeaking also comes in a pause
        between two sentences when the TTS falls behind). Returns that bot.stop's time."""
        deadline = time.monotonic() + timeout
        while True:
            evs = [(t, e["type"]) for t, e in self.events if t >= after]
            bot = [(t, k) for t, k in evs if k in BOT]
            if any(k == "llm.end" for _, k in evs) and bot and bot[-1][1] == "bot.stop":
                if time.monotonic() - bot[-1][0] >= quiet:
                    return bot[-1][0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reply did not end within {timeout} s: {evs[-8:]}")
            await asyncio.sleep(0.05)

    def first_event(self, etype: str, after: float, before: float = float("inf")) -> float | None:
        return next((t for t, e in self.events if e["type"] == etype and after <= t < before), None)

    def timeline(self, t0: float, t1: float = float("inf")) -> list[str]:
        """The bot's events in [t0, t1) as "<ms since t0> <type>", for the record."""
        return [f"{(t - t0) * 1000:.0f} {e['type']}" for t, e in self.events if t0 <= t < t1]

    def texts(self, etype: str, after: float, before: float = float("inf")) -> list[str]:
        return [
            str(e.get("text", ""))
            for t, e in self.events
            if e["type"] == etype and after <= t < before
        ]


class PipecatSessions(Sessions):
    """The Pipecat side of bench/scenarios.Sessions: a connection (a bot pipeline, with its own
    conversation) every `per_session` turns."""

    def __init__(self, base_url: str, events_dir: Path, agent: dict[str, Any], per: int) -> None:
        super().__init__(base_url, "", per)
        self.events_dir = events_dir
        self.agent = agent

    async def open(self) -> PipecatClient:
        client = PipecatClient(self.base_url, events_dir=self.events_dir)
        try:
            await client.connect(self.agent)
        except BaseException:
            await client.close()
            raise
        return client


def _since(t: float | None, t0: float | None) -> float | None:
    return _ms(t - t0) if t is not None and t0 is not None else None


def pipecat_stages(client: PipecatClient, t_end: float, before: float) -> dict[str, Any]:
    """Pipecat's stages as times since the end of the question's speech (the last audible frame
    sent), cumulative: VAD stop, transcript, end of turn (smart turn), LLM first text, first TTS
    audio, bot started speaking (its output transport)."""
    ev = {
        k: client.first_event(k, t_end, before)
        for k in ("vad.stop", "transcript", "user.stop", "llm.first_text", "tts.first_audio")
    }
    bot_start = client.first_event("bot.start", t_end, before)
    return {
        "pc_vad_stop_ms": _since(ev["vad.stop"], t_end),
        "pc_transcript_ms": _since(ev["transcript"], t_end),
        "pc_turn_end_ms": _since(ev["user.stop"], t_end),
        "pc_llm_first_text_ms": _since(ev["llm.first_text"], t_end),
        "pc_tts_first_audio_ms": _since(ev["tts.first_audio"], t_end),
        "pc_bot_started_ms": _since(bot_start, t_end),
    }


async def pipecat_voice_turn(client: PipecatClient, question: Clip) -> dict[str, Any]:
    """As scenarios.voice_turn: speak, wait for the whole reply, measure last audible frame sent
    -> first audible reply frame received."""
    t_play = time.monotonic()
    client.speaker.play(question.pcm, question.rate)
    await client.speaker.done.wait()
    t_end = client.speaker.last_audible_sent or t_play
    t_start, _ = await client.wait_event("bot.start", 60, after=t_end)
    t_stop = await client.wait_idle(t_end)
    first = client.first_audible_after(t_end)
    if first is not None and first > t_stop + 2.0:
        first = None
    v2v = _ms(first - t_end) if first is not None else None
    stages = pipecat_stages(client, t_end, t_stop)
    return {
        "question": question.text,
        "question_s": round(question.seconds, 2),
        "transcript": " ".join(s.strip() for s in client.texts("transcript", t_play, t_stop)),
        "reply": " ".join(client.texts("llm.end", t_play, t_stop + 0.5)),
        "interrupted": client.first_event("interruption", t_start, t_stop) is not None,
        "voice_to_voice_ms": v2v,
        "events_since_end_of_speech": client.timeline(t_end, t_stop + 0.1),
        **stages,
        "pc_transport_ms": round(v2v - stages["pc_bot_started_ms"], 1)
        if v2v is not None and stages["pc_bot_started_ms"] is not None
        else None,
    }


async def pipecat_barge_in_turn(
    client: PipecatClient, story: Clip, stop: Clip, delay: float
) -> dict[str, Any]:
    """As scenarios.barge_in_turn: a story is asked for; `delay` s into its audio the
    interruption is spoken. `barge_in_stop_ms` here is scenarios.reply_audio_stop's reading
    (stop at the first 0.5 s silence); bench/peer_pipecat.py replaces it with the last audible
    frame before `_t_bound` (the reply to the interruption starts), the same rule it applies to
    the assistant, and keeps this one as `barge_in_gap_rule_ms`."""
    rec: dict[str, Any] = {"question": story.text, "interruption": stop.text, "delay_s": delay}
    t_play = time.monotonic()
    client.speaker.play(story.pcm, story.rate)
    await client.speaker.done.wait()
    t_q_end = client.speaker.last_audible_sent or t_play
    deadline = time.monotonic() + 90
    while (t_first := client.first_audible_after(t_q_end)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the story reply's audio never arrived")
        await asyncio.sleep(0.01)
    rec["voice_to_voice_ms"] = _ms(t_first - t_q_end)
    rec["transcript"] = " ".join(s.strip() for s in client.texts("transcript", t_play))
    await asyncio.sleep(delay)
    rec["audible_at_barge_in"] = await _audible_now(client, within=0.05, wait=2.0)
    # Over already: the LLM has finished and the bot's last word on speaking is "stopped".
    bot = [(t, e["type"]) for t, e in client.events if t >= t_q_end and e["type"] in BOT]
    llm_done = client.first_event("llm.end", t_play) is not None
    ended = bot[-1][0] if llm_done and bot and bot[-1][1] == "bot.stop" else None
    if ended is not None:
        reply = client.texts("llm.end", t_play)
        rec.update(
            interrupted=False,
            reply=" ".join(reply),
            not_measured=f"the reply stopped {ended - t_first:.1f} s after its audio began,"
            f" before the barge-in ({len(' '.join(reply).split())} words)",
        )
        return rec

    t_stop_play = time.monotonic()
    client.speaker.play(stop.pcm, stop.rate)
    while client.speaker.first_audible_sent is None:
        await asyncio.sleep(0.002)
    t_barge = client.speaker.first_audible_sent
    await client.speaker.done.wait()
    # The interruption is a turn of its own, answered with another story: the bot.start that
    # follows the end of that user turn bounds the old reply's audio (a bot.start before it is
    # the old reply going on after a pause). The connection is closed after the turn.
    try:
        t_user_stop, _ = await client.wait_event("user.stop", 30, after=t_barge)
        t_bound, _ = await client.wait_event("bot.start", 60, after=t_user_stop)
    except TimeoutError as exc:
        rec["note"] = f"no second reply after the interruption: {exc}"
        t_bound = time.monotonic()
    t_int = client.first_event("interruption", t_stop_play)
    t_last = reply_audio_stop(client, t_barge, t_bound)
    rec.update(
        interrupted=t_int is not None and t_int < t_bound,
        barge_in_stop_ms=_ms(t_last - t_barge) if t_last is not None else None,
        pc_interruption_ms=_since(t_int, t_barge),
        pc_bot_stopped_ms=_since(client.first_event("bot.stop", t_stop_play), t_barge),
        interruption_transcript=" ".join(
            s.strip() for s in client.texts("transcript", t_stop_play, t_bound + 5)
        ),
        reply=" ".join(client.texts("llm.end", t_play, t_bound)),
        events_since_barge_in=client.timeline(t_barge, t_bound + 0.1),
        _t_bound=t_bound,
    )
    return rec
