"""What the page's microphone track carries in Chromium with its audio processing on.

Debian's Chromium plays a WAV as a fake microphone (`--use-file-for-fake-audio-capture`, once);
a page asks for the microphone with the given constraints (as services/gateway/static/js/voice.js
does) and an AudioWorklet records the track at 48 kHz, which is what the WebRTC sender would
encode. Several WAVs are captured in parallel, one browser
each. The recording starts a little after the WAV does: `align` finds the offset.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
RATE = 48000
_ORIGIN = "http://localhost/capture"  # served by the test itself; localhost is a secure context

_PAGE = """<!doctype html><html><body><script>
window.capture = async (seconds, constraints) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: constraints });
  const ctx = new AudioContext({ sampleRate: 48000 });
  const code = `registerProcessor("rec", class extends AudioWorkletProcessor {
    process(inputs) { const ch = inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0));
      return true; } });`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code],
    { type: "application/javascript" })));
  const node = new AudioWorkletNode(ctx, "rec");
  const chunks = [];
  node.port.onmessage = (e) => chunks.push(e.data);
  ctx.createMediaStreamSource(stream).connect(node);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  stream.getTracks().forEach((t) => t.stop());
  await ctx.close();
  const out = new Int16Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    for (const x of c) out[o++] = Math.max(-32768, Math.min(32767, x * 32767));
  }
  const bytes = new Uint8Array(out.buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 32768) {
    s += String.fromCharCode(...bytes.subarray(i, i + 32768));
  }
  return btoa(s);
};
</script></body></html>"""


# What services/gateway/static/js/voice.js asks for by default, and with ?raw-audio=1.
PROCESSING_ON = {"echoCancellation": True, "noiseSuppression": True, "autoGainControl": True}
PROCESSING_OFF = dict.fromkeys(PROCESSING_ON, False)


async def _capture_one(
    pw: object, wav: Path, seconds: float, constraints: dict[str, bool]
) -> np.ndarray:
    browser = await pw.chromium.launch(  # type: ignore[attr-defined]
        executable_path=str(CHROMIUM),
        args=[
            "--headless",
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
        ],
        ignore_default_args=["--mute-audio"],
    )
    try:
        page = await browser.new_page()
        await page.route(_ORIGIN, lambda r: r.fulfill(body=_PAGE, content_type="text/html"))
        await page.goto(_ORIGIN)
        data = await page.evaluate(
            "([s, c]) => window.capture(s, c)", [round(seconds, 2), constraints]
        )
    finally:
        await browser.close()
    return np.frombuffer(base64.b64decode(data), dtype=np.int16)


async def capture(
    wavs: Sequence[Path],
    seconds: Sequence[float],
    constraints: dict[str, bool] = PROCESSING_ON,
    parallel: int = 3,
) -> list[np.ndarray]:
    """Each WAV played as the microphone for its `seconds`, asked for with these audio
    `constraints`; PCM16 at 48 kHz as the page got it."""
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():  # noqa: ASYNC240 - once, before any browser starts
        raise RuntimeError(f"{CHROMIUM} missing: scripts/install.sh with INSTALL_BROWSER=1")
    gate = asyncio.Semaphore(parallel)

    async def one(pw: object, wav: Path, s: float) -> np.ndarray:
        async with gate:
            return await _capture_one(pw, wav, s, constraints)

    async with async_playwright() as pw:
        runs = [one(pw, w, s) for w, s in zip(wavs, seconds, strict=True)]
        return list(await asyncio.gather(*runs))


def _envelope(pcm: np.ndarray, hop: int) -> np.ndarray:
    n = len(pcm) // hop
    frames = pcm[: n * hop].astype(np.float32).reshape(n, hop)
    return np.log(np.sqrt(np.mean(frames**2, axis=1)) + 1.0)


def align(played: np.ndarray, recorded: np.ndarray, rate: int, max_shift_s: float = 3.0) -> int:
    """Samples (at `rate`) by which `played` starts before `recorded`: where the 10 ms loudness
    envelopes line up best."""
    hop = rate // 100
    a, b = _envelope(played, hop), _envelope(recorded, hop)
    a, b = a - a.mean(), b - b.mean()
    best, best_shift = -np.inf, 0
    for shift in range(int(max_shift_s * 100) + 1):
        n = min(len(a) - shift, len(b))
        if n <= 0:
            break
        score = float(np.dot(a[shift : shift + n], b[:n])) / n
        if score > best:
            best, best_shift = score, shift
    return best_shift * hop
