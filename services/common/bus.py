"""NATS plumbing shared by every service: connect, publish and request typed messages, and
subscribe with handlers that survive bad messages.

A handler never takes its service down: a payload that does not decode is logged (and answered
with an `RpcError` when the sender waits for a reply), and an exception in a handler is logged and
answered the same way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.context import Context
from pydantic import Field

from . import telemetry
from .messages import BadMessage, ErrorCode, Message, RpcError, decode

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)


def worker_id(kind: str) -> str:
    """Unique id of one replica: kind, host and pid (stable for the process's life)."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class BusUnavailable(RuntimeError):
    """Nobody answered a request: no replica of that stage is running, or it timed out."""


class NoResponders(BusUnavailable):
    """Nobody listens on the subject (no replica up, or none reconnected yet): the request
    reached no one, so sending it again cannot do its work twice."""


class NoAnswer(BusUnavailable):
    """The request timed out: it may have reached a replica (and its answer got lost), so
    sending it again may do its work twice unless the replier tells a repeat apart."""


class RemoteError(RuntimeError):
    def __init__(self, error: RpcError) -> None:
        super().__init__(error.message)
        self.error = error


async def connect(url: str, name: str, **kwargs: Any) -> NATS:
    """Connect to the server at `url`, or to one of a cluster's (`url` a comma list), and
    reconnect for ever: to another server of the list (or that the cluster told of) at once."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    servers = [u.strip() for u in url.split(",") if u.strip()]
    return await nats.connect(
        servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **kwargs,
    )


async def publish(
    nc: NATS,
    subject: str,
    msg: Message,
    headers: dict[str, str] | None = None,
    ctx: Context | None = None,
) -> None:
    """Publish `msg` with the current (or the given) trace context in its headers."""
    await nc.publish(subject, msg.encode(), headers=telemetry.inject(headers, ctx))


async def request(
    nc: NATS,
    subject: str,
    msg: Message,
    reply_kind: type[R],
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
    ctx: Context | None = None,
) -> R:
    """Send a request and decode its reply as `reply_kind`. Raises BusUnavailable when nobody
    answers, RemoteError when the replier answered with an RpcError, and BadMessage when the reply
    is neither. The request gets a PRODUCER span (child of `ctx`, or of the current span)."""
    try:
        with telemetry.send_span(subject, ctx) as span_ctx:
            resp = await nc.request(
                subject, msg.encode(), timeout=timeout, headers=telemetry.inject(headers, span_ctx)
            )
    except NoRespondersError as exc:
        raise NoResponders(f"no service answers on {subject}") from exc
    except (TimeoutError, NatsTimeoutError) as exc:
        raise NoAnswer(f"no answer on {subject} within {timeout:.1f} s") from exc
    answer: R | RpcError = decode(_reply_or_error(reply_kind), resp.data)
    if isinstance(answer, RpcError):
        raise RemoteError(answer)
    return answer


async def request_patiently(
    nc: NATS,
    subject: str,
    msg: Message,
    reply_kind: type[R],
    *,
    timeout: float,
    wait_s: float,
    again: Callable[[BusUnavailable | RemoteError], bool],
    waiting: Callable[[float, str], Awaitable[None]] | None = None,
    ctx: Context | None = None,
) -> R:
    """`request`, asked again while `again(error)` holds (no replica up yet: a warm-up, a
    reconnection, a rolling update; or all busy), with a growing pause (0.1 s up to 1 s), for up
    to `wait_s`; `waiting(seconds left, why)` before each pause. At the deadline raises
    BusUnavailable; an error `again` refuses is raised at once."""
    deadline = asyncio.get_running_loop().time() + wait_s
    pause = 0.1
    while True:
        try:
            return await request(nc, subject, msg, reply_kind, timeout=timeout, ctx=ctx)
        except (BusUnavailable, RemoteError) as exc:
            if not again(exc):
                raise
            why = str(exc)
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise BusUnavailable(f"{why} (asked for {wait_s:g} s)")
        if waiting is not None:
            await waiting(left, why)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


@functools.cache
def _reply_or_error(reply_kind: type[Message]) -> Any:
    """`reply_kind` or an `RpcError`, told apart by `type` (one union per kind, so `decode`
    builds its adapter once)."""
    return Annotated[reply_kind | RpcError, Field(discriminator="type")]


async def reply(msg: Msg, answer: Message) -> None:
    if msg.reply:
        await msg.respond(answer.encode())


Handler = Callable[[Any, Msg], Awaitable[Message | None]]


def typed_handler(kind: Any, fn: Handler, *, name: str) -> Callable[[Msg], Awaitable[None]]:
    """Wrap `fn(decoded, msg)` so a bad payload or an exception never escapes.

    If the message has a reply subject, the value `fn` returns is sent back; a bad payload or an
    exception is answered with an RpcError.
    """

    async def callback(msg: Msg) -> None:
        try:
            value = decode(kind, msg.data)
        except BadMessage as exc:
            log.warning("%s: bad message on %s: %s", name, msg.subject, exc)
            await _answer_error(msg, RpcError(code=ErrorCode.BAD_MESSAGE, message=str(exc)))
            return
        try:
            with telemetry.consume_span(msg, name):
                answer = await fn(value, msg)
        except asyncio.CancelledError:
            raise
        except RemoteError as exc:
            await _answer_error(msg, exc.error)
        except Exception as exc:  # a service never dies on one message
            log.exception("%s: handler failed on %s", name, msg.subject)
            await _answer_error(
                msg, RpcError(code=ErrorCode.INTERNAL, message=str(exc)[:300], status=500)
            )
            return
        if answer is not None:
            await reply(msg, answer)

    return callback


async def _answer_error(msg: Msg, error: RpcError) -> None:
    if msg.reply:
        try:
            await msg.respond(error.encode())
        except Exception:  # the requester may be gone
            log.debug("could not answer %s", msg.subject, exc_info=True)
