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
