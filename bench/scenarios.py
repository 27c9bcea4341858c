"""The three kinds of measured turn, driven through harness/voice_client.VoiceClient over real
WebRTC: a spoken question, a barge-in over a long spoken reply, and a typed question.

All client-side times are `time.monotonic()` seconds of this process: the speaker track stamps
the frames it sends, the recorder the frames it receives, the event reader the events. Stage
figures come from the session service's `turn.metrics` event (server wall clock differences).
Each function returns one record (a dict of figures and context); it raises on a timeout, and
leaves the session idle (agent listening) when it returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from harness.audio import active_bounds_ms, read_wav, speak_wav
from harness.voice_client import VoiceClient

QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "At what temperature does water boil?",
    "Which ocean is the largest?",
    "What language is spoken in Brazil?",
    "How many minutes are in an hour?",
)
STORY_PROMPTS = (
    "Tell me a story about a brave knight.",
    "Tell me a long story about a dragon.",
    "Tell me a story about a little robot.",
    "Tell me a story about a pirate ship.",
    "Tell me a story about a lost puppy.",
)
INTERRUPTIONS = (
    "Stop, wait a moment please.",
    "Hold on, stop there.",
    "Wait, I have a question.",
    "Sorry, please stop talking.",
    "Excuse me, one second.",
)
# Seconds of audible reply before the interruption is spoken, cycled: lands at different points.
BARGE_DELAYS = (1.0, 1.5, 2.0, 2.5, 3.0)

PLAIN = {
    "name": "bench-plain",
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 60},
}
STORYTELLER = {
    "name": "bench-storyteller",
    "system_prompt": "You are a storyteller. Always answer with a long story in English.",
    "llm": {"temperature": 0.0, "max_tokens": 200},
}

SILENCE_GAP_S = 0.5  # a longer run of silent received frames ends a reply's audio


@dataclass(frozen=True)
class Clip:
    text: str
    pcm: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate


def clip(text: str) -> Clip:
    """`text` spoken by the Piper voice (cached WAV), trimmed to its audible part."""
    pcm, rate = read_wav(speak_wav(text))
    start, end = active_bounds_ms(pcm, rate)
    return Clip(text, pcm[int(start * rate / 1000) : int(end * rate / 1000)], rate)


async def register_agent(base_url: str, config: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        r = await c.post("/v1/agents", json=config)
        r.raise_for_status()
        return str(r.json()["agent_id"])


class Sessions:
    """A VoiceClient (events + WebRTC) for each turn, a fresh session every `per_session` turns,
    so the conversation history, and with it the prompt, stays short."""

    def __init__(self, base_url: str, agent_id: str, per_session: int) -> None:
        self.base_url = base_url
        self.agent_id = agent_id
        self.per_session = max(1, per_session)
        self.client: VoiceClient | None = None
        self.used = 0
        self.opened = 0

    async def open(self) -> VoiceClient:
        """A new session, its events and its media."""
        client = VoiceClient(self.base_url)
        await client.create_session(self.agent_id)
        await client.connect_events()
        await client.connect_media()
        return client

    async def next(self) -> VoiceClient:
        if self.client is None or self.used >= self.per_session:
            await self.close()
            client = await self.open()
            await asyncio.sleep(0.3)  # the reply track's first frames
            self.client, self.used = client, 0
            self.opened += 1
        self.used += 1
        return self.client

    async def discard(self) -> None:
        """After a failed turn: the next turn starts on a fresh session."""
        await self.close()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(TimeoutError):  # never hang the run's end on a close
                await asyncio.wait_for(client.close(), 5.0)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def _stages(metrics: dict[str, Any], v2v_ms: float | None) -> dict[str, Any]:
    """The server's stage figures, what they leave unexplained of first_audio_ms, and what the
    transport adds on top of it (voice to voice minus first_audio_ms)."""
    keys = (
        "end_of_turn_ms",
        "asr_ms",
        "asr_wait_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "first_audio_ms",
        "first_delta_ms",
        "llm_tokens_per_s",
        "total_ms",
    )
    out: dict[str, Any] = {k: metrics.get(k) for k in keys}
    first = metrics.get("first_audio_ms")
    eot = metrics.get("end_of_turn_ms")
    # The path after the end-of-turn silence: what of ASR, LLM and TTS the speculative start
    # (at the first pause of the silence) did not hide inside it.
    out["after_eot_ms"] = round(first - eot, 1) if first is not None and eot is not None else None
    out["transport_ms"] = (
        round(v2v_ms - first, 1) if first is not None and v2v_ms is not None else None
    )
    return out


async def _finish(
    client: VoiceClient, turn_id: str, after: float
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    t_done, done = await client.wait_event("reply.done", 120, after=after, turn_id=turn_id)
    _, metrics = await client.wait_event("turn.metrics", 15, after=after, turn_id=turn_id)
    await client.wait_event("agent.state", 15, after=after, state="listening", turn_id=turn_id)
    return t_done, done, metrics


def voice_finals(client: VoiceClient, after: float) -> list[tuple[float, dict[str, Any]]]:
    return [
        (t, e)
        for t, e in client.events
        if t >= after and e.get("type") == "transcript.final" and e.get("source") == "voice"
    ]


async def wind_down(client: VoiceClient, turn_id: str, after: float) -> None:
    """Stop turn `turn_id`'s reply (once under way) with the client's interrupt command and
    wait until the agent listens: its reply is not part of the figures."""
    if reply_done(client, turn_id, after) is None:
        with contextlib.suppress(TimeoutError):
            await client.wait_event(
                "agent.state", 60, after=after, state="speaking", turn_id=turn_id
            )
        await client.send({"type": "interrupt"})
    await _finish(client, turn_id, after)


def reply_done(client: VoiceClient, turn_id: str, after: float) -> dict[str, Any] | None:
    return next(
        (
            e
            for t, e in client.events
            if t >= after and e.get("type") == "reply.done" and e.get("turn_id") == turn_id
        ),
        None,
    )


def _reply_audio_s(client: VoiceClient, t0: float, t1: float) -> float:
    return round(sum(len(r.pcm) for r in client.audio if t0 <= r.t <= t1 and r.audible) / 48000, 2)


async def voice_turn(client: VoiceClient, question: Clip) -> dict[str, Any]:
    t_play = time.monotonic()
    client.speaker.play(question.pcm, question.rate)
    await client.speaker.done.wait()
    t_end = client.speaker.last_audible_sent
    _, final = await client.wait_event("transcript.final", 30, after=t_play, source="voice")
    tid = final["turn_id"]
    t_done, done, metrics = await _finish(client, tid, t_play)
    t_speaking = next(
        (
            t
            for t, e in client.events
            if t >= t_play
            and e.get("type") == "agent.state"
            and e.get("state") == "speaking"
            and e.get("turn_id") == tid
        ),
        None,
    )
    first = client.first_audible_after(t_end) if t_end is not None else None
    if first is not None and first > t_done + 2.0:
        first = None  # not this reply's audio
    v2v = _ms(first - t_end) if first is not None and t_end is not None else None
    wall = time.time() - time.monotonic()  # for bench/timeline.py: the tap stamps wall time
    return {
        "question": question.text,
        "question_s": round(question.seconds, 2),
        "turn_id": tid,
        "reply_id": done.get("reply_id"),
        "t_end_wall": round(t_end + wall, 6) if t_end is not None else None,
        "t_received_wall": round(first + wall, 6) if first is not None else None,
        "transcript": final["text"],
        "reply": done["text"],
        "interrupted": done["interrupted"],
        "voice_to_voice_ms": v2v,
        **_stages(metrics, v2v),
        "speaking_event_to_first_audio_ms": _ms(first - t_speaking)
        if first is not None and t_speaking is not None
        else None,
        "reply_audio_s": _reply_audio_s(client, t_end or t_play, t_done + 1.0),
    }


def reply_audio_stop(client: VoiceClient, t_barge: float, t_bound: float) -> float | None:
    """Time of the last audible reply frame received at or after `t_barge`, before the first
    silence longer than SILENCE_GAP_S (and before `t_bound`, the next reply). None when no
    audible frame arrived within SILENCE_GAP_S of the barge-in."""
    last = t_barge
    found: float | None = None
    for r in client.audio:
        if r.t < t_barge:
            continue
        if r.t >= t_bound:
            break
        if r.audible:
            if r.t - last > SILENCE_GAP_S:
                break
            last = found = r.t
    return found


async def _audible_now(client: VoiceClient, within: float, wait: float) -> bool:
    """Wait up to `wait` s for a reply frame received less than `within` s ago to be audible."""
    deadline = time.monotonic() + wait
    while True:
        now = time.monotonic()
        recent = [r for r in client.audio[-10:] if now - r.t <= within]
        if any(r.audible for r in recent):
            return True
        if now > deadline:
            return False
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class StoryPlaying:
    """A story reply under way: its turn, when it was asked for, when the question's audio
    ended, and when its first audible reply frame arrived."""

    turn_id: str
    t_play: float
    t_q_end: float
    t_first: float


async def story_playing(
    client: VoiceClient, story: Clip, delay: float, rec: dict[str, Any]
) -> StoryPlaying | None:
    """Ask for `story` and let `delay` s of its reply's audio play: the moment to speak over it.
    Sets rec's voice_to_voice_ms and audible_at_barge_in. When the reply has already ended
    there is nothing to speak over: None, with rec's not_measured saying so (the caller tries
    another story), and the session idle."""
    t_play = time.monotonic()
    client.speaker.play(story.pcm, story.rate)
    _, final = await client.wait_event("transcript.final", 30, after=t_play, source="voice")
    tid = final["turn_id"]
    await client.speaker.done.wait()
    t_q_end = client.speaker.last_audible_sent or t_play
    deadline = time.monotonic() + 90
    while (t_first := client.first_audible_after(t_q_end)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the story reply's audio never arrived")
        await asyncio.sleep(0.01)
    rec["voice_to_voice_ms"] = _ms(t_first - t_q_end)
    await asyncio.sleep(delay)
    rec["audible_at_barge_in"] = await _audible_now(client, within=0.05, wait=2.0)
    ended = [
        t for t, e in client.events if e.get("type") == "reply.done" and e.get("turn_id") == tid
    ]
    if ended:
        _, done, _ = await _finish(client, tid, t_play)
        rec.update(
            interrupted=False,
            reply=done["text"],
            spoken_text=done["spoken_text"],
            not_measured=f"the reply ended {ended[0] - t_first:.1f} s after its audio began,"
            f" before the barge-in ({len(done['text'].split())} words)",
        )
        return None
    return StoryPlaying(tid, t_play, t_q_end, t_first)


async def barge_in_turn(
    client: VoiceClient, story: Clip, stop: Clip, delay: float
) -> dict[str, Any]:
    rec: dict[str, Any] = {"question": story.text, "interruption": stop.text, "delay_s": delay}
    playing = await story_playing(client, story, delay, rec)
    if playing is None:
        return rec
    tid, t_play, t_q_end = playing.turn_id, playing.t_play, playing.t_q_end

    t_stop_play = time.monotonic()
    client.speaker.play(stop.pcm, stop.rate)
    while client.speaker.first_audible_sent is None:
        await asyncio.sleep(0.002)
    t_barge = client.speaker.first_audible_sent
    t_rdone, done = await client.wait_event("reply.done", 30, after=t_play, turn_id=tid)
    rec.update(
        interrupted=done["interrupted"],
        reply=done["text"],
        spoken_text=done["spoken_text"],
        barge_in_reply_done_ms=_ms(t_rdone - t_barge),
    )
    await client.wait_event("agent.state", 15, after=t_play, state="listening", turn_id=tid)

    # The interruption is a turn of its own, answered with another story: let its reply start
    # (that bounds the old reply's audio), then stop it with the client's interrupt command.
    t_bound = time.monotonic() + 60
    try:
        _, final2 = await client.wait_event(
            "transcript.final", 20, after=t_stop_play, source="voice"
        )
        rec["interruption_transcript"] = final2["text"]
        t_bound, _ = await client.wait_event(
            "agent.state", 60, after=t_stop_play, state="speaking", turn_id=final2["turn_id"]
        )
    except TimeoutError as exc:
        final2 = None
        rec["note"] = f"the interruption started no answered turn: {exc}"
        t_bound = time.monotonic()
    t_last = reply_audio_stop(client, t_barge, t_bound)
    rec["barge_in_stop_ms"] = _ms(t_last - t_barge) if t_last is not None else None
    rec["reply_audio_s"] = _reply_audio_s(client, t_q_end, t_barge)
    if final2 is not None:
        await client.send({"type": "interrupt"})
        await _finish(client, final2["turn_id"], t_stop_play)
    return rec


async def text_turn(client: VoiceClient, question: str) -> dict[str, Any]:
    t0 = time.monotonic()
    await client.send({"type": "user.text", "text": question})
    _, final = await client.wait_event("transcript.final", 15, after=t0, source="text")
    tid = final["turn_id"]
    t_delta, _ = await client.wait_event("reply.delta", 90, after=t0, turn_id=tid)
    t_done, done, metrics = await _finish(client, tid, t0)
    first = client.first_audible_after(t0)
    if first is not None and first > t_done + 2.0:
        first = None
    return {
        "question": question,
        "reply": done["text"],
        "interrupted": done["interrupted"],
        "text_first_delta_ms": _ms(t_delta - t0),
        "text_first_audio_ms": _ms(first - t0) if first is not None else None,
        "server_first_delta_ms": metrics.get("first_delta_ms"),
        "server_first_audio_ms": metrics.get("first_audio_ms"),
        "llm_first_token_ms": metrics.get("llm_first_token_ms"),
        "tts_first_audio_ms": metrics.get("tts_first_audio_ms"),
        "reply_audio_s": _reply_audio_s(client, t0, t_done + 1.0),
    }
