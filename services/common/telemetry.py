"""Tracing: one trace per conversation turn across the five services.

W3C trace context travels in NATS message headers, following the OpenTelemetry messaging
conventions: publishers inject `traceparent`; consumers extract it and open a CONSUMER span named
after the low-cardinality subject template (`process va.llm.claim`), with the session id as an
attribute. The gateway opens a turn's root span at speech onset (or when text arrives); every
stage's span is a descendant, carrying its figures (the `ATTR_*` names below).

The SDK is configured from the standard `OTEL_*` settings (endpoint, sampler, service name). With
no OTLP endpoint set no exporter is installed and spans cost next to nothing. User text and
audio never go into spans unless `VA_TRACE_CONTENT=true`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context

from . import subjects

log = logging.getLogger(__name__)

tracer = trace.get_tracer("voice-assistant")

# Attribute names (one place, as LiveKit's telemetry/trace_types.py).
ATTR_SESSION = "va.session_id"
ATTR_TURN = "va.turn_id"
ATTR_REPLY = "va.reply_id"
ATTR_SOURCE = "va.source"
ATTR_WORKER = "va.worker_id"
ATTR_TEXT = "va.text"  # only with VA_TRACE_CONTENT=true
ATTR_ASR_MS = "va.asr.duration_ms"
ATTR_ASR_CLEANED = "va.asr.cleaned"  # the guard took a repeat or a sound caption out
ATTR_AUDIO_MS = "va.audio_ms"
ATTR_LLM_TTFT_MS = "va.llm.time_to_first_token_ms"
ATTR_LLM_TPS = "va.llm.tokens_per_s"
ATTR_LLM_TOKENS = "va.llm.tokens"
ATTR_TTS_FIRST_MS = "va.tts.time_to_first_audio_ms"
ATTR_TTS_RTF = "va.tts.real_time_factor"
ATTR_FIRST_AUDIO_MS = "va.end_of_speech_to_first_audio_ms"
ATTR_EOT_MS = "va.end_of_turn_ms"
ATTR_EOT_JUDGED = "va.end_of_turn.judged"  # complete | unsure | incomplete (semantic)
ATTR_EOT_P_AUDIO = "va.end_of_turn.p_audio"  # the end-of-turn model's P(finished)
ATTR_EOT_TEXT_CUE = "va.end_of_turn.text_cue"  # what the transcript so far said, if anything
ATTR_EOT_WINDOW_MS = "va.end_of_turn.window_ms"  # the silence the verdict waits
ATTR_INTERRUPTED = "va.interrupted"
ATTR_REASON = "va.interrupt.reason"
ATTR_OUTCOME = "va.outcome"
ATTR_TOOL_CALLS = "va.llm.tool_calls"  # the names of the tools a generation called
ATTR_TOOL_NAME = "va.tool.name"
ATTR_TOOL_CALL_ID = "va.tool.call_id"
ATTR_TOOL_OUTCOME = "va.tool.outcome"  # ok | error | unknown | refused
ATTR_TOOL_SIDE_EFFECTS = "va.tool.side_effects"

_content = False
_provider: Any = None


def setup(service: str, endpoint: str | None, trace_content: bool = False) -> None:
    """Install the SDK's tracer provider when an OTLP endpoint is configured.

    The exporter, sampler (OTEL_TRACES_SAMPLER / _ARG) and batch settings (OTEL_BSP_*) come from
    the standard environment variables, read by the SDK itself.
    """
    global _content, _provider
    _content = trace_content
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: f"va-{service}"})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    log.info("tracing to %s", endpoint)


def shutdown() -> None:
    if _provider is not None:
        _provider.shutdown()


def content_enabled() -> bool:
    return _content


def inject(
    headers: dict[str, str] | None = None, ctx: Context | None = None
) -> dict[str, str] | None:
    carrier: dict[str, str] = dict(headers) if headers else {}
    propagate.inject(carrier, context=ctx)
    return carrier or None


def extract(headers: dict[str, str] | None) -> Context:
    return propagate.extract(headers or {})


@contextmanager
def consume_span(msg: Any, handler: str) -> Iterator[None]:
    """Attach the message's trace context and open its CONSUMER span for the handler's run."""
    token = context.attach(extract(msg.headers))
    try:
        template = subjects.template(msg.subject)
        attrs: dict[str, Any] = {
            "messaging.system": "nats",
            "messaging.destination.name": template,
            "messaging.operation.name": "process",
        }
        sid = subjects.session_of(msg.subject)
        if sid:
            attrs[ATTR_SESSION] = sid
        with tracer.start_as_current_span(
            f"process {template}", kind=trace.SpanKind.CONSUMER, attributes=attrs
        ):
            yield
    finally:
        context.detach(token)


@contextmanager
def send_span(subject: str, ctx: Context | None = None) -> Iterator[Context]:
    """A PRODUCER span around a request; yields the context to inject into its headers."""
    template = subjects.template(subject)
    with tracer.start_as_current_span(
        f"send {template}",
        context=ctx,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": template,
            "messaging.operation.name": "send",
        },
    ):
        yield context.get_current()


def ms_to_ns(ms: float) -> int:
    return int(ms * 1_000_000)
