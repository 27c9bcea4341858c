"""The gateway's echo canceller (services/gateway/echo.py) between replies, without WebRTC.

Invariant protected: a speakerphone's second reply is cancelled from its first words, as its
first was. Between replies the reply track sends nothing but a keep-alive frame a second (its
pts running on); the canceller keeps AEC3's reference in step with the microphone through that
silence, so the next reply meets its echo where the last one did. (Before, the reference
stopped, AEC3 searched the echo's delay again with each new reply and let its first second
through: the benchmark's speakerphone paused or interrupted half of its second replies.)
"""

from __future__ import annotations

import math
import random

import av
import numpy as np
import pytest

from harness.audio import read_wav, speak_wav
from harness.room import FRAME, RATE, EchoPath, RoomParams
from harness.voice_client import to_48k
from services.gateway.echo import EchoCanceller

STEP_S = FRAME / RATE  # the track's 20 ms frame
NETWORK = 2  # steps each way: the client hears a frame, the gateway its microphone


def speech(text: str) -> np.ndarray:
    pcm, rate = read_wav(speak_wav(text))
    return to_48k(pcm, rate)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize(("seed", "pause_s"), [(0, 4), (1, 4), (2, 4), (3, 15)])
def test_a_reply_after_a_pause_is_cancelled_from_its_first_words(seed: int, pause_s: int) -> None:
    """Two replies `pause_s` apart (15 s: past RESTART_AFTER_S, a fresh AEC3) through a drawn
    room (its echo 50-300 ms later, -6 to -12 dB, reverberant, drifting), the track's frames as
    it sends them (every 20 ms while a reply plays, 200 ms of silence after it, then a
    keep-alive a second): in the second reply's first second AEC3 takes at least 15 dB of its
    echo out."""
    first = speech("Once upon a time a little fox lived at the edge of a quiet forest.")
    second = speech("Every morning she ran down to the river to watch the boats go by.")
    gap = np.zeros(RATE * pause_s, dtype=np.int16)
    out = np.concatenate([first, gap, second, np.zeros(RATE, dtype=np.int16)])
    steps = len(out) // FRAME
    begins = (len(first) + len(gap)) // FRAME  # the second reply's first frame
    sent = np.ones(steps, dtype=bool)
    quiet = len(first) // FRAME + 10  # after 200 ms of silence: a keep-alive a second
    sent[quiet:begins] = False
    sent[quiet:begins:50] = True

    now = 0.0
    aec = EchoCanceller(clock=lambda: now)
    room = EchoPath(RoomParams.draw(random.Random(f"speakerphone|echo|{seed}")))
    to_16k = av.AudioResampler(format="s16", layout="mono", rate=16000)
    mics: list[np.ndarray] = []  # the microphone's frames on their way to the gateway
    heard, cleaned = [], []  # by step
    for k in range(steps):
        now = k * STEP_S
        if sent[k]:
            aec.played(out[k * FRAME : (k + 1) * FRAME].astype("<i2").tobytes(), k * FRAME)
        if k >= NETWORK:
            room.play(out[(k - NETWORK) * FRAME : (k - NETWORK + 1) * FRAME], now)
        mic = np.clip(room.heard(k * FRAME, now + STEP_S), -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(mic.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        mics.append(np.concatenate([f.to_ndarray().reshape(-1) for f in to_16k.resample(frame)]))
        if len(mics) > NETWORK:
            pcm = mics.pop(0)
            heard.append(pcm)
            cleaned.append(np.frombuffer(aec.clean(pcm.astype("<i2").tobytes()), dtype="<i2"))

    # The second reply's echo is in the microphone NETWORK steps and the room's delay after its
    # first frame went out: its first second from there.
    at = begins + NETWORK + int(room.params.delay_ms / 1000 / STEP_S)
    window = slice(at, at + int(1 / STEP_S))
    echo = rms(np.concatenate(heard[window]))
    left = rms(np.concatenate(cleaned[window]))
    assert 20 * math.log10(echo / max(left, 1.0)) >= 15, (echo, left, room.params)
