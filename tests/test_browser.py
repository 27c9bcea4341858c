"""The conversation page (services/gateway/static) in a real browser: headless Chromium (the
Debian package) driven by Playwright, against the five services as real processes, inside the
private network namespace. Chromium's fake microphone plays a WAV once
(`--use-file-for-fake-audio-capture=F.wav%noloop`, then silence). The page runs as people use
it, with the browser's echo cancellation, noise suppression and auto gain on, except where a test
needs the audio unaltered (`?raw-audio=1`, said where used).

Invariants protected, as a person using the page would notice them:
- a spoken question shows a live partial transcript, then the final one (said once, not
  doubled), the reply text, the
  speaking state, and reply audio arrives (inbound RTP and a WebAudio analyser on it); the
  silent microphone then sends Opus DTX (a few packets, not 50 a second);
- speaking over a reply marks its bubble interrupted, showing only what was spoken (as the stored
  history has it), and the state goes back to listening;
- with the microphone denied the page says so, and typed text still gets a reply;
- a reload resumes the same conversation with its history, and the microphone works again (a
  spoken question before and after); "New conversation" ends it;
- the stop button interrupts a spoken reply and its audio stops;
- a dropped event socket is reported and reconnects by itself, keeping the conversation; server
  errors and an unknown agent are shown.

Each test saves screenshots to tests/artifacts/screenshots/<test>-<state>.png.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from harness.audio import ARTIFACTS, active_bounds_ms, concat_wavs_with_silence, read_wav, speak_wav
from harness.servers import free_port
from harness.services import start_stack
from services.gateway import tls

if TYPE_CHECKING:
    from playwright.async_api import Page

# In the test extra (pyproject); never `playwright install`: the Debian chromium is used.
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ARTIFACTS / "screenshots"
WAVS = ARTIFACTS / "browser"
RATE = 16000  # Chromium's fake capture resamples any PCM16 WAV to the device rate (44.1 kHz)

BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}

PLAIN = {
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 60},
}
STORYTELLER = {
    "system_prompt": "You are a storyteller. Always answer with a long story in English.",
    "llm": {"temperature": 0.0, "max_tokens": 200},
}

REPLY_S = 90  # a reply on a busy 2-core machine
STATE = "#state"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} missing: apt-get install chromium", allow_module_level=True)


# ---- set-up -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(procs_module)


async def new_agent(base_url: str, config: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post("/v1/agents", json=config)
        assert r.status_code == 200, r.text
        return str(r.json()["agent_id"])


def clip(text: str) -> np.ndarray:
    """`text` spoken (Piper), trimmed to its audible part, at RATE."""
    pcm, rate = read_wav(speak_wav(text, rate=RATE))
    start, end = active_bounds_ms(pcm, rate)
    return pcm[int(start * rate / 1000) : int(end * rate / 1000)]


def mic_wav(name: str, *phrases: str, gap_ms: int = 0, lead_ms: int = 2000) -> Path:
    """The fake microphone's recording: `lead_ms` of silence (the page connects meanwhile: the
    file starts playing when the page opens the microphone), then the phrases `gap_ms` apart."""
    out = WAVS / f"{name}.wav"
    parts = [clip(p) for p in phrases] or [np.zeros(RATE // 10, dtype=np.int16)]
    concat_wavs_with_silence(parts, gap_ms, rate=RATE, lead_ms=lead_ms, tail_ms=500, out=out)
    return out


@asynccontextmanager
async def browser_page(
    mic: Path | None = None,
    *,
    deny_mic: bool = False,
    phone: bool = False,
    home: Path | None = None,
) -> AsyncIterator[Page]:
    """A fresh Chromium and page. `mic`: a fake microphone that plays that WAV, permission
    granted. `deny_mic`: a microphone exists but permission is refused. Neither: no microphone.
    `home`: the browser's HOME (its certificate store: `home/.pki/nssdb`)."""
    args = list(BASE_ARGS)
    if mic is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop",
        ]
    elif deny_mic:
        # A device but no auto-accepting prompt: headless Chromium answers NotAllowedError.
        args.append("--use-fake-device-for-media-stream")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=args,
            # Playwright mutes headless Chromium; the analyser on the reply should hear it.
            ignore_default_args=["--mute-audio"],
            env={**os.environ, "HOME": str(home)} if home else None,
        )
        try:
            context = await browser.new_context(**(PHONE if phone else DESKTOP))
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


