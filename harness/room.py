"""A room for a voice client that cancels no echo itself (a phone on speaker): the reply it
plays comes back into its microphone, as the gateway's echo canceller meets it in the field.

`EchoPath` takes the reply audio as the client receives it (`play`: 48 kHz PCM16 and the time it
came) and gives, for each 20 ms microphone frame the client sends (`heard`), what the room adds
to it: the reply through the room (`impulse_response`: the direct path and an exponentially
decaying reverberant tail), `delay_ms` later, at `gain_db`, read by a sample clock that is off by
`drift_ppm` from the one it was played with, plus a little room noise. Opus both ways is
WebRTC's own. What the client speaks is mixed in by the client (harness/voice_client.py).

The loudspeaker plays at a steady rate: a frame that comes a little late plays right after the
one before it (the client's own jitter buffer), one after a gap (between replies) plays when it
came. The microphone reads with its own clock: frame `pts` reads `pts * (1 + drift)` samples on
from where its first frame read, `delay_ms` plus one frame behind the time the frame goes out;
a reader that fell far from that (the sender stalled) starts again there. It reads between
samples by linear interpolation: below 4 kHz, where speech is, that loses under 0.3 dB, and the
gateway hears 16 kHz audio (up to 8 kHz, at most 1.3 dB lost there). No pytest in here.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RATE = 48000
FRAME = 960  # a 20 ms microphone frame at RATE
LATE_S = 0.06  # a played frame later than this after the one before starts a new stream
RESYNC_S = 0.1  # a microphone read this far from where it should be starts again there
EARLY_S = 0.003  # the first reflection follows the direct path by this much


@dataclass(frozen=True)
class RoomParams:
    """One room, one client: how its reply comes back into its microphone."""

    delay_ms: float  # reply received -> heard by the microphone (playout, air, capture)
    gain_db: float  # the echo's level against the reply as received (the whole response)
    rt60_s: float  # the reverberant tail's time to decay by 60 dB
    tail_db: float  # the tail's energy against the direct path's
    drift_ppm: float  # the microphone's sample clock against the loudspeaker's
    noise_rms: float  # room noise, PCM16 RMS
    seed: int  # the tail's and the noise's random numbers

    @classmethod
    def draw(cls, rng: random.Random) -> RoomParams:
        """A phone on speaker in an ordinary room: 50-300 ms, -6 to -12 dB, RT60 0.2-0.6 s,
        a tail 0 to 6 dB below the direct path, 50-200 ppm either way, a quiet room."""
        return cls(
            delay_ms=round(rng.uniform(50, 300), 1),
            gain_db=round(rng.uniform(-12, -6), 2),
            rt60_s=round(rng.uniform(0.2, 0.6), 3),
            tail_db=round(rng.uniform(-6, 0), 2),
            drift_ppm=round(rng.choice((-1, 1)) * rng.uniform(50, 200), 1),
            noise_rms=round(rng.uniform(20, 60), 1),
            seed=rng.randrange(2**31),
        )

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def impulse_response(p: RoomParams, rate: int = RATE) -> np.ndarray:
    """The room's response, delay aside: 1 at 0 (the direct path), then Gaussian noise under
    an envelope that falls 60 dB in `rt60_s`, from EARLY_S on, `tail_db` against the direct
    path; scaled to unit energy times the gain, so `gain_db` is the echo's level."""
    n = int(p.rt60_s * rate)
    t = np.arange(n) / rate
    tail = np.random.default_rng(p.seed).standard_normal(n) * 10 ** (-3 * t / p.rt60_s)
    tail[: int(EARLY_S * rate)] = 0.0
    tail *= math.sqrt(10 ** (p.tail_db / 10) / float(np.sum(tail**2)))
    tail[0] = 1.0
    return tail * (10 ** (p.gain_db / 20) / math.sqrt(float(np.sum(tail**2))))


class EchoPath:
    """The reply through one room into one microphone, as it plays (see the module)."""

    def __init__(self, params: RoomParams, rate: int = RATE) -> None:
        self.params = params
        self.rate = rate
        self.ir = impulse_response(params, rate)
        self._spectra: dict[int, np.ndarray] = {}  # the response's FFT, by FFT size
        self._noise = np.random.default_rng(params.seed + 1)
        self._ratio = 1.0 + params.drift_ppm * 1e-6
        self._delay = params.delay_ms * rate / 1000
        self._t0: float | None = None  # the time of sample 0 of the loudspeaker's timeline
        self._wet = np.zeros(0)  # the room's response to what played, from sample `_base`
        self._base = 0
        self._end = 0  # where the next frame plays, unless it starts a new stream
        self._offset: float | None = None  # timeline sample read by microphone pts 0

    def _at(self, t: float) -> int:
        """The loudspeaker timeline's sample at time `t` (monotonic seconds)."""
        if self._t0 is None:
            self._t0 = t
        return round((t - self._t0) * self.rate)

    def _convolve(self, x: np.ndarray) -> np.ndarray:
        # numpy's FFT, block by block (scipy is no dependency here; its fftconvolve is this)
        n = len(x) + len(self.ir) - 1
        size = 1 << (n - 1).bit_length()
        if size not in self._spectra:
            self._spectra[size] = np.fft.rfft(self.ir, size)
        return np.fft.irfft(np.fft.rfft(x, size) * self._spectra[size], size)[:n]

    def play(self, pcm: np.ndarray, t: float) -> None:
        """Reply audio that came at time `t` (48 kHz PCM16): the loudspeaker plays it."""
        now = self._at(t)
        at = self._end if self._end >= now - LATE_S * self.rate else now
        at = max(at, self._base)
        wet = self._convolve(pcm.astype(np.float64))
        start, stop = at - self._base, at - self._base + len(wet)
        if stop > len(self._wet):
            self._wet = np.concatenate([self._wet, np.zeros(stop - len(self._wet))])
        self._wet[start:stop] += wet
        self._end = at + len(pcm)

    def heard(self, pts: int, t: float) -> np.ndarray:
        """What the room adds to the microphone frame `pts` (in samples of its clock) that goes
        out at time `t`: FRAME samples, float PCM16 scale."""
        due = self._at(t) - FRAME - self._delay
        if self._offset is None or abs(self._offset + pts * self._ratio - due) > (
            RESYNC_S * self.rate
        ):
            self._offset = due - pts * self._ratio
        read = self._offset + pts * self._ratio - self._base
        where = read + np.arange(FRAME) * self._ratio
        echo = (
            np.interp(where, np.arange(len(self._wet)), self._wet, left=0.0, right=0.0)
            if len(self._wet)
            else np.zeros(FRAME)
        )
        drop = int(read) - self.rate  # keep a second behind the reader
        if drop > 0:
            self._wet = self._wet[drop:]
            self._base += drop
        return echo + self._noise.normal(0.0, self.params.noise_rms, FRAME)
