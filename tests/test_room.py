"""The speakerphone's room (harness/room.py), the echo the turn-taking benchmark puts in a
client's microphone.

Invariants protected: the echo comes out as configured, measured by cross-correlation against
what was played: `delay_ms` later, `gain_db` down, its delay moving by `drift_ppm` as the
microphone's clock runs on; frames that come a little late play on without a gap, and a reply
after a silence is heard `delay_ms` after it came. The room's response decays by 60 dB in
`rt60_s`, its tail `tail_db` against the direct path. The client's speech markers time its
scripted speech only, never the echo mixed in with it.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

from harness.room import FRAME, RATE, EchoPath, RoomParams, impulse_response

ROOM = RoomParams(
    delay_ms=120.0,
    gain_db=-9.0,
    rt60_s=0.3,
    tail_db=-3.0,
    drift_ppm=200.0,
    noise_rms=30.0,
    seed=5,
)


def lag(mic: np.ndarray, played: np.ndarray, at: int, span: int, most: int) -> int:
    """The lag (samples) at which `mic[at : at + span]` best matches `played` earlier."""
    seg, ref = mic[at : at + span], played[at - most : at + span]
    size = 1 << (len(ref) + span).bit_length()
    conv = np.fft.irfft(np.fft.rfft(seg[::-1], size) * np.fft.rfft(ref, size), size)
    return most - int(np.argmax(conv[span - 1 : span + most]))


def test_the_echo_comes_back_delayed_attenuated_and_drifting_as_configured() -> None:
    """Two bursts of noise below 4 kHz, 2 s apart; frames come up to 15 ms late. The echo's
    lag is the delay less what the drifting microphone clock has gained, at the start, at the
    end of the first burst, and in the second burst; its level is the gain (the response has
    unit energy)."""
    room = EchoPath(ROOM)
    rng = np.random.default_rng(1)
    seconds, bursts = 7.0, ((0.0, 2.0), (4.0, 6.5))
    played = np.zeros(int(seconds * RATE))
    for a, b in bursts:
        played[int(a * RATE) : int(b * RATE)] = rng.normal(0, 3000, int((b - a) * RATE))
    spectrum = np.fft.rfft(played)  # speech's band: what the gateway hears is 16 kHz audio
    spectrum[int(len(spectrum) * 4000 / (RATE / 2)) :] = 0
    played = np.fft.irfft(spectrum, len(played))
    mic: list[np.ndarray] = []
    t0 = 1000.0  # the monotonic clock of a machine up for a while
    for k in range(int(seconds * 50)):
        at = k * FRAME
        frame = played[at : at + FRAME]
        if frame.any():
            late = 0.0 if not played[max(0, at - FRAME) : at].any() else rng.uniform(0, 0.015)
            room.play(frame.astype(np.int16), t0 + k * 0.02 + late)
        mic.append(room.heard(at, t0 + (k + 1) * 0.02))
    heard = np.concatenate(mic)

    d = ROOM.delay_ms * RATE / 1000
    drift = ROOM.drift_ppm * 1e-6
    for at in (int(0.5 * RATE), int(1.5 * RATE), int(5.0 * RATE), int(6.0 * RATE)):
        expected = d - (at + RATE // 4) * drift  # in the middle of the window
        assert abs(lag(heard, played, at, RATE // 2, 20000) - expected) <= 2, at

    level = []
    for a, b in bursts:
        lo, hi = int((a + 0.5) * RATE), int((b - 0.1) * RATE)
        level.append(20 * math.log10(np.std(heard[lo:hi]) / np.std(played[lo:hi])))
    assert level == pytest.approx([ROOM.gain_db] * 2, abs=0.4)
    quiet = heard[int(3.2 * RATE) : int(3.9 * RATE)]  # the tail has died: the room's noise
    assert np.std(quiet) == pytest.approx(ROOM.noise_rms, rel=0.1)


def test_the_room_decays_60_db_in_its_rt60_with_its_tail_below_the_direct_path() -> None:
    for rt60 in (0.2, 0.6):
        p = RoomParams(**{**ROOM.fields(), "rt60_s": rt60, "gain_db": 0.0})
        ir = impulse_response(p)
        assert float(np.sum(ir**2)) == pytest.approx(1.0)
        tail = ir[1:]
        assert 10 * math.log10(np.sum(tail**2) / ir[0] ** 2) == pytest.approx(p.tail_db, abs=0.1)
        # Schroeder's backward integration; the decay from -5 to -25 dB, extrapolated to 60
        edc = 10 * np.log10(np.cumsum(tail[::-1] ** 2)[::-1] / np.sum(tail**2))
        t5, t25 = np.argmax(edc < -5) / RATE, np.argmax(edc < -25) / RATE
        assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.1)


def test_rooms_are_drawn_within_the_ranges_and_the_same_seed_draws_the_same() -> None:
    rooms = [RoomParams.draw(random.Random(i)) for i in range(200)]
    assert all(50 <= r.delay_ms <= 300 and -12 <= r.gain_db <= -6 for r in rooms)
    assert all(0.2 <= r.rt60_s <= 0.6 and 50 <= abs(r.drift_ppm) <= 200 for r in rooms)
    assert RoomParams.draw(random.Random(3)) == RoomParams.draw(random.Random(3))


async def test_the_speech_markers_time_the_scripted_speech_not_the_echo() -> None:
    """A client in a room: the reply's loud echo is in every frame it sends, yet its first and
    last audible frame sent are those of what it was told to say."""
    from harness.voice_client import AUDIBLE_RMS, SpeakerTrack

    room = EchoPath(RoomParams(**{**ROOM.fields(), "gain_db": -6.0, "delay_ms": 50.0}))
    track = SpeakerTrack(room=room)
    loud = np.random.default_rng(2).normal(0, 8000, FRAME * 60).astype(np.int16)
    sent = []
    for k in range(60):
        room.play(loud[k * FRAME : (k + 1) * FRAME], time.monotonic())
        if k == 30:
            track.play(np.full(FRAME * 5, 4000, dtype=np.int16), RATE)
        frame = await track.recv()
        sent.append(np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)))
    assert sum(rms > AUDIBLE_RMS for rms in sent[10:30]) == 20  # the echo went out
    assert track.first_audible_sent is not None and track.last_audible_sent is not None
    assert 0.08 <= track.last_audible_sent - track.first_audible_sent <= 0.12  # 5 frames
