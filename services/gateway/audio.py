"""Audio conversion at the gateway (PyAV): microphone frames to 16 kHz mono PCM16, reply audio
to 48 kHz mono PCM16, and reply frames to Opus packets.

A reply's conversion state (a resampler per TTS rate, its Opus encoder and the PCM short of a
whole frame) lives in one `ReplyCodec` per reply; `playback.py` decides when to convert.
"""

from __future__ import annotations

import fractions
import functools
from typing import Any

import av
import numpy as np

RATE = 48000  # reply audio as it goes out
FRAME = 960  # 20 ms at 48 kHz
FRAME_BYTES = FRAME * 2
SILENCE = bytes(FRAME_BYTES)  # one frame of silence (compared by identity in playback.py)
TIME_BASE = fractions.Fraction(1, RATE)
OPUS_BITRATE = 32000  # mono speech; aiortc's own encoder sends 96 kb/s of stereo
MIC_RATE = 16000  # what the turn detector and the ASR take


def pcm_frame(data: bytes, pts: int) -> av.AudioFrame:
    """One 20 ms frame of 48 kHz mono PCM16 stamped `pts`."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
    frame.planes[0].update(data)
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def opus_encoder() -> av.AudioCodecContext:
    """A 48 kHz mono Opus encoder of 20 ms frames for synthetic speech: the "audio" mode at
    complexity 5 takes about 95 us a frame from its first frame, where "voip" (aiortc's) at the
    default complexity 10 takes 160-300 us, the most in a new encoder's first seconds (measured
    here on 20 ms frames of speech-like audio)."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = OPUS_BITRATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "audio", "compression_level": "5", "frame_duration": "20"}
    return codec


@functools.cache
def silence_packet() -> bytes:
    """An Opus packet of 20 ms of silence, sent for every frame of silence."""
    encoder = opus_encoder()
    packets = [p for i in range(5) for p in encoder.encode(pcm_frame(SILENCE, i * FRAME))]
    return bytes(packets[-1])


class ReplyCodec:
    """One reply's conversion: TTS audio (PCM16 mono at its own rate) to 48 kHz, and 48 kHz
    PCM to Opus packets of 20 ms, one encoder for the whole reply."""

    def __init__(self) -> None:
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._encoder: Any = None
        self._unencoded = bytearray()  # 48 kHz PCM short of a frame
        self._encoded_frames = 0

    def to_48k(self, pcm: bytes, rate: int) -> bytes:
        if rate == RATE:
            return pcm
        res = self._resamplers.get(rate)
        if res is None:
            res = self._resamplers[rate] = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in res.resample(frame))

    def encode(self, datas: list[bytes], final: bool) -> list[bytes]:
        """The Opus packets of the whole frames that `datas` (48 kHz PCM, in play order)
        complete; `final` pads the reply's last partial frame and encodes it too."""
        for data in datas:
            self._unencoded += data
        if final and len(self._unencoded) % FRAME_BYTES:
            self._unencoded += bytes(FRAME_BYTES - len(self._unencoded) % FRAME_BYTES)
        if self._encoder is None:
            self._encoder = opus_encoder()
            # Prime it with a frame of silence (its packet unused): the receiver's decoder has
            # just decoded silence packets, and an encoder in its initial state would open the
            # reply with two frames decoded far too quietly (CELT predicts each frame's energy
            # from the last).
            self._encoder.encode(pcm_frame(SILENCE, 0))
            self._encoded_frames = 1
        whole = len(self._unencoded) // FRAME_BYTES
        packets: list[bytes] = []
        for i in range(whole):
            chunk = bytes(self._unencoded[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])
            frame = pcm_frame(chunk, self._encoded_frames * FRAME)
            packets += [bytes(p) for p in self._encoder.encode(frame)]
            self._encoded_frames += 1
        del self._unencoded[: whole * FRAME_BYTES]
        if len(packets) != whole:  # libopus gives one packet per 20 ms frame
            raise RuntimeError(f"opus: {len(packets)} packets for {whole} frames")
        return packets


class MicResampler:
    """Decoded microphone frames (any rate and layout) to 16 kHz mono PCM16."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=MIC_RATE)

    def __call__(self, frame: Any) -> bytes:
        return b"".join(
            bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(frame)
        )
