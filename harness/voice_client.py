"""A real client of the assistant, for tests and benchmarks: HTTP session, event WebSocket, and a
WebRTC peer (aiortc) that speaks WAV audio and records the reply audio it receives. With a
`room` (harness/room.py) it is a phone on speaker: the reply it receives comes back into its
microphone, mixed with what it speaks.

Times are `time.monotonic()` seconds, so the sender's "last audible frame sent" and the receiver's
"first audible frame received" are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.gateway.webrtc import set_jitter_prefetch

from .room import EchoPath

RATE = 48000
FRAME = 960
AUDIBLE_RMS = 300.0  # PCM16 RMS above which a 20 ms frame counts as audible


def to_48k(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return pcm.astype(np.int16)
    res = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(
        pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(out).astype(np.int16)


# Opus DTX as a browser sends it when the answer asks for it (the gateway's does): after
# speech, 200 ms of ordinary frames (libopus's hangover), then one frame every 400 ms.
DTX_HANGOVER = 10
DTX_EVERY = 20


class Pacer:
    """When a microphone stand-in's next 20 ms frame is due, and its pts. With `dtx`, silence
    goes as Opus DTX: DTX_HANGOVER frames, then one frame in DTX_EVERY; `wake()` (speech to
    send) ends a DTX wait at once."""

    def __init__(self, dtx: bool = False) -> None:
        self.dtx = dtx
        self._start: float | None = None
        self._pts = 0
        self._last = -FRAME
        self._quiet = 0  # silent frames since the last speech
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def due(self) -> int:
        """Wait until the next frame is due; its pts."""
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        if self._wake.is_set():  # speech starts now, not at the next DTX frame
            self._wake.clear()
            now = int((time.monotonic() - self._start) * RATE) // FRAME * FRAME
            self._pts = max(self._last + FRAME, now)
            self._quiet = 0
        self._last = self._pts
        return self._pts

    def sent(self, silent: bool) -> None:
        """The frame at the last `due()` went out; `silent`: nothing queued behind it."""
        self._quiet = self._quiet + 1 if silent else 0
        in_dtx = self.dtx and self._quiet >= DTX_HANGOVER
        self._pts += FRAME * (DTX_EVERY if in_dtx else 1)


class SpeakerTrack(MediaStreamTrack):
    """Microphone stand-in: paced 20 ms frames of queued audio, silence otherwise (with `dtx`,
    as Opus DTX: see Pacer). With a `room`, what the room adds (the reply's echo, its noise) is
    mixed into every frame; the audible markers time the queued audio alone."""

    kind = "audio"

    def __init__(self, dtx: bool = False, room: EchoPath | None = None) -> None:
        super().__init__()
        self._queue: np.ndarray = np.zeros(0, dtype=np.int16)
        self.pacer = Pacer(dtx)
        self.room = room
        self.last_audible_sent: float | None = None
        self.first_audible_sent: float | None = None
        self.done = asyncio.Event()
        self.done.set()

    def play(self, pcm: np.ndarray, rate: int) -> None:
        self._queue = np.concatenate([self._queue, to_48k(pcm, rate)])
        self.last_audible_sent = None
        self.first_audible_sent = None
        self.done.clear()
        self.pacer.wake()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self.pacer.due()
        chunk = self._queue[:FRAME]
        self._queue = self._queue[FRAME:]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.int16)])
            if not self.done.is_set() and len(self._queue) == 0:
                self.done.set()
        now = time.monotonic()
        if float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) > AUDIBLE_RMS:
            self.last_audible_sent = now
            if self.first_audible_sent is None:
                self.first_audible_sent = now
        silent = len(self._queue) == 0
        if self.room is not None:
            echo = self.room.heard(pts, now)
            silent = silent and float(np.sqrt(np.mean(echo**2))) <= AUDIBLE_RMS
            chunk = np.clip(chunk + echo, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pacer.sent(silent=silent)
        return frame


@dataclass
class Received:
    t: float
    pcm: np.ndarray  # mono int16 at 48 kHz

    @property
    def audible(self) -> bool:
        return float(np.sqrt(np.mean(self.pcm.astype(np.float64) ** 2))) > AUDIBLE_RMS


@dataclass
class VoiceClient:
    base_url: str
    session_id: str = ""
    token: str = ""
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    audio: list[Received] = field(default_factory=list)
    speaker: SpeakerTrack = field(default_factory=SpeakerTrack)
    answer_sdp: str = ""  # the gateway's SDP answer, once media is connected
    pc: RTCPeerConnection | None = None
    # Reply audio frames held before playout. A browser's jitter buffer (NetEQ) holds about two
    # 20 ms frames on a clean local link; aiortc's default of four would add 40 ms a browser
    # does not have.
    jitter_frames: int = 2
    # A phone on speaker: the reply received plays into the room, and the microphone hears it.
    room: EchoPath | None = None
    _ws: Any = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _new_event: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.room is not None:
            self.speaker.room = self.room

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    async def create_session(self, agent_id: str | None = None) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as c:
            r = await c.post("/v1/sessions", json={"agent_id": agent_id} if agent_id else {})
            r.raise_for_status()
            data = r.json()
        self.session_id, self.token = data["session_id"], data["token"]

    async def end_session(self) -> None:
        """DELETE the session: it ends for good (the gateway drops it, its token is revoked)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as c:
            r = await c.delete(f"/v1/sessions/{self.session_id}", headers=self.auth)
            r.raise_for_status()

    async def connect_events(self) -> None:
        ws_url = self.base_url.replace("http", "ws", 1)
        self._ws = await websockets.connect(
            f"{ws_url}/v1/sessions/{self.session_id}/events?token={self.token}"
        )
        self._tasks.append(asyncio.create_task(self._read_events()))

    async def _read_events(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self._ws:
                self.events.append((time.monotonic(), json.loads(raw)))
                self._new_event.set()

    async def connect_media(self, echo_cancellation: bool | None = None) -> None:
        """`echo_cancellation`: ask the gateway to take its reply's echo out of this client's
        microphone (None: the gateway's default)."""
        offer: dict[str, Any] = (
            {} if echo_cancellation is None else {"echo_cancellation": echo_cancellation}
        )
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.speaker)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as c:
            r = await c.post(
                f"/v1/sessions/{self.session_id}/webrtc",
                headers=self.auth,
                json={"sdp": pc.localDescription.sdp, "type": "offer", **offer},
            )
            r.raise_for_status()
            answer = r.json()
        self.answer_sdp = answer["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        for receiver in pc.getReceivers():
            set_jitter_prefetch(receiver, self.jitter_frames)
        for _ in range(200):
            if pc.connectionState == "connected":
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"webrtc did not connect: {pc.connectionState}")

    async def _record(self, track: MediaStreamTrack) -> None:
        res = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                assert isinstance(frame, av.AudioFrame)  # an audio track's frames
                for f in res.resample(frame):
                    pcm = f.to_ndarray().reshape(-1).copy()
                    self.audio.append(Received(now, pcm))
                    if self.room is not None:
                        self.room.play(pcm, now)

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def wait_event(
        self, etype: str, timeout: float = 60.0, after: float = 0.0, **match: Any
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            for t, ev in self.events:
                if (
                    t >= after
                    and ev.get("type") == etype
                    and all(ev.get(k) == v for k, v in match.items())
                ):
                    return t, ev
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e.get("type") for _, e in self.events[-20:]]
                raise TimeoutError(f"no {etype} {match} within {timeout} s; last events: {seen}")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), min(left, 0.2))

    async def turn_ended(self, turn_id: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """When and how turn `turn_id` ended: its `reply.done`, or its `turn_failed` error."""
        deadline = time.monotonic() + timeout
        while True:
            for t, ev in self.events:
                if ev.get("turn_id") == turn_id and (
                    ev.get("type") == "reply.done"
                    or (ev.get("type") == "error" and ev.get("code") == "turn_failed")
                ):
                    return t, ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"turn {turn_id} neither answered nor failed within {timeout} s")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), min(left, 0.2))

    def first_audible_after(self, t: float) -> float | None:
        for r in self.audio:
            if r.t >= t and r.audible:
                return r.t
        return None

    def last_audible(self) -> float | None:
        for r in reversed(self.audio):
            if r.audible:
                return r.t
        return None

    def audio_between(self, t0: float, t1: float) -> np.ndarray:
        parts = [r.pcm for r in self.audio if t0 <= r.t <= t1]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self.pc is not None:
            await self.pc.close()
