"""The gateway's turn-taking in this process: a `LiveSession` on a real NATS, microphone audio fed
through its input side, and a fake asr replica and a fake session replica written here.

Invariants protected: speech then silence becomes one turn: an ASR claim, the utterance's audio
exactly as it was heard (pre-roll first, nothing lost or repeated), an end request, then
`transcript.final` and a `TurnSubmit` with the transcript. Early in the silence the turn is
submitted speculatively and its reply held; the end of turn confirms it (`TurnConfirmed`, the
audio released), and speaking on retracts it (`Interrupt {reason: retracted}`). Speech over a
playing reply pauses it at once; at its pause, words that take the turn interrupt it
(`Interrupt {reason: barge_in}` with what was heard of the reply) and become the next turn, while
a backchannel ("Uh-huh.") or a blip shorter than `min_interruption_ms` resumes the reply where it
paused, interrupts nothing and starts no turn. A microphone that stops sending (Opus DTX) inside
a turn's trailing silence still ends the turn. Under semantic turn detection (the real end-of-
turn model) a question ends its turn well before the unsure wait, and a sentence that stops on
"for" waits through a thinking pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import nats
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from harness.audio import read_wav, speak_wav
from services.common import subjects
from services.common.messages import (
    AgentConfig,
    AsrClaim,
    AsrControl,
    AsrEnd,
    AsrResult,
    AudioChunkHeader,
    ClaimAck,
    FixedTurnDetection,
    Interrupt,
    SemanticTurnDetection,
    TTSSegment,
    TurnAccepted,
    TurnSubmit,
    decode,
)
from services.gateway.audio import MicResampler
from services.gateway.limits import Limits
from services.gateway.live import LiveSession
from services.gateway.settings import GatewaySettings
from services.gateway.turn_cues import SEMANTIC_WAITS
from services.gateway.vad import SileroVADStream

pytestmark = pytest.mark.asyncio

QUESTION = "What is the capital of France?"
CHUNK = 640  # 20 ms of 16 kHz PCM16, as the WebRTC track hands it over
STORY = "Once upon a time there was a little fox in the woods"


class LoudIsSpeech(SileroVADStream):
    """A VAD for exact timing: a frame with sound in it is speech, digital silence is not."""

    def __init__(self) -> None:  # no model
        pass

    def reset(self) -> None:
        pass

    def prob_pcm16(self, frame: bytes) -> float:
        return 0.9 if int(np.abs(np.frombuffer(frame, dtype="<i2")).max()) > 100 else 0.0


class FakeReplicas:
    """An asr replica and a session replica on the bus, and a record of what the gateway sent."""

    def __init__(self, nc: NATS, sid: str, text: str) -> None:
        self.nc, self.sid, self.text = nc, sid, text
        self.claims: list[AsrClaim] = []
        self.audio: dict[str, bytearray] = {}
        self.ctl: list[tuple[str, AsrControl, bool]] = []  # (turn, control, reuse_speculative)
        self.turns: list[TurnSubmit] = []
        self.interrupts: list[Interrupt] = []
        self.playback: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.prefills = 0
        self.answer_end = asyncio.Event()  # cleared: the final text waits
        self.answer_end.set()
        self.accept_delay = 0.0  # seconds the session takes to accept a turn
        self.log: list[str] = []  # "accepted r1", "turn.confirmed", ... in the order sent
        self.unanswered = 0  # turns it hears but does not answer (the answer lost on the way)

    async def start(self) -> None:
        await self.nc.subscribe(subjects.ASR_CLAIM, cb=self._claim)
        await self.nc.subscribe(subjects.SESSION_TURN, cb=self._turn)
        await self.nc.subscribe(subjects.SESSION_PREFILL, cb=self._prefill)
        await self.nc.subscribe(subjects.interrupt(self.sid), cb=self._interrupt)
        await self.nc.subscribe(subjects.playback(self.sid), cb=self._playback)
        await self.nc.subscribe(subjects.events(self.sid), cb=self._event)
        await self.nc.flush()

    async def _claim(self, msg: Msg) -> None:
        claim = decode(AsrClaim, msg.data)
        self.claims.append(claim)
        self.audio[claim.turn_id] = bytearray()
        # subscribed before the answer: no frame is lost
        await self.nc.subscribe(subjects.asr_utterance(self.sid, claim.turn_id), cb=self._utt)
        await msg.respond(ClaimAck(worker_id="asr-fake", kind="asr").encode())

    async def _utt(self, msg: Msg) -> None:
        parsed = subjects.parse(msg.subject)
        assert parsed is not None and parsed.id is not None
        turn_id = parsed.id
        ctl = AsrControl.decode(msg.headers)
        if ctl is None:
            self.audio[turn_id] += msg.data
            return
        self.ctl.append((turn_id, ctl, decode(AsrEnd, msg.data).reuse_speculative))
        if msg.reply:
            if ctl is AsrControl.END:
                await self.answer_end.wait()
            audio_ms = len(self.audio[turn_id]) / 32
            result = AsrResult(
                turn_id=turn_id, text=self.text, asr_ms=5.0, audio_ms=audio_ms, worker_id="asr"
            )
            await msg.respond(result.encode())

    async def _turn(self, msg: Msg) -> None:
        submit = decode(TurnSubmit, msg.data)
        self.turns.append(submit)
        reply = f"r{len(self.turns)}"
        if self.unanswered:
            self.unanswered -= 1
            return
        await asyncio.sleep(self.accept_delay)
        self.log.append(f"accepted {reply}")
        await msg.respond(
            TurnAccepted(turn_id=submit.turn_id, reply_id=reply, worker_id="session").encode()
        )

    async def _prefill(self, msg: Msg) -> None:
        self.prefills += 1

    async def _interrupt(self, msg: Msg) -> None:
        self.interrupts.append(decode(Interrupt, msg.data))

    async def _playback(self, msg: Msg) -> None:
        self.playback.append(json.loads(msg.data))
        self.log.append(self.playback[-1]["type"])

    async def _event(self, msg: Msg) -> None:
        self.events.append(json.loads(msg.data))

    async def speak(
        self,
        reply_id: str,
        turn_id: str,
        text: str,
        seconds: float,
        pcm: bytes | None = None,
        rate: int = 16000,
    ) -> None:
        """What a tts replica sends for a reply of one segment: `pcm` at `rate`, or a tone."""
        segment = TTSSegment(
            reply_id=reply_id, turn_id=turn_id, index=0, text=text, sample_rate=rate
        )
        await self.nc.publish(subjects.tts_out(self.sid, subjects.TtsPart.CTL), segment.encode())
        headers = AudioChunkHeader(
            reply_id=reply_id, turn_id=turn_id, segment=0, sample_rate=rate
        ).encode()
        audio = pcm if pcm is not None else tone(seconds * 1000)
        for at in range(0, len(audio), 32000):  # chunks as a tts sends them
            await self.nc.publish(
                subjects.tts_out(self.sid, subjects.TtsPart.AUDIO),
                audio[at : at + 32000],
                headers=headers,
            )
        await self.nc.flush()


class FakePeer:
    """The peer connection, connected: someone hears the replies."""

    connectionState = "connected"

    async def close(self) -> None:
        pass


def tone(ms: float, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def silence(ms: float) -> bytes:
    return bytes(int(ms * 32))


async def until(cond: Callable[[], Any], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the gateway")
        await asyncio.sleep(0.005)


async def say(live: LiveSession, pcm: bytes, real_time: bool = False) -> None:
    """Microphone audio through the input side, 20 ms at a time, 4x faster than real time (or
    in real time, where the gateway's own timing matters: a pause judged while it lasts)."""
    t0 = time.monotonic()
    for i, at in enumerate(range(0, len(pcm), CHUNK)):
        assert await live.mic.feed(pcm[at : at + CHUNK])
        if real_time:
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        else:
            await asyncio.sleep(0.005)


FIXED = AgentConfig(min_interruption_ms=150, turn_detection=FixedTurnDetection())
SEMANTIC = AgentConfig(min_interruption_ms=150, turn_detection=SemanticTurnDetection())


@contextlib.asynccontextmanager
async def gateway(
    nats_url: str,
    text: str,
    vad: SileroVADStream | None = None,
    agent: AgentConfig = FIXED,
    **settings: Any,
) -> AsyncIterator[tuple[LiveSession, FakeReplicas]]:
    nc, peer = await nats.connect(nats_url), await nats.connect(nats_url)
    sid = secrets.token_hex(8)
    fake = FakeReplicas(peer, sid, text)
    await fake.start()
    # echo cancellation off unless a test asks: its synthetic speech is the reply's own tone
    settings.setdefault("echo_cancellation", False)
    cfg = GatewaySettings(audio_ms_rate="1000000/second", **settings)
    live = LiveSession(nc, cfg, sid, agent, Limits(cfg), vad=vad)
    live.pc = FakePeer()
    await live.open()
    await nc.flush()
    try:
        yield live, fake
    finally:
        await live.close()
        await nc.close()
        await peer.close()


async def test_speech_then_silence_is_one_turn_with_its_transcript(nats_url: str) -> None:
    speech, _ = read_wav(speak_wav(QUESTION))
    heard = silence(320) + speech.astype("<i2").tobytes() + silence(800)
    async with gateway(nats_url, QUESTION, speculative_turns=False) as (live, fake):
        await say(live, heard)
        await until(lambda: fake.turns)
        await asyncio.sleep(0.05)  # anything more would come now
    assert len(fake.claims) == 1 and len(fake.turns) == 1
    turn_id = fake.claims[0].turn_id
    audio = bytes(fake.audio[turn_id])
    assert len(audio) >= len(speech) * 2 * 0.8 and audio in heard  # all of it, in order, once
    assert fake.ctl[-1] == (turn_id, "end", True)  # the pass started at the pause is reused
    assert {ctl for _, ctl, _ in fake.ctl[:-1]} <= {"peek", "resume"}
    submit = fake.turns[0]
    assert (submit.turn_id, submit.text, submit.source) == (turn_id, QUESTION, "voice")
    assert submit.voice and not submit.speculative
    assert submit.end_of_turn_ms is not None and 450 <= submit.end_of_turn_ms <= 600
    finals = [e for e in fake.events if e["type"] == "transcript.final"]
    assert [(e["turn_id"], e["text"]) for e in finals] == [(turn_id, QUESTION)]


async def test_a_speculative_turn_is_held_then_confirmed_at_the_end_of_turn(nats_url: str) -> None:
    async with gateway(nats_url, "hello there", vad=LoudIsSpeech()) as (live, fake):
        await say(live, tone(600))
        await until(lambda: fake.prefills == 1)  # at speech onset, nothing in flight
        await until(lambda: live.turns.utt is not None and live.turns.utt.ready)
        await say(live, silence(128))  # the pause: peek, then submit at once
        await until(lambda: fake.turns)
        submit = fake.turns[0]
        assert submit.speculative and submit.text == "hello there"
        await fake.speak("r1", submit.turn_id, "Hi!", 0.5)
        await until(lambda: live.out.playing is not None)
        listener = asyncio.create_task(listen(live))
        await asyncio.sleep(0.1)
        pb = live.out.playing
        assert pb is not None and pb.held and not pb.started  # not heard before the end of turn
        assert not [e for e in fake.events if e["type"] == "transcript.final"]
        await say(live, silence(512))
        await until(lambda: any(p["type"] == "turn.confirmed" for p in fake.playback))
        await until(lambda: any(p["type"] == "playback.started" for p in fake.playback))
        assert [e["text"] for e in fake.events if e["type"] == "transcript.final"] == [
            "hello there"
        ]
        await until(lambda: fake.ctl and fake.ctl[-1][1] == "end")
        listener.cancel()
    assert fake.ctl == [(submit.turn_id, "peek", False), (submit.turn_id, "end", True)]
    assert len(fake.turns) == 1 and not fake.interrupts


async def test_speaking_on_after_the_pause_retracts_the_speculative_turn(nats_url: str) -> None:
    async with gateway(nats_url, "hello there", vad=LoudIsSpeech()) as (live, fake):
        await say(live, tone(400))
        await until(lambda: live.turns.utt is not None and live.turns.utt.ready)
        await say(live, silence(128))
        await until(lambda: fake.turns)
        first = fake.turns[0]
        await until(lambda: live.turns.spec is not None and live.turns.spec.reply == "r1")
        await say(live, tone(300))  # the user goes on
        await until(lambda: fake.interrupts)
        intr = fake.interrupts[0]
        assert (intr.reason, intr.reply_id, intr.turn_id) == ("retracted", "r1", first.turn_id)
        await fake.speak("r1", first.turn_id, "Hi!", 0.3)  # late audio of the retracted reply
        await say(live, silence(128))
        await until(lambda: len(fake.turns) == 2)
        await say(live, silence(512))
        await until(lambda: any(p["type"] == "turn.confirmed" for p in fake.playback))
    assert [t.speculative for t in fake.turns] == [True, True]
    assert live.out.playing is None  # the retracted reply never played
    ctls = [ctl for _, ctl, _ in fake.ctl]
    assert ctls == ["peek", "resume", "peek", "end"]


async def test_a_turn_retracted_then_ended_before_the_session_accepts_it_again_is_confirmed_after(
    nats_url: str,
) -> None:
    """Submitted again after a retraction, the turn ends while the session is still accepting
    it: the confirmation waits for that acceptance (a session replica subscribes to it only
    then), instead of going by the retracted submit's."""
    async with gateway(nats_url, "hello there", vad=LoudIsSpeech()) as (live, fake):
        await say(live, tone(400))
        await until(lambda: live.turns.utt is not None and live.turns.utt.ready)
        await say(live, silence(128))
        await until(lambda: live.turns.spec is not None and live.turns.spec.reply == "r1")
        await say(live, tone(300))  # the user goes on: retracted
        await until(lambda: fake.interrupts)
        fake.accept_delay = 0.6
        await say(live, silence(640))  # submitted again, and the end of turn, within the delay
        await until(lambda: "turn.confirmed" in fake.log)
    assert [t.speculative for t in fake.turns] == [True, True]
    assert fake.log.index("accepted r2") < fake.log.index("turn.confirmed"), fake.log
    assert live.active_reply == "r2"


async def test_a_turn_whose_acceptance_got_lost_is_submitted_again_as_a_repeat(
    nats_url: str,
) -> None:
    """No answer came (the NATS server went down with it in flight): the same submission is
    sent again, marked a repeat, so a replica that got the first copy runs it once
    (tests/test_turn_repeats.py)."""
    async with gateway(nats_url, "", claim_timeout_s=0.3) as (live, fake):
        fake.unanswered = 1
        await live.submit_text("What time is it?")
    first, again = fake.turns
    assert again.submission == first.submission and (first.attempt, again.attempt) == (1, 2)
    assert again.model_copy(update={"attempt": 1}) == first
    assert live.active_reply == "r2"
    assert not [e for e in fake.events if e["type"] == "error"], fake.events


async def listen(live: LiveSession) -> None:
    """The peer hearing the replies: it pulls the outgoing track's frames."""
    while True:
        await live.out.sink.recv()


async def _reply_playing(live: LiveSession, fake: FakeReplicas) -> tuple[str, Any]:
    """A typed turn whose reply is playing, with a listener pulling its frames."""
    await live.submit_text("tell me a story")
    turn_id = fake.turns[0].turn_id
    await fake.speak("r1", turn_id, STORY, 3.0)
    await until(lambda: live.out.playing is not None)
    listener = asyncio.create_task(listen(live))
    await until(lambda: any(p["type"] == "playback.started" for p in fake.playback))
    return turn_id, listener


async def test_speech_over_a_reply_pauses_it_then_interrupts_it(nats_url: str) -> None:
    async with gateway(nats_url, "stop please", vad=LoudIsSpeech(), speculative_turns=False) as (
        live,
        fake,
    ):
        turn_id, listener = await _reply_playing(live, fake)
        pb = live.out.playing
        assert pb is not None
        await until(lambda: pb.segments[0].samples_played >= 48000 * 0.6)  # two words heard
        await say(live, tone(96))  # speech for less than min_interruption_ms
        assert live.out.paused and live.out.playing is pb
        await asyncio.sleep(0.05)
        assert not fake.interrupts
        await say(live, tone(160))
        await asyncio.sleep(0.05)
        assert not fake.interrupts and live.out.paused  # the words decide, at the pause
        await say(live, silence(128))
        await until(lambda: fake.interrupts)
        intr = fake.interrupts[0]
        assert (intr.reason, intr.reply_id, intr.turn_id) == ("barge_in", "r1", turn_id)
        assert intr.spoken_text and STORY.startswith(intr.spoken_text)
        assert live.out.playing is None
        await say(live, silence(600))  # the interruption is the next turn
        await until(lambda: len(fake.turns) == 2)
        listener.cancel()
    assert (fake.turns[1].text, fake.turns[1].source) == ("stop please", "voice")
    assert len(fake.interrupts) == 1


async def test_a_backchannel_over_a_reply_resumes_it_and_starts_no_turn(nats_url: str) -> None:
    async with gateway(nats_url, "Uh-huh.", vad=LoudIsSpeech(), speculative_turns=False) as (
        live,
        fake,
    ):
        _, listener = await _reply_playing(live, fake)
        pb = live.out.playing
        assert pb is not None
        await say(live, tone(400))
        assert live.out.paused
        played = pb.segments[0].samples_played
        await say(live, silence(160))  # the pause: its words are a backchannel
        await until(lambda: not live.out.paused)
        assert live.out.playing is pb and pb.segments[0].samples_played >= played
        await say(live, silence(600))
        await asyncio.sleep(0.1)
        listener.cancel()
    assert not fake.interrupts and len(fake.turns) == 1  # nothing cancelled, no turn
    assert [ctl for _, ctl, _ in fake.ctl] == ["peek", "end"]  # heard, then closed
    finals = [e["text"] for e in fake.events if e["type"] == "transcript.final"]
    assert finals == ["tell me a story"]  # the typed turn's only


async def test_a_blip_over_a_reply_resumes_it(nats_url: str) -> None:
    async with gateway(nats_url, "", vad=LoudIsSpeech(), speculative_turns=False) as (live, fake):
        _, listener = await _reply_playing(live, fake)
        pb = live.out.playing
        fake.answer_end.clear()
        await say(live, tone(96))
        assert live.out.paused
        await say(live, silence(600))
        await until(lambda: fake.ctl and fake.ctl[-1][1] == "end")
        # on from where it paused at the end of the speech, not once the ASR has said "noise"
        assert not live.out.paused and live.out.playing is pb
        fake.answer_end.set()
        await asyncio.sleep(0.05)
        assert not live.out.paused and live.out.playing is pb
        listener.cancel()
    assert not fake.interrupts and len(fake.turns) == 1  # the blip was no turn


class DtxTrack:
    """A browser's microphone on Opus DTX: speech, a few silent frames, then nothing."""

    def __init__(self, pcm48: bytes) -> None:
        self.frames: deque[av.AudioFrame] = deque()
        for i, at in enumerate(range(0, len(pcm48), 1920)):
            samples = np.frombuffer(pcm48[at : at + 1920], dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            self.frames.append(frame)
        self.quiet_since: float | None = None
        self.closed = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        if self.frames:
            await asyncio.sleep(0.005)
            return self.frames.popleft()
        if self.quiet_since is None:
            self.quiet_since = time.monotonic()
        await self.closed.wait()
        raise MediaStreamError


async def test_a_microphone_gone_quiet_on_dtx_still_ends_the_turn(nats_url: str) -> None:
    async with gateway(nats_url, "hello", vad=LoudIsSpeech(), speculative_turns=False) as (
        live,
        fake,
    ):
        track = DtxTrack(tone(400, rate=48000) + bytes(100 * 96))  # 100 ms of silence at 48 kHz
        live.spawn(live.consume_track(track, live.pc), "mic")
        await until(lambda: fake.turns)
        assert track.quiet_since is not None
        waited = time.monotonic() - track.quiet_since
        track.closed.set()
        await until(lambda: live.mic_ended)  # the track ended: the session knows
    assert fake.turns[0].text == "hello"
    assert waited < 1.5  # the end-of-turn silence (500 ms) counted on the wall clock


# -- semantic turn detection: the real end-of-turn model, speech of a natural-prosody voice -------
async def test_semantic_a_question_ends_well_before_the_unsure_wait(nats_url: str) -> None:
    speech, _ = read_wav(speak_wav(QUESTION))
    async with gateway(nats_url, QUESTION, agent=SEMANTIC) as (live, fake):
        await say(live, silence(320) + speech.astype("<i2").tobytes() + silence(1400), True)
        await until(lambda: any(p["type"] == "turn.confirmed" for p in fake.playback))
    (submit,) = fake.turns
    assert submit.speculative and submit.text == QUESTION
    confirmed = next(p for p in fake.playback if p["type"] == "turn.confirmed")
    assert confirmed["end_of_turn_ms"] < SEMANTIC_WAITS["auto"].unsure - 400, confirmed


async def test_semantic_a_sentence_that_stops_on_for_waits_through_a_thinking_pause(
    nats_url: str,
) -> None:
    """ "I'd like to book a table for", a 1.2 s pause, then the rest: one turn, not two (the
    fixed window would have ended it in the pause)."""
    first, _ = read_wav(speak_wav("I'd like to book a table for"))
    rest, _ = read_wav(speak_wav("two people tonight."))
    async with gateway(nats_url, "I'd like to book a table for", agent=SEMANTIC) as (live, fake):
        await say(live, silence(320) + first.astype("<i2").tobytes() + silence(1200), True)
        assert live.turns.utt is not None, "the turn ended in the thinking pause"
        await until(lambda: live.turns.detector.window_ms == SEMANTIC_WAITS["auto"].incomplete)
        fake.text = "I'd like to book a table for two people tonight."
        # longer than the longest wait: the turn ends in it whatever the judgement
        await say(
            live, rest.astype("<i2").tobytes() + silence(SEMANTIC_WAITS["auto"].incomplete + 200)
        )
        await until(lambda: any(p["type"] == "turn.confirmed" for p in fake.playback), 5)
    finals = [e["text"] for e in fake.events if e["type"] == "transcript.final"]
    assert finals == ["I'd like to book a table for two people tonight."]
    assert len({t.turn_id for t in fake.turns}) == 1  # submitted twice (retracted once), one turn


# -- its own voice: a client without echo cancellation plays the reply into its microphone ------
async def speakerphone(live: LiveSession, seconds: float, delay_ms: int, gain: float) -> list[bool]:
    """Pull the reply's frames as a peer would and feed each back into the microphone `delay_ms`
    later at `gain`, with a little room noise; returns, per 20 ms, whether the reply was paused."""
    resample = MicResampler()
    line = bytearray(int(delay_ms * 32))  # the echo path's delay, 16 kHz PCM16
    rng = np.random.default_rng(7)
    paused: list[bool] = []
    for _ in range(int(seconds * 50)):
        frame = await live.out.sink.recv()
        assert isinstance(frame, av.AudioFrame)
        line += resample(frame)
        heard = np.frombuffer(bytes(line[:640]), dtype="<i2").astype(np.float64) * gain
        del line[:640]
        heard += rng.normal(0, 30, heard.size)  # the room
        await live.mic.feed(np.clip(heard, -32768, 32767).astype("<i2").tobytes())
        paused.append(live.out.paused)
    return paused


@pytest.mark.parametrize("echo_cancellation", [True, False])
async def test_the_reply_played_back_into_the_microphone_neither_pauses_nor_interrupts_it(
    nats_url: str, echo_cancellation: bool
) -> None:
    """With the echo canceller on, 6 s of the reply coming back 150 ms later at -6 dB is not
    heard as the user; with it off (the control) the same echo pauses the reply."""
    story, rate = read_wav(speak_wav(STORY + ", and she lived happily in the green forest."))
    async with gateway(nats_url, STORY, agent=SEMANTIC, echo_cancellation=echo_cancellation) as (
        live,
        fake,
    ):
        await live.submit_text("tell me a story")
        turn_id = fake.turns[0].turn_id
        await fake.speak("r1", turn_id, STORY, 0, story.astype("<i2").tobytes(), rate)
        await until(lambda: live.out.playing is not None)
        paused = await speakerphone(live, min(6.0, len(story) / rate), 150, 0.5)
    longest = max(
        (len(run) for run in "".join("p" if p else " " for p in paused).split()), default=0
    )
    if echo_cancellation:
        assert not fake.interrupts and len(fake.turns) == 1, fake.interrupts
        # the canceller converging on its first reply may let one blip through, not more
        assert longest * 20 <= 200, f"the reply was paused for {longest * 20} ms by its own echo"
        assert sum(paused) * 20 <= 300, f"paused {sum(paused) * 20} ms in all by its own echo"
    else:
        assert any(paused), "the control: without cancellation the echo should pause the reply"


# -- the agent speaking on its own ----------------------------------------------------------------
async def test_the_agent_greets_an_empty_conversation_when_its_audio_connects(
    nats_url: str,
) -> None:
    greeter = AgentConfig(greeting="Hello! How can I help?", turn_detection=FixedTurnDetection())
    async with gateway(nats_url, "", vad=LoudIsSpeech(), agent=greeter) as (live, fake):
        await asyncio.sleep(0.3)
        assert not fake.turns  # no audio yet: no greeting
        track = DtxTrack(bytes(20 * 96))  # 20 ms of silence, then the microphone goes quiet
        live.spawn(live.consume_track(track, live.pc), "mic")
        await until(lambda: fake.turns)
        track.closed.set()
    (greeting,) = fake.turns
    assert (greeting.source, greeting.text, greeting.voice) == (
        "agent",
        "Hello! How can I help?",
        True,
    )


async def test_nudges_come_after_quiet_at_most_max_in_a_row(nats_url: str) -> None:
    from services.common.messages import IdleNudge, ReplyDone

    nudger = AgentConfig(
        idle_nudge=IdleNudge(after_s=2.0, text="Still there?", max_nudges=2),
        turn_detection=FixedTurnDetection(),
    )

    async def reply_done(turn_id: str) -> None:
        done = ReplyDone(turn_id=turn_id, reply_id="r", text="x", spoken_text="x")
        await fake.nc.publish(subjects.events(live.sid), done.encode())

    async with gateway(nats_url, "", vad=LoudIsSpeech(), agent=nudger) as (live, fake):
        t0 = time.monotonic()
        await until(lambda: fake.turns, 4)
        assert 1.8 <= time.monotonic() - t0 <= 3.0
        assert (fake.turns[0].source, fake.turns[0].text) == ("agent", "Still there?")
        await asyncio.sleep(2.5)
        assert len(fake.turns) == 1  # the nudge is in flight: no quiet, no second one
        await reply_done(fake.turns[0].turn_id)
        await until(lambda: len(fake.turns) == 2, 4)
        await reply_done(fake.turns[1].turn_id)
        await asyncio.sleep(3.0)
        assert len(fake.turns) == 2  # max_nudges in a row
        await live.submit_text("sorry, I'm back")  # the user: the count starts again
        await reply_done(fake.turns[2].turn_id)
        await until(lambda: len(fake.turns) == 4, 4)
    assert [t.source for t in fake.turns] == ["agent", "agent", "text", "agent"]
