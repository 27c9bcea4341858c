"""espeak-ng (Debian package) as a subprocess: robotic but real speech, first audio in ~10 ms.

Used by tests and as a fallback voice. `espeak-ng --stdout` writes a streaming WAV (a RIFF header
with an open-ended data size, then PCM16 mono) while it synthesises; the engine parses the header
and passes the samples on in ~100 ms chunks. Cancelling kills the process. The text goes in on
stdin, never on the command line, so no text can be taken for an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import struct
from collections.abc import AsyncIterator

from services.tts.engine import TTSEngine

_VOICE_RE = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")


class EspeakError(RuntimeError):
    """espeak-ng is missing, rejected the voice, or wrote no audio."""


class EspeakEngine(TTSEngine):
    """espeak-ng voice `voice` (e.g. "en-us", "en-gb+f3") at `speed` words per minute."""

    name = "espeak"

    def __init__(
        self,
        voice: str = "en-us",
        *,
        speed: int = 175,
        chunk_ms: int = 100,
        binary: str = "espeak-ng",
    ) -> None:
        if not _VOICE_RE.match(voice):
            raise ValueError(f"bad espeak voice name {voice!r}")
        self.voice = voice
        self.speed = speed
        self.chunk_ms = chunk_ms
        self.binary = binary
        self.sample_rate = 22050  # espeak-ng's rate for every voice; checked against each header

    async def load(self) -> None:
        if shutil.which(self.binary) is None:
            raise EspeakError(f"{self.binary} not found: apt-get install espeak-ng")

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """`voice` overrides the engine's voice when it is a valid espeak voice name."""
        text = text.strip()
        if not text:
            return
        use_voice = voice if voice and _VOICE_RE.match(voice) else self.voice
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--stdout",
            "-v",
            use_voice,
            "-s",
            str(self.speed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode("utf-8"))
            await proc.stdin.drain()
            proc.stdin.close()
            rate = await self._read_header(proc.stdout)
            if rate is None:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise EspeakError(f"espeak-ng wrote no audio for voice {use_voice!r}: {err}")
            self.sample_rate = rate
            chunk_bytes = 2 * rate * self.chunk_ms // 1000
            while True:
                try:
                    chunk = await proc.stdout.readexactly(chunk_bytes)
                except asyncio.IncompleteReadError as exc:
                    tail = exc.partial[: len(exc.partial) // 2 * 2]
                    if tail:
                        yield tail
                    break
                yield chunk
            await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled or closed early: stop synthesis now
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    @staticmethod
    async def _read_header(stdout: asyncio.StreamReader) -> int | None:
        """Read the RIFF header up to the data chunk; return the sample rate (None: no audio)."""
        try:
            riff = await stdout.readexactly(12)
            if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                raise EspeakError(f"espeak-ng output is not WAV: {riff!r}")
            rate: int | None = None
            while True:
                chunk_id, size = struct.unpack("<4sI", await stdout.readexactly(8))
                if chunk_id == b"data":
                    return rate
                body = await stdout.readexactly(size + (size & 1))
                if chunk_id == b"fmt ":
                    fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                    if (fmt, channels, bits) != (1, 1, 16):
                        raise EspeakError(f"unexpected espeak-ng format {fmt}/{channels}/{bits}")
        except asyncio.IncompleteReadError:
            return None
