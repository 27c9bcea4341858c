"""The assistant's own voice taken out of the microphone, before the VAD hears it.

A client without echo cancellation (a phone on speaker, a kiosk, a WebRTC client of its own)
sends the reply back in its microphone, and the gateway would take it for the user speaking
over the reply. The gateway knows exactly what it played: each reply frame that goes out is the
far end of WebRTC's echo canceller AEC3 (`livekit==1.2.0`'s `rtc.AudioProcessingModule`, 10 ms
frames, 48 kHz), and each piece of microphone audio is processed against it before turn-taking
sees it. AEC3 finds the echo path's delay itself (measured here: 34-38 dB less echo at 30-300 ms
of delay, a talker over it kept; ../shared/FINDINGS.md, "Echo"). About 2 % of a core per
session. Only for a client that asks (`echo_cancellation: true` with its WebRTC offer) or all of
them with `VA_ECHO_CANCELLATION=true`: a client that cancels its own echo (every browser) gains
nothing, and a canceller still learning can swallow the user's first words over a reply.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

MIC_RATE = 16000
MIC_FRAME = MIC_RATE // 100 * 2  # bytes of 10 ms PCM16
REPLY_RATE = 48000
REPLY_FRAME = REPLY_RATE // 100 * 2


class EchoCanceller:
    """One session's echo canceller: `played` the reply frames sent, `clean` the microphone."""

    def __init__(self) -> None:
        from livekit import rtc

        self._rtc = rtc
        self._apm: Any = rtc.AudioProcessingModule(echo_cancellation=True)
        self._mic = bytearray()
        self._reply = bytearray()
        self.active = False  # reply audio was played: there may be echo to remove

    def played(self, pcm48: bytes) -> None:
        """Reply audio as it goes out: 48 kHz mono PCM16, any length."""
        self.active = True
        self._reply += pcm48
        n = len(self._reply) // REPLY_FRAME * REPLY_FRAME
        for at in range(0, n, REPLY_FRAME):
            frame = self._rtc.AudioFrame(
                self._reply[at : at + REPLY_FRAME], REPLY_RATE, 1, REPLY_FRAME // 2
            )
            self._apm.process_reverse_stream(frame)
        del self._reply[:n]

    def clean(self, pcm16: bytes) -> bytes:
        """Microphone audio, 16 kHz mono PCM16, any length: returns it without the echo, in
        whole 10 ms frames (the rest comes out with the next piece). Until a reply has played
        there is nothing to cancel: it comes back as it is."""
        if not self.active:
            return pcm16
        self._mic += pcm16
        n = len(self._mic) // MIC_FRAME * MIC_FRAME
        out = bytearray()
        for at in range(0, n, MIC_FRAME):
            frame = self._rtc.AudioFrame(
                bytearray(self._mic[at : at + MIC_FRAME]), MIC_RATE, 1, MIC_FRAME // 2
            )
            self._apm.process_stream(frame)
            out += frame.data.cast("B")
        del self._mic[:n]
        return bytes(out)


def echo_canceller() -> EchoCanceller | None:
    """A new canceller; None (logged) when the library cannot run here."""
    try:
        return EchoCanceller()
    except Exception:
        log.exception("no echo cancellation: the microphone is heard as it comes")
        return None
