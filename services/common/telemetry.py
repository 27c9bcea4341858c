"""W3C trace context on NATS headers, following the OpenTelemetry messaging conventions.

Publishers inject `traceparent` into the message headers; consumers extract it and open a
CONSUMER span named after the subject template, with the session id as an attribute. With no
tracer provider configured these are no-ops (the OpenTelemetry API's default).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace

from . import subjects

tracer = trace.get_tracer("voice-assistant")

ATTR_SESSION = "va.session_id"
ATTR_TURN = "va.turn_id"
ATTR_REPLY = "va.reply_id"


def inject(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    carrier: dict[str, str] = dict(headers) if headers else {}
    propagate.inject(carrier)
    return carrier or None


@contextmanager
def consume_span(msg: Any, handler: str) -> Iterator[None]:
    ctx = propagate.extract(msg.headers or {})
    token = context.attach(ctx)
    try:
        parts = msg.subject.split(".")
        attrs = {
            "messaging.system": "nats",
            "messaging.destination.name": subjects.template(msg.subject),
        }
        if len(parts) >= 4:
            attrs[ATTR_SESSION] = parts[3] if parts[1] in {"asr", "llm", "tts"} else parts[-1]
        with tracer.start_as_current_span(
            f"process {subjects.template(msg.subject)}",
            kind=trace.SpanKind.CONSUMER,
            attributes=attrs,
        ):
            yield
    finally:
        context.detach(token)
