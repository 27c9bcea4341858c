"""The gateway's outgoing audio track and the VAD's digital-silence shortcut, without WebRTC.

Invariants protected: while no reply plays, the track sends nothing but a keep-alive frame a
second, and the RTP clock (pts) still advances in real time, so the next frame carries its true
timestamp; a reply's frames go out every 20 ms without a gap, followed by a tail of silence that
flushes a receiver's jitter buffer; with suppression off, silence is sent all the time. A reply
paused while it plays reports each pause, as long as it was (the truth `reply.done` carries). A VAD
frame of digital silence gives probability 0 without running the model.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import numpy as np
import pytest

from services.gateway.playback import (
    FRAME,
    HANGOVER_S,
    KEEPALIVE_S,
    RATE,
    ReplyAudioTrack,
    ReplyPlayback,
)
from services.gateway.vad import FRAME_SAMPLES, SileroVADStream


async def pull(track: ReplyAudioTrack, seconds: float) -> list[tuple[float, int, bool]]:
    """(arrival time, pts, audible) of every frame the track hands out within `seconds`."""
    out: list[tuple[float, int, bool]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame = await asyncio.wait_for(track.recv(), max(0.001, end - time.monotonic()))
        except TimeoutError:
            break
        pcm = np.frombuffer(bytes(frame.planes[0])[: FRAME * 2], dtype=np.int16)
        out.append((time.monotonic(), int(frame.pts), bool(np.abs(pcm).max() > 0)))
    return out


def tone(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes()


async def test_idle_track_sends_only_keepalives_and_keeps_its_clock() -> None:
    track = ReplyAudioTrack(lambda pb: None, lambda pb: None)
    t0 = time.monotonic()
    frames = await pull(track, 2.5)
    # the first frame, then one a second: not 125
    assert 2 <= len(frames) <= 4, len(frames)
    for (t, pts, loud), (t_prev, pts_prev, _) in zip(frames[1:], frames, strict=False):
        assert not loud
        assert pts - pts_prev == pytest.approx((t - t_prev) * RATE, abs=3 * FRAME)
        assert t - t_prev == pytest.approx(KEEPALIVE_S, abs=0.1)
    assert frames[-1][1] == pytest.approx((frames[-1][0] - t0) * RATE, abs=3 * FRAME)


async def test_an_idle_track_sleeps_until_audio_comes_and_sends_it_at_once() -> None:
    """Idle, the track does not wake every 20 ms to find nothing to send: it sleeps until the
    keep-alive is due or a reply's audio is pushed, and that audio leaves at once (not at the
    next 20 ms tick), stamped with the time it leaves."""
    track = ReplyAudioTrack(lambda pb: None, lambda pb: None)
    looks = 0
    next_chunk = track._next_chunk

    def counted() -> tuple[bytes, bytes | None]:
        nonlocal looks
        looks += 1
        return next_chunk()

    track._next_chunk = counted  # type: ignore[method-assign]
    t0 = time.monotonic()
    await pull(track, 0.05)  # the first keep-alive
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.5)
    assert looks <= 3, looks  # not 25
    track.begin("r1", "t1")
    track.segment("r1", 0, "hello")
    pushed = time.monotonic()
    track.push("r1", 0, tone(0.2), RATE)
    frame = await asyncio.wait_for(pending, 1.0)
    left = time.monotonic()
    assert np.abs(np.frombuffer(bytes(frame.planes[0])[: FRAME * 2], dtype=np.int16)).max() > 0
    # At once, not at the next 20 ms tick; the first push resamples and encodes (up to ~8 ms
    # on a busy 2-core VM).
    assert left - pushed < 0.015
    assert frame.pts == pytest.approx((left - t0) * RATE, abs=FRAME)


async def test_a_reply_plays_without_gaps_then_a_tail_then_quiet() -> None:
    started: list[str] = []
    finished: list[str] = []
    track = ReplyAudioTrack(
        lambda pb: started.append(pb.reply_id), lambda pb: finished.append(pb.reply_id)
    )
    await pull(track, 0.1)  # the first (keep-alive) frame
    track.begin("r1", "t1")
    track.segment("r1", 0, "hello")
    track.push("r1", 0, tone(0.5), RATE)
    track.tts_done("r1")
    frames = await pull(track, 1.3)
    loud = [f for f in frames if f[2]]
    assert len(loud) == 25 and started == ["r1"] and finished == ["r1"]
    pts = [p for _, p, _ in frames]
    first = pts.index(loud[0][1])
    # from the first audio frame to the end of the tail: every 20 ms frame, none skipped
    tail_frames = int(HANGOVER_S * RATE / FRAME)
    run = pts[first : first + 25 + tail_frames]
    assert all(b - a == FRAME for a, b in zip(run, run[1:], strict=False)), run
    # then quiet: at most a keep-alive in the rest of the window
    assert len(frames) - (first + 25 + tail_frames) <= 2


async def test_without_suppression_silence_is_sent_all_the_time() -> None:
    track = ReplyAudioTrack(lambda pb: None, lambda pb: None, suppress_silence=False)
    frames = await pull(track, 0.5)
    assert len(frames) >= 22  # 25 in 0.5 s, minus scheduling slack


def test_vad_skips_the_model_on_digital_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = SileroVADStream()
    calls = []
    real_run = stream.model.run
    monkeypatch.setattr(stream.model, "run", lambda *a: calls.append(1) or real_run(*a))
    quiet = (np.random.default_rng(1).integers(-5, 6, FRAME_SAMPLES)).astype("<i2").tobytes()
    assert stream.prob_pcm16(quiet) == 0.0 and not calls
    noise = (np.random.default_rng(2).normal(0, 3000, FRAME_SAMPLES)).astype("<i2").tobytes()
    stream.prob_pcm16(noise)
    assert calls == [1]


async def test_an_opus_track_hands_out_one_packet_per_frame_that_decodes_to_the_reply() -> None:
    """With `opus` set the track encodes its frames itself: one Opus packet per 20 ms frame,
    stamped with the frame's own time (keep-alives included), and the packets decode back to
    the reply's audio (a 220 Hz tone: its pitch and level survive)."""
    import av

    track = ReplyAudioTrack(lambda pb: None, lambda pb: None, opus=True)
    packets: list[av.Packet] = []

    async def take(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                packets.append(await asyncio.wait_for(track.recv(), max(0.001, left)))
            except TimeoutError:
                break

    await take(0.1)  # the first keep-alive
    track.begin("r1", "t1")
    track.push("r1", 0, tone(0.4), RATE)
    track.tts_done("r1")
    await take(0.8)
    assert all(isinstance(p, av.Packet) for p in packets)
    assert all(p.time_base == Fraction(1, RATE) for p in packets)
    pts = [int(p.pts) for p in packets]
    assert pts[1] - pts[0] >= FRAME and all(
        b - a == FRAME for a, b in zip(pts[1:], pts[2:], strict=False)
    )
    decoder = av.CodecContext.create("libopus", "r")  # as a browser: opus/48000/2, stereo out
    frames = [f for p in packets for f in decoder.decode(p)]  # the keep-alive's silence too
    pcm = np.concatenate(
        [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames[1:]]
    ).astype(np.float64)
    # The reply opens at its level, right after silence: its first frame is not faded in.
    assert np.sqrt(np.mean(pcm[FRAME // 2 : FRAME] ** 2)) > 0.6 * 8000 / np.sqrt(2)
    audible = pcm[: int(0.4 * RATE)]
    spectrum = np.abs(np.fft.rfft(audible[RATE // 10 :]))
    peak_hz = np.argmax(spectrum) * RATE / (2 * (len(spectrum) - 1))
    assert abs(peak_hz - 220) < 5, peak_hz
    assert np.sqrt(np.mean(audible[RATE // 10 :] ** 2)) == pytest.approx(8000 / np.sqrt(2), rel=0.2)


async def take(track: ReplyAudioTrack, seconds: float) -> int:
    """Let the track play for `seconds` (frames or packets); how many it handed out."""
    n = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(track.recv(), max(0.001, left))
        except TimeoutError:
            break
        n += 1
    return n


async def test_an_interrupted_reply_counts_what_was_played_of_audio_converted_as_it_plays() -> None:
    """Audio is converted shortly before it plays, yet the words counted as spoken after a cut
    are those of the audio played: the first segment in full, the second in proportion."""
    track = ReplyAudioTrack(lambda pb: None, lambda pb: None, opus=True)
    await take(track, 0.05)
    track.begin("r1", "t1")
    words = "one two three four five six seven eight nine ten"
    track.segment("r1", 0, "Hello there.")
    track.segment("r1", 1, words)
    rate = 22050
    for index, seconds in ((0, 0.5), (1, 1.0)):
        t = np.arange(int(rate * seconds)) / rate
        track.push(
            "r1", index, (np.sin(2 * np.pi * 200 * t) * 8000).astype(np.int16).tobytes(), rate
        )
    track.tts_done("r1")
    await take(track, 1.0)  # 0.5 s of the first segment, about half of the second
    pb = track.stop_reply()
    assert pb is not None
    said = pb.spoken_text().split()
    assert said[:2] == ["Hello", "there."]
    assert 3 <= len(said) - 2 <= 7, said


async def test_a_paused_reply_reports_how_long_it_was_paused() -> None:
    """Speech over a reply pauses its audio; the reply accounts for it: a pause before its first
    frame is none (nothing was heard yet), a 300 ms pause while it played is one pause of about
    300 ms (and the audio heard has that gap), a pause its stop ends counts up to the stop. Those
    are the figures `playback.done` (and so `reply.done`) carries, and an old `playback.done`
    without them still decodes, as no pause."""
    from services.common.messages import PlaybackDone, decode
    from services.common.messages.turns import PlaybackEvent

    finished: list[ReplyPlayback] = []
    track = ReplyAudioTrack(lambda pb: None, finished.append)
    await pull(track, 0.05)
    track.begin("r1", "t1")
    track.pause()  # before its first frame: nothing heard, nothing to count
    track.segment("r1", 0, "hello")
    track.push("r1", 0, tone(0.6), RATE)
    track.tts_done("r1")
    await pull(track, 0.1)
    track.resume()
    before = await pull(track, 0.2)
    track.pause()
    paused_at = time.monotonic()
    gap = await pull(track, 0.3)
    track.resume()
    resumed_at = time.monotonic()
    after = await pull(track, 0.8)
    (pb,) = finished
    assert any(loud for *_, loud in before) and not any(loud for *_, loud in gap)
    assert sum(loud for *_, loud in before + after) == 30  # all of it played, nothing lost
    assert pb.pauses.count == 1 and pb.pauses.since is None
    assert pb.pauses.total_ms == pytest.approx((resumed_at - paused_at) * 1000, abs=5)
    assert pb.pauses.longest_ms == pb.pauses.total_ms and 280 <= pb.pauses.total_ms <= 340

    track.begin("r2", "t2")  # paused twice, the second pause ended by its stop
    track.push("r2", 0, tone(2.0), RATE)
    await pull(track, 0.1)
    track.pause()
    await pull(track, 0.1)
    track.resume()
    await pull(track, 0.06)
    track.pause()
    await pull(track, 0.2)
    stopped = track.stop_reply()
    assert stopped is not None and stopped.pauses.count == 2
    assert 180 <= stopped.pauses.longest_ms <= 240
    assert 280 <= stopped.pauses.total_ms <= 360

    old = decode(PlaybackEvent, b'{"type":"playback.done","v":1,"reply_id":"r","spoken_text":""}')
    assert isinstance(old, PlaybackDone) and (old.paused_ms, old.pauses) == (0.0, 0)
