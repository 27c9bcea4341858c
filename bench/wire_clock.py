"""When each RTP packet reached a simulated client's socket, as the kernel stamped it.

The scale benchmark's target is about the gateway: no gap over 60 ms between the reply frames it
delivers. A simulated client is a Python process that shares the two cores with the gateway and
with four other client processes; when it stalls (the scheduler, its decoder thread holding the
GIL), every frame of its sessions reaches the recorder late, and the gap is the client's, not
the gateway's. Browsers play audio from a real-time thread, so such stalls are the simulator's
own. The kernel's receive time of each packet (`SO_TIMESTAMPNS`) does not move with the client:
on one host it is the moment the gateway's send reached the socket.

`install()` makes every asyncio datagram transport of this process read with `recvmsg` and
note the stamp of each RTP packet, keyed by its stream (SSRC) and RTP timestamp, which aiortc's
receiver hands on as the decoded frame's `pts` (counted from the stream's first packet);
`take(ssrc, pts)` then gives the frame's arrival (time.monotonic() scale). Only for benchmark
client processes on asyncio's selector loop: it replaces one private method of asyncio
(`_SelectorDatagramTransport._read_ready`, same behaviour apart from the stamp). STUN, DTLS and
RTCP packets pass through unstamped.
"""

from __future__ import annotations

import socket
import struct
import time
from asyncio import selector_events
from collections import OrderedDict

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_ANCILLARY = socket.CMSG_SPACE(16)  # struct timespec
_KEEP = 20_000  # stamps not taken (frames dropped, peers closed) are forgotten past this many

_stamps: OrderedDict[tuple[int, int], float] = OrderedDict()  # (SSRC, timestamp) -> arrival
_origins: dict[int, int] = {}  # SSRC -> its first packet's RTP timestamp
_installed = False


def _note(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> None:
    # RTP version 2, and not RTCP (payload types 192-223 share that byte: RFC 5761)
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
        return
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack_from("qq", raw)
            rtp_ts, ssrc = struct.unpack_from("!II", data, 4)
            # aiortc's receiver counts a stream's timestamps from its first packet
            origin = _origins.setdefault(ssrc, rtp_ts)
            key = (ssrc, (rtp_ts - origin) & 0xFFFFFFFF)
            _stamps[key] = sec + nsec / 1e9 - (time.time() - time.monotonic())
            if len(_stamps) > _KEEP:
                _stamps.popitem(last=False)
            return


def _read_ready(self: selector_events._SelectorDatagramTransport) -> None:  # type: ignore[name-defined]
    if self._conn_lost:
        return
    sock = self._sock
    if not getattr(self, "_va_stamped", False):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._va_stamped = True
    try:
        data, ancillary, _flags, addr = sock.recvmsg(self.max_size, _ANCILLARY)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as exc:
        self._protocol.error_received(exc)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, "Fatal read error on datagram transport")
    else:
        _note(data, ancillary)
        self._protocol.datagram_received(data, addr)


def install() -> bool:
    """Stamp RTP packets from now on; False where the platform cannot."""
    global _installed
    if not hasattr(socket.socket, "recvmsg") or not hasattr(
        selector_events, "_SelectorDatagramTransport"
    ):
        return False
    if not _installed:
        selector_events._SelectorDatagramTransport._read_ready = _read_ready  # type: ignore[attr-defined]
        _installed = True
    return True


def take(ssrc: int | None, pts: int | None) -> float | None:
    """The kernel arrival (time.monotonic() seconds) of the packet of stream `ssrc` that a
    decoded frame came from, once. aiortc's receiver sets the frame's `pts` to the packet's RTP
    timestamp counted from the stream's first packet."""
    if ssrc is None or pts is None:
        return None
    return _stamps.pop((ssrc, pts & 0xFFFFFFFF), None)
