"""A lighter client than harness/voice_client's, for bench/scale_client.py's simulated users.

They share the cores with the services they measure, so they do as little as a client can: the
microphone sends Opus packets encoded once at start-up (`EncodedSpeaker`; aiortc sends an
av.Packet from a track as it is, without its per-frame encode in a thread), and received audio
is reduced at once to (arrival time, audible?, wire time) (`LightClient`) instead of being
resampled and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from harness.voice_client import AUDIBLE_RMS, FRAME, RATE, Pacer, VoiceClient, to_48k

from . import wire_clock


def audible(pcm: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > AUDIBLE_RMS


@dataclass
class EncodedClip:
    text: str
    packets: list[tuple[bytes, bool]]  # (Opus payload of 20 ms, audible?)


def encode_clip(text: str, pcm: np.ndarray, rate: int) -> EncodedClip:
    encoder = OpusEncoder()
    pcm48 = to_48k(pcm, rate)
    pcm48 = np.concatenate([pcm48, np.zeros((-len(pcm48)) % FRAME, dtype=np.int16)])
    packets: list[tuple[bytes, bool]] = []
    for i in range(0, len(pcm48), FRAME):
        chunk = pcm48[i : i + FRAME]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i
        frame.time_base = fractions.Fraction(1, RATE)
        payloads, _ = encoder.encode(frame)
        packets += [(p, audible(chunk)) for p in payloads]
    return EncodedClip(text, packets)


class EncodedSpeaker(MediaStreamTrack):
    """Microphone stand-in sending pre-encoded Opus packets, paced at 20 ms (with `dtx`, silence
    as Opus DTX: see harness/voice_client.Pacer); the same interface as
    harness/voice_client.SpeakerTrack (`done`, `last_audible_sent`, `first_audible_sent`)."""

    kind = "audio"

    def __init__(self, silence: bytes, dtx: bool = False) -> None:
        super().__init__()
        self.silence = silence
        self.queue: list[tuple[bytes, bool]] = []
        self.pacer = Pacer(dtx)
        self.last_audible_sent: float | None = None
        self.first_audible_sent: float | None = None
        self.done = asyncio.Event()
        self.done.set()

    def play_encoded(self, clip: EncodedClip) -> None:
        self.queue = list(reversed(clip.packets))  # pop() from the end
        self.last_audible_sent = self.first_audible_sent = None
        self.done.clear()
        self.pacer.wake()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self.pacer.due()
        if self.queue:
            payload, loud = self.queue.pop()
            if loud:
                now = time.monotonic()
                self.last_audible_sent = now
                if self.first_audible_sent is None:
                    self.first_audible_sent = now
        else:
            payload, loud = self.silence, False
            if not self.done.is_set():
                self.done.set()
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = fractions.Fraction(1, RATE)
        self.pacer.sent(silent=not self.queue)
        return packet


@dataclass
class Heard:
    t: float  # time.monotonic() when the decoded frame reached the recorder
    loud: bool
    wire: float | None  # time.monotonic() of its RTP packet's kernel receive stamp


class LightClient(VoiceClient):
    """VoiceClient whose recorder keeps only (arrival time, audible?) per reply frame."""

    async def _record(self, track: MediaStreamTrack) -> None:
        ssrc: int | None = None  # the reply stream's, for its packets' kernel stamps
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if ssrc is None:
                    ssrc = self._remote_ssrc()
                assert isinstance(frame, av.AudioFrame)
                a = frame.to_ndarray()  # packed s16: shape (1, samples * channels)
                ch = len(frame.layout.channels)
                x = a[0, ::ch].astype(np.float32)
                loud = float(np.sqrt(np.mean(x * x))) > AUDIBLE_RMS
                wire = wire_clock.take(ssrc, frame.pts)
                self.audio.append(Heard(now, loud, wire))  # type: ignore[arg-type]

    def _remote_ssrc(self) -> int | None:
        if self.pc is None:
            return None
        for receiver in self.pc.getReceivers():
            for source in receiver.getSynchronizationSources():
                return int(source.source)
        return None
