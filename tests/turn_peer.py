"""One end of a WebRTC call for tests/test_deploy.py's TURN check, run inside its own network
namespace: `python turn_peer.py gateway|browser SIGNAL_DIR ICE_SERVERS_JSON`.

Signalling goes through files in SIGNAL_DIR (the namespaces share the file system): the browser
writes `offer`, the gateway answers in `answer`. Each side sends audio and prints one JSON line:
{"role", "frames" (audio frames received), "state", "seconds"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

WANTED_FRAMES = 25  # half a second of audio


async def main(role: str, signal_dir: Path, ice_servers: list[dict[str, Any]]) -> None:
    # The gateway builds its configuration as services/gateway/webrtc.py does.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ice_servers]))
    got = asyncio.Event()
    frames = 0

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def receive() -> None:
            nonlocal frames
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()
                    frames += 1
                    if frames >= WANTED_FRAMES:
                        got.set()

        asyncio.ensure_future(receive())

    pc.addTrack(AudioStreamTrack())  # silence: enough to count frames arriving
    offer_file, answer_file = signal_dir / "offer", signal_dir / "answer"
    if role == "browser":
        await pc.setLocalDescription(await pc.createOffer())
        offer_file.write_text(pc.localDescription.sdp)
        while not answer_file.exists():
            await asyncio.sleep(0.05)
        await pc.setRemoteDescription(RTCSessionDescription(answer_file.read_text(), "answer"))
    else:
        while not offer_file.exists():
            await asyncio.sleep(0.05)
        await pc.setRemoteDescription(RTCSessionDescription(offer_file.read_text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer_file.write_text(pc.localDescription.sdp)
    t0 = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(got.wait(), 15)
    result = {
        "role": role,
        "frames": frames,
        "state": pc.connectionState,
        "seconds": round(time.monotonic() - t0, 2),
    }
    print(json.dumps(result), flush=True)
    await asyncio.sleep(0.5)  # let the other side count its frames too
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])))