async def shot(page: Page, test: str, state: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{test}-{state}.png"))


async def wait_state(page: Page, state: str, timeout_s: float = REPLY_S) -> None:
    await expect(page.locator(STATE)).to_have_attribute(
        "data-state", state, timeout=timeout_s * 1000
    )


async def saved_session(page: Page) -> dict[str, Any]:
    saved = await page.evaluate("JSON.parse(localStorage.getItem('voice-assistant.session'))")
    assert saved and saved["session_id"] and saved["token"], saved
    return dict(saved)


async def stored_history(base_url: str, session: dict[str, Any]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.get(
            f"/v1/sessions/{session['session_id']}/messages",
            headers={"authorization": f"Bearer {session['token']}"},
        )
        assert r.status_code == 200, r.text
        return list(r.json())


async def states_seen(page: Page) -> list[str]:
    return [s for _, s in await page.evaluate("window.voiceAssistant.states")]


async def until_seen(page: Page, state: str, after: str, timeout_s: float) -> None:
    """`state` has been shown at some point after `after` was first shown."""
    end = time.monotonic() + timeout_s
    while True:
        seen = await states_seen(page)
        if after in seen and state in seen[seen.index(after) :]:
            return
        assert time.monotonic() < end, f"no {state} after {after}: {seen}"
        await asyncio.sleep(0.1)


async def reply_level(page: Page) -> float:
    return float(await page.evaluate("window.voiceAssistant.voice.lastLevels.reply"))


async def mic_on(page: Page) -> None:
    await page.get_by_role("button", name="Turn microphone on").click()
    await expect(page.locator("#mic")).to_have_attribute("aria-pressed", "true", timeout=15000)


# ---- tests --------------------------------------------------------------------------------------


async def test_spoken_question_transcript_reply_and_audio(stack) -> None:  # type: ignore[no-untyped-def]
    name = "voice"
    agent = await new_agent(stack.base_url, PLAIN)
    wav = mic_wav(
        name, "I would like to know what color the sky is on a clear and sunny summer day."
    )
    async with browser_page(wav) as page:
        await page.goto(f"{stack.base_url}/?agent={agent}")
        await wait_state(page, "listening", 30)
        await expect(page.locator("#empty")).to_be_visible()
        await shot(page, name, "connected")

        partial = page.locator(".msg.user.partial")
        await mic_on(page)
        await expect(partial).to_have_count(1, timeout=30000)
        await shot(page, name, "partial")

        user = page.locator(".msg.user:not(.partial)")
        await expect(user).to_have_count(1, timeout=30000)
        await expect(partial).to_have_count(0)  # the partial became the final
        # tiny.en hears "the sky" in this clip as "this guy" (with any window), and "summer day"
        # now and then as "summer bay" (with either event loop: the final pass's audio ends 0-64
        # ms later or earlier, by how the silence after the browser's last packet is counted):
        # check words it gets right, so the test is about the page, not the model's accuracy
        heard = (await user.inner_text()).lower()
        assert re.search(r"\bcolou?r\b", heard) and "sunny summer" in heard, heard
        assert heard.count("sunny") == 1, f"the question was transcribed twice: {heard!r}"

        await wait_state(page, "speaking")
        before = await page.evaluate("window.voiceAssistant.inboundAudio()")
        reply = page.locator(".msg.assistant")
        await expect(reply.locator(".text")).not_to_be_empty()
        await shot(page, name, "speaking")
        # Reply audio: the analyser on the reply stream hears it...
        for _ in range(100):
            if await page.evaluate("window.voiceAssistant.replyPeak()") > 0.01:
                break
            await asyncio.sleep(0.1)
        peak = await page.evaluate("window.voiceAssistant.replyPeak()")
        assert peak > 0.01, "the reply stream is silent in the page"

        await wait_state(page, "listening")
        await expect(reply).not_to_have_class(re.compile("streaming"))
        # ... and RTP brought speech: Opus packets far bigger than the silence between replies
        # (the track sends silence all along: ~10-20 bytes a packet).
        after = await page.evaluate("window.voiceAssistant.inboundAudio()")
        packets = after["packetsReceived"] - before["packetsReceived"]
        per_packet = (after["bytesReceived"] - before["bytesReceived"]) / max(1, packets)
        print(f"reply audio: {packets} packets, {per_packet:.0f} B each; peak RMS {peak:.3f}")
        assert packets > 50 and per_packet > 30, (before, after)
        # The microphone is silent now (the WAV played once): Chromium sends Opus DTX, as the
        # gateway's answer asks (a packet every 400 ms instead of 50 a second).
        sent0 = await page.evaluate("window.voiceAssistant.outboundAudio()")
        await asyncio.sleep(3.0)
        sent1 = await page.evaluate("window.voiceAssistant.outboundAudio()")
        mic_packets = sent1["packetsSent"] - sent0["packetsSent"]
        print(f"silent microphone: {mic_packets} packets in 3 s")
        assert mic_packets < 60, (sent0, sent1)
        latency = reply.locator(".latency summary")
        await expect(latency).to_have_text(re.compile(r"to first audio"), timeout=10000)
        await latency.click()  # the stage breakdown, on demand
        await expect(reply.locator(".latency dl")).to_contain_text("speech recognition")
        await shot(page, name, "reply")

        history = await stored_history(stack.base_url, await saved_session(page))
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert (await reply.locator(".text").inner_text()).strip() == history[1]["text"].strip()
        assert "speaking" in await states_seen(page)


async def test_speaking_over_the_reply_interrupts_it(stack) -> None:  # type: ignore[no-untyped-def]
    name = "barge-in"
    agent = await new_agent(stack.base_url, STORYTELLER)
    # The reply starts speaking ~1.5-5 s after the question ends (more on a busy machine); the
    # barge-in comes 8 s after, while the long story is still being spoken.
    wav = mic_wav(
        name, "Tell me a story about a brave knight.", "Stop, wait a moment please.", gap_ms=8000
    )
    async with browser_page(wav) as page:
        await page.goto(f"{stack.base_url}/?agent={agent}")
        await wait_state(page, "listening", 30)
        await mic_on(page)

        await wait_state(page, "speaking")
        await shot(page, name, "speaking")
        cut = page.locator(".msg.assistant.interrupted")
        await expect(cut).to_have_count(1, timeout=60000)
        await expect(cut.locator(".badge")).to_have_text(re.compile("Interrupted"))
        # The interrupted turn ends in `listening` (the barge-in's own turn may follow at once).
        await until_seen(page, "listening", after="speaking", timeout_s=10)
        await shot(page, name, "interrupted")
        spoken = (await cut.locator(".text").inner_text()).strip()
        # Only what was heard is shown, and it is what the history keeps.
        session = await saved_session(page)
        history = await stored_history(stack.base_url, session)
        first_reply = next(m for m in history if m["role"] == "assistant")
        assert first_reply["interrupted"] is True
        assert spoken == first_reply["text"].strip()
        # The barge-in's words become the next turn.
        await expect(page.locator(".msg.user")).to_have_count(2, timeout=30000)
        await shot(page, name, "next-turn")


async def test_text_only_when_the_microphone_is_denied(stack) -> None:  # type: ignore[no-untyped-def]
    name = "text-only"
    agent = await new_agent(stack.base_url, PLAIN)
    async with browser_page(deny_mic=True, phone=True) as page:
        await page.goto(f"{stack.base_url}/?agent={agent}")
        await wait_state(page, "listening", 30)
        await shot(page, name, "connected")

        await page.get_by_role("button", name="Turn microphone on").click()
        notice = page.locator(".notice")
        await expect(notice).to_contain_text("Microphone access was denied", timeout=15000)
        await expect(page.locator("#mic")).to_have_attribute("aria-pressed", "false")
        await shot(page, name, "mic-denied")

        box = page.get_by_label("Message")
        await box.fill("What color is the sky?")
        await box.press("Enter")
        await expect(page.locator(".msg.user .text")).to_have_text("What color is the sky?")
        await expect(box).to_have_value("")
        reply = page.locator(".msg.assistant")
        await expect(reply.locator(".text")).not_to_be_empty(timeout=REPLY_S * 1000)
        await wait_state(page, "listening")
        await expect(reply).not_to_have_class(re.compile("streaming"))
        await expect(reply.locator(".latency summary")).to_have_text(
            re.compile("to first text"), timeout=10000
        )
        await shot(page, name, "reply")
        assert "thinking" in await states_seen(page)
        # Screen readers hear the whole reply once it is complete.
        answer = (await reply.locator(".text").inner_text()).strip()
        await expect(page.locator("#announcer")).to_have_text(f"Assistant: {answer}")


async def test_reload_resumes_and_new_conversation_starts_over(stack) -> None:  # type: ignore[no-untyped-def]
    name = "reload"
    agent = await new_agent(stack.base_url, PLAIN)
    question = "What is the capital of France?"
    # The fake microphone starts its file again each time the page opens the microphone: the
    # same question is spoken before the reload and after it.
    async with browser_page(mic_wav(name, question)) as page:
        await page.goto(f"{stack.base_url}/?agent={agent}")
        await wait_state(page, "listening", 30)
        await mic_on(page)
        user = page.locator(".msg.user:not(.partial)")
        reply = page.locator(".msg.assistant")
        await expect(reply.locator(".text")).not_to_be_empty(timeout=REPLY_S * 1000)
        await wait_state(page, "listening")
        await expect(reply).not_to_have_class(re.compile("streaming"))
        heard = (await user.locator(".text").inner_text()).strip()
        assert heard.lower().count("capital") == 1, f"heard {heard!r}"
        answer = (await reply.locator(".text").inner_text()).strip()
        before = await saved_session(page)
        await shot(page, name, "before")

        await page.reload()
        await wait_state(page, "listening", 30)
        after = await saved_session(page)
        assert after["session_id"] == before["session_id"]
        assert after["token"] != before["token"]  # resumed with a fresh token
        await expect(page.locator(".msg")).to_have_count(2)
        await expect(user.locator(".text")).to_have_text(heard)
        assert (await reply.locator(".text").inner_text()).strip() == answer
        await shot(page, name, "after")

        # The same conversation goes on, spoken: the microphone opens again after the reload.
        await mic_on(page)
        await expect(page.locator(".msg.assistant")).to_have_count(2, timeout=REPLY_S * 1000)
        await wait_state(page, "listening")
        again = (await user.nth(1).locator(".text").inner_text()).strip()
        assert again.lower().count("capital") == 1, f"heard {again!r}"
        history = await stored_history(stack.base_url, after)
        assert [m["role"] for m in history] == ["user", "assistant"] * 2

        await page.get_by_role("button", name=re.compile("New")).click()
        await expect(page.locator(".msg")).to_have_count(0, timeout=15000)
        await wait_state(page, "listening", 30)
        fresh = await saved_session(page)
        assert fresh["session_id"] != before["session_id"]
        await expect(page.locator("#empty")).to_be_visible()
        await shot(page, name, "new-conversation")
        async with httpx.AsyncClient(base_url=stack.base_url) as c:
            r = await c.post(
                "/v1/sessions",
                json={"session_id": after["session_id"]},
                headers={"authorization": f"Bearer {after['token']}"},
            )
        assert r.status_code == 410, r.text  # the old conversation was ended


async def test_stop_button_interrupts_a_spoken_reply(stack) -> None:  # type: ignore[no-untyped-def]
    name = "stop"
    agent = await new_agent(stack.base_url, STORYTELLER)
    async with browser_page(mic_wav("silence")) as page:
        # ?raw-audio=1 (the browser's processing off) keeps working
        await page.goto(f"{stack.base_url}/?agent={agent}&raw-audio=1")
        await wait_state(page, "listening", 30)
        await mic_on(page)
        stop = page.get_by_role("button", name="Stop")
        await expect(stop).to_be_disabled()
        await asyncio.sleep(1.0)  # the peer connection is up: the reply is spoken too

        box = page.get_by_label("Message")
        await box.fill("Tell me a story about a dragon.")
        await box.press("Enter")
        await wait_state(page, "speaking")
        await expect(stop).to_be_enabled()
        for _ in range(50):  # audio is playing
            if await reply_level(page) > 0.3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        await shot(page, name, "speaking")

        await stop.click()
        cut = page.locator(".msg.assistant.interrupted")
        await expect(cut).to_have_count(1, timeout=10000)
        await wait_state(page, "listening", 10)
        await expect(stop).to_be_disabled()
        await shot(page, name, "stopped")

        await asyncio.sleep(0.5)
        levels = []
        for _ in range(10):
            levels.append(await reply_level(page))
            await asyncio.sleep(0.1)
        assert max(levels) < 0.2, f"reply audio went on after stop: levels {levels}"
        history = await stored_history(stack.base_url, await saved_session(page))
        assert history[-1]["interrupted"] is True
        assert (await cut.locator(".text").inner_text()).strip() == history[-1]["text"].strip()


async def test_connection_drop_reconnects_and_errors_are_shown(stack) -> None:  # type: ignore[no-untyped-def]
    name = "reconnect"
    agent = await new_agent(stack.base_url, PLAIN)
    async with browser_page(phone=True) as page:
        release = asyncio.Event()

        async def slow_start(route: Any) -> None:  # holds the page in "connecting"
            await release.wait()
            await route.continue_()

        await page.route("**/v1/sessions", slow_start)
        await page.goto(f"{stack.base_url}/?agent={agent}")
        await wait_state(page, "connecting", 10)
        await shot(page, name, "connecting")
        release.set()
        await wait_state(page, "listening", 30)
        await page.unroute("**/v1/sessions")
        session_id = (await saved_session(page))["session_id"]

        box = page.get_by_label("Message")
        await box.fill("What color is the sky?")
        await box.press("Enter")
        await expect(page.locator(".msg.assistant .text")).not_to_be_empty(timeout=REPLY_S * 1000)
        await wait_state(page, "listening")

        # The network goes away and the socket with it: the page says so and keeps retrying.
        await page.context.set_offline(True)
        await page.evaluate("window.voiceAssistant.socket.ws.close()")
        await wait_state(page, "disconnected", 10)
        await expect(page.locator(".notice")).to_contain_text("Reconnecting")
        await asyncio.sleep(1.5)  # a retry or two fail while offline
        await wait_state(page, "disconnected", 1)
        await shot(page, name, "disconnected")

        await page.context.set_offline(False)
        await wait_state(page, "listening", 20)
        await expect(page.locator(".notice")).to_contain_text("Reconnected")
        await expect(page.locator(".msg")).to_have_count(2)
        await expect(page.locator(".msg.assistant .latency")).to_have_count(1)  # kept
        await shot(page, name, "reconnected")
        assert (await saved_session(page))["session_id"] == session_id
        await box.fill("And the grass?")
        await box.press("Enter")
        await expect(page.locator(".msg.assistant")).to_have_count(2, timeout=REPLY_S * 1000)

        # A server error event is shown (here: the gateway refusing a malformed command).
        await page.evaluate("window.voiceAssistant.socket.ws.send('not json')")
        await expect(page.locator(".notice-error")).to_contain_text("not valid JSON")
        await shot(page, name, "server-error")


async def test_unknown_agent_shows_an_error(stack) -> None:  # type: ignore[no-untyped-def]
    name = "error"
    async with browser_page() as page:
        await page.goto(f"{stack.base_url}/?agent=no-such-agent")
        await wait_state(page, "error", 30)
        await expect(page.locator(".notice-error")).to_contain_text("Could not start")
        await expect(page.locator("#mic")).to_be_disabled()
        await shot(page, name, "unknown-agent")


def trusting_home(home: Path, ca: Path) -> Path:
    """A HOME whose NSS certificate store (the one Chromium on Linux reads) trusts `ca` as an
    authority for web sites: what a person does once on their laptop."""
    certutil = shutil.which("certutil")
    assert certutil, "certutil missing: apt-get install libnss3-tools (scripts/install.sh does)"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    subprocess.run(
        [certutil, "-A", "-d", f"sql:{db}", "-n", "voice-assistant", "-t", "C,,", "-i", str(ca)],
        check=True,
    )
    return home


async def test_a_device_on_the_network_talks_over_https(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The gateway's https listener on the veth address (another device's view of this machine),
    with a certificate of the local authority `scripts/run.sh --lan` makes: a browser that
    trusts the authority gets a secure page, the microphone, and an answer; one that does not
    trust it gets no page; the agents API there needs the key."""
    name = "lan-https"
    lan = ipaddress.ip_address("10.203.0.1")  # hv0, reached from the browser like a LAN address
    issued = tls.ensure(tmp_path / "tls", addresses=[lan, ipaddress.ip_address("127.0.0.1")])
    port, key = free_port(), "lan-test-key"
    gateway = stack.start(
        "gateway",
        env={
            "VA_TLS_CERT": str(issued.cert),
            "VA_TLS_KEY": str(issued.key),
            "VA_TLS_CA": str(issued.ca_cert),
            "VA_TLS_HOST": str(lan),
            "VA_TLS_PORT": str(port),
            "VA_API_KEYS": key,
        },
    )
    url = f"https://{lan}:{port}"
    try:
        async with httpx.AsyncClient(
            base_url=url, verify=ssl.create_default_context(cafile=issued.ca_cert)
        ) as c:
            r = await c.post("/v1/agents", json=PLAIN)
            assert r.status_code == 401, r.text  # the network cannot change the assistant
            r = await c.post("/v1/agents", json=PLAIN, headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
            agent = r.json()["agent_id"]
            r = await c.get("/ca.crt")
            assert r.status_code == 200 and r.content == issued.ca_cert.read_bytes()

        async with browser_page(home=tmp_path / "untrusting") as page:
            with pytest.raises(playwright_api.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(f"{url}/")

        wav = mic_wav(name, "What is the capital of France?")
        home = trusting_home(tmp_path / "home", issued.ca_cert)
        async with browser_page(wav, home=home, phone=True) as page:
            await page.goto(f"{url}/?agent={agent}")
            assert await page.evaluate("window.isSecureContext")
            await wait_state(page, "listening", 30)
            await mic_on(page)
            user = page.locator(".msg.user:not(.partial)")
            await expect(user).to_have_count(1, timeout=30000)
            heard = (await user.inner_text()).lower()
            assert "capital" in heard, heard
            await wait_state(page, "speaking")
            await expect(page.locator(".msg.assistant .text")).not_to_be_empty()
            await shot(page, name, "answered")
    finally:
        gateway.kill(signal.SIGTERM)
        gateway.wait(30)
        stack.by_kind["gateway"].remove(gateway)
