"""The far end of the raw NATS measurements, in a process of its own and written the way the
services use nats-py (one connection, callbacks on the event loop):

    python -m bench.bus_peer NATS_URL OUT.json

- `bench.raw.echo`: answers every request with its payload (request/reply round trips);
- `bench.raw.oneway.>`: stamps every message with `time.time()` in its callback and keeps
  (seq, sent, received), the sender's stamp coming from the `Bench-T` / `Bench-Seq` headers.

Prints `ready` once subscribed (after a flush, so the server has the subscriptions); on SIGTERM
or SIGINT writes `{"oneway": [[subject, seq, sent, received], ...]}` to OUT and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import nats
from nats.aio.msg import Msg

ECHO = "bench.raw.echo"
ONEWAY = "bench.raw.oneway"


async def serve(url: str, out: Path) -> None:
    nc = await nats.connect(url, name="bench-peer")
    received: list[tuple[str, int, float, float]] = []

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    async def sink(msg: Msg) -> None:
        t = time.time()
        h = msg.headers or {}
        received.append((msg.subject, int(h.get("Bench-Seq", -1)), float(h.get("Bench-T", 0)), t))

    await nc.subscribe(ECHO, cb=echo)
    await nc.subscribe(f"{ONEWAY}.>", cb=sink)
    await nc.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await nc.drain()
    text = json.dumps({"oneway": [list(r) for r in received]})
    await asyncio.to_thread(out.write_text, text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.run(serve(args[0], Path(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
