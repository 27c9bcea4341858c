"""An experiment, not a fix: the gateway service with two changes applied at start-up, to measure
what they would save before anyone changes services/gateway/.

    python -m bench.gateway_variant          # instead of python -m services.gateway
    bench/run.sh scale --gateway-variant     # the scale benchmark against it

1. No RTP while there is nothing to say: `ReplyAudioTrack.recv` keeps its 20 ms clock but,
   while no reply audio is playing (none, paused, held, or its buffer empty), lets the frame
   time pass without returning a frame, so aiortc encodes, encrypts and sends nothing for an
   idle session (the service today sends 50 Opus frames of silence a second per session). The
   next real frame carries the RTP timestamp of its true time, which a receiver treats like
   Opus DTX (a browser's NetEQ plays the gap as silence). A keep-alive frame of silence is still
   sent every `KEEPALIVE_S`.
2. No Silero pass on digital silence: a 32 ms microphone frame whose peak is below
   `SILENCE_PEAK` (-70 dBFS) gets probability 0 without running the model. A real microphone
   rarely sends such frames (noise suppression can); simulated clients do between turns, so this
   measures the cost of the VAD rather than a realistic saving.

Each change can be switched off (VA_BENCH_VARIANT_QUIET=0, VA_BENCH_VARIANT_VAD_GATE=0).

What its scale figures mean: CPU (idle and talking) and the gateway's /healthz lag are
comparable with the service's. Reply-frame gaps and voice to voice are not quite: aiortc's
receiver in the simulated client holds the last two frames of a reply in its jitter buffer until
the next packet arrives (a browser plays them out on its own clock), so with no packets between
replies those frames arrive with the next reply and show as one long gap at its start.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import time

import av
import numpy as np

from services.gateway import playback, vad

SILENCE_PEAK = 10  # PCM16 peak below which a frame is digital silence (about -70 dBFS)
KEEPALIVE_S = 1.0
TIME_BASE = fractions.Fraction(1, playback.RATE)


async def recv_quiet(self: playback.ReplyAudioTrack) -> av.AudioFrame:
    """ReplyAudioTrack.recv with the same pacing, skipping the frames of silence."""
    if self.readyState != "live":
        raise playback.MediaStreamError
    while True:
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / playback.RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.2:  # fell far behind (loop stall): re-anchor instead of bursting
                self._start = time.monotonic() - self._pts / playback.RATE
        data = self._next_chunk()
        last = getattr(self, "_variant_last_sent", 0.0)
        if data is not playback._SILENCE or time.monotonic() - last >= KEEPALIVE_S:
            break
        self._pts += playback.FRAME  # the frame's time passes; nothing is sent
        if self.readyState != "live":
            raise playback.MediaStreamError
    self._variant_last_sent = time.monotonic()  # type: ignore[attr-defined]
    frame = av.AudioFrame(format="s16", layout="mono", samples=playback.FRAME)
    frame.planes[0].update(data)
    frame.sample_rate = playback.RATE
    frame.pts = self._pts
    frame.time_base = TIME_BASE
    self._pts += playback.FRAME
    self.frames_sent += 1
    return frame


_prob_pcm16 = vad.SileroVADStream.prob_pcm16


def prob_pcm16_gated(self: vad.SileroVADStream, frame: bytes) -> float:
    a = np.frombuffer(frame, dtype="<i2")
    if a.size and int(np.abs(a).max()) < SILENCE_PEAK:
        x = self._x
        x[0, : vad.CONTEXT_SAMPLES] = x[0, -vad.CONTEXT_SAMPLES :]
        x[0, vad.CONTEXT_SAMPLES :] = 0.0
        return 0.0
    return _prob_pcm16(self, frame)


def apply() -> list[str]:
    applied = []
    if os.environ.get("VA_BENCH_VARIANT_QUIET", "1") != "0":
        playback.ReplyAudioTrack.recv = recv_quiet  # type: ignore[method-assign]
        applied.append("no RTP for silence (keep-alive every 1 s)")
    if os.environ.get("VA_BENCH_VARIANT_VAD_GATE", "1") != "0":
        vad.SileroVADStream.prob_pcm16 = prob_pcm16_gated  # type: ignore[method-assign]
        applied.append("no VAD pass on digital silence")
    return applied


if __name__ == "__main__":
    changes = apply()
    print(f"bench.gateway_variant: {', '.join(changes) or 'nothing changed'}", flush=True)
    from services.gateway.main import main

    asyncio.run(main())
