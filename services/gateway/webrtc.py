"""WebRTC termination with aiortc: answer an offer, send reply audio, receive the microphone."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import rtp as aiortc_rtp
from aiortc.jitterbuffer import JitterBuffer

from .live import LiveSession

log = logging.getLogger(__name__)


def audio_level_dbov(frame: Any) -> int:
    """aiortc's `rtp.compute_audio_level_dbov` (RFC 6465 level of every outgoing audio frame),
    the same arithmetic over the same bytes with numpy instead of a Python loop per sample: that
    loop was 7 % of the gateway's event loop with 20 sessions hearing replies."""
    buf = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.float64)
    rms = float(np.sqrt(np.dot(buf, buf) / (frame.samples * 32767.0 * 32767.0)))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


aiortc_rtp.compute_audio_level_dbov = audio_level_dbov  # RTCRtpSender looks it up per frame


def set_jitter_prefetch(receiver: Any, frames: int) -> None:
    """Hold `frames` 20 ms frames of microphone audio before decoding (aiortc's default: 4).

    Every frame held delays end-of-turn and barge-in detection by 20 ms; a frame is held at least
    until the next one arrives. aiortc has no option for it, so the receiver's buffer is
    replaced (aiortc is pinned; tests/test_api.py checks this still applies).
    """
    name = "_RTCRtpReceiver__jitter_buffer"
    if not hasattr(receiver, name):
        raise RuntimeError("aiortc's receiver has no jitter buffer attribute: check the pin")
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio":
        return
    setattr(receiver, name, JitterBuffer(capacity=16, prefetch=frames))


def _payload_type(line: str) -> str:  # "a=fmtp:111 minptime=10" -> "111"
    return line.split()[0].split(":", 1)[1]


def _opus_payload_types(lines: list[str]) -> set[str]:
    return {
        _payload_type(line)
        for line in lines
        if line.startswith("a=rtpmap:") and " opus/48000" in line.lower()
    }


def sends_opus(sdp: str) -> bool:
    """Whether the audio an answer sends is Opus: the first format of its audio m-line (the
    one aiortc's sender encodes) is an Opus payload type."""
    lines = sdp.split("\r\n")
    audio = next((line.split() for line in lines if line.startswith("m=audio ")), [])
    return len(audio) > 3 and audio[3] in _opus_payload_types(lines)


def ask_for_dtx(sdp: str) -> str:
    """Add `usedtx=1` to the Opus format parameters of an answer: the browser then sends Opus
    DTX, a packet every 400 ms instead of 50 a second while its microphone is silent (RFC 7587;
    aiortc's answer carries no Opus parameters of its own)."""
    lines = sdp.split("\r\n")
    opus = _opus_payload_types(lines)
    out: list[str] = []
    for line in lines:
        if line.startswith("a=fmtp:") and _payload_type(line) in opus:
            opus.discard(_payload_type(line))
            if "usedtx=" not in line:
                line += ";usedtx=1"
        out.append(line)
    for pt in opus:  # no fmtp line yet: one right after the codec's rtpmap
        at = next(i for i, line in enumerate(out) if line.startswith(f"a=rtpmap:{pt} "))
        out.insert(at + 1, f"a=fmtp:{pt} usedtx=1")
    return "\r\n".join(out)


async def answer_offer(
    live: LiveSession, sdp: str, ice_servers: list[dict[str, Any]], echo: bool = False
) -> tuple[str, str]:
    """Answer `sdp` for `live`, replacing any earlier peer; with `echo`, the reply's echo is
    taken out of its microphone. Raises ValueError on a bad offer."""
    # No ICE servers unless configured: aiortc would otherwise ask a public STUN server.
    config = RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ice_servers])
    pc = RTCPeerConnection(config)
    try:
        track = live.new_track()
        pc.addTrack(track)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                live.spawn(live.consume_track(track, pc), "mic")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: webrtc %s", live.sid, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await live.media_gone(pc)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for receiver in pc.getReceivers():
            set_jitter_prefetch(receiver, live.cfg.mic_jitter_prefetch)
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise ValueError("the offer has no audio")
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        # The track encodes Opus itself where Opus is what goes out (playback.py).
        track.opus = sends_opus(pc.localDescription.sdp)
    except Exception as exc:
        await pc.close()
        if isinstance(exc, ValueError):
            raise
        raise ValueError(str(exc) or type(exc).__name__) from exc
    old, live.pc = live.pc, pc
    live.mic_ended = False
    live.cancel_echo(echo)
    if old is not None:
        await old.close()
    sdp_out = pc.localDescription.sdp
    return (ask_for_dtx(sdp_out) if live.cfg.mic_dtx else sdp_out), pc.localDescription.type
