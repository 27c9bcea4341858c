"""Gateway WebRTC settings that reach into aiortc."""

from __future__ import annotations


def test_the_microphone_jitter_buffer_setting_applies_to_this_aiortc() -> None:
    """The gateway shortens aiortc's audio jitter buffer through a private attribute; an aiortc
    upgrade that renames it must fail here, not silently add 60 ms to every turn."""
    import asyncio

    from aiortc import RTCPeerConnection

    from services.gateway.webrtc import set_jitter_prefetch

    async def check() -> None:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        receiver = pc.getReceivers()[0]
        set_jitter_prefetch(receiver, 1)
        assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1  # type: ignore[attr-defined]
        await pc.close()

    asyncio.run(check())


# An offer as Chromium writes it (audio part): Opus with its own format parameters.
CHROME_AUDIO = "\r\n".join(
    [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "",
    ]
)


def test_the_answer_asks_for_opus_dtx() -> None:
    """`usedtx=1` is added to Opus's format parameters (appended where the line exists, a line
    of its own where not), nothing else changes, and aiortc still accepts the result."""
    import asyncio

    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    from services.gateway.webrtc import ask_for_dtx

    out = ask_for_dtx(CHROME_AUDIO)
    assert "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1" in out.split("\r\n")
    assert "a=fmtp:63 111/111" in out.split("\r\n")  # RED's parameters untouched
    assert ask_for_dtx(out) == out  # asked once

    async def check() -> None:
        offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
        offerer.addTransceiver("audio")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        answerer.addTrack(AudioStreamTrack())
        await answerer.setLocalDescription(await answerer.createAnswer())
        sdp = ask_for_dtx(answerer.localDescription.sdp)
        lines = sdp.split("\r\n")
        at = next(i for i, line in enumerate(lines) if " opus/48000" in line)
        assert lines[at + 1].endswith(" usedtx=1"), lines[at : at + 2]
        await offerer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await offerer.close()
        await answerer.close()

    asyncio.run(check())


def test_the_fast_audio_level_matches_aiortcs_and_is_the_one_used() -> None:
    """The gateway replaces aiortc's per-sample Python loop for the RTP audio-level extension
    with numpy: same result on silence, quiet and loud frames (mono and stereo), and aiortc's
    sender reaches it through the module attribute that the gateway sets."""
    import inspect
    import math
    import struct

    import av
    import numpy as np
    from aiortc import rtcrtpsender
    from aiortc import rtp as aiortc_rtp

    import services.gateway.webrtc as gw

    def reference(frame: av.AudioFrame) -> int:  # aiortc 1.x's compute_audio_level_dbov
        rms = sum(s[0] * s[0] for s in struct.Struct("h").iter_unpack(bytes(frame.planes[0])))
        rms = math.sqrt(rms / (frame.samples * 32767 * 32767))
        return round(min(max(20 * math.log10(rms), -127), 0)) if rms > 0 else -127

    rng = np.random.default_rng(3)
    for layout, ch in (("mono", 1), ("stereo", 2)):
        for amp in (0, 1, 30, 3000, 32767):
            pcm = (rng.uniform(-1, 1, 960 * ch) * amp).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
            assert gw.audio_level_dbov(frame) == reference(frame), (layout, amp)
    assert aiortc_rtp.compute_audio_level_dbov is gw.audio_level_dbov
    assert "rtp.compute_audio_level_dbov(" in inspect.getsource(rtcrtpsender)


def test_the_track_encodes_opus_only_where_opus_is_what_the_answer_sends() -> None:
    """The reply track hands aiortc ready Opus packets only when the answer's audio goes out
    as Opus; to a peer that offers only G.711 aiortc's own encoder is left to do it."""
    import asyncio

    from aiortc import RTCPeerConnection, RTCRtpSender

    from services.gateway.playback import ReplyAudioTrack
    from services.gateway.webrtc import sends_opus

    pcmu_only = "\r\n".join(
        line
        for line in CHROME_AUDIO.split("\r\n")
        if not line.startswith(("a=rtpmap:111", "a=fmtp:111", "a=rtcp-fb:111", "a=rtpmap:63"))
        and not line.startswith("a=fmtp:63")
    ).replace("111 63 9 0 8", "0 8")
    assert sends_opus(CHROME_AUDIO) and not sends_opus(pcmu_only)

    async def answer(opus: bool) -> str:
        offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
        transceiver = offerer.addTransceiver("audio")
        if not opus:  # an offer of G.711 only, as some SIP bridges send
            codecs = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in codecs if "PCM" in c.mimeType])
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        answerer.addTrack(ReplyAudioTrack(lambda pb: None, lambda pb: None))
        await answerer.setLocalDescription(await answerer.createAnswer())
        sdp = str(answerer.localDescription.sdp)
        await offerer.close()
        await answerer.close()
        return sdp

    assert sends_opus(asyncio.run(answer(opus=True)))
    assert not sends_opus(asyncio.run(answer(opus=False)))
