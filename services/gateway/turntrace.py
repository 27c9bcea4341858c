"""The root span of each turn, held by the gateway that saw the turn begin.

A turn's trace starts at speech onset (or when typed text arrives) and ends when its reply is
done, failed, or turned out to be noise. Stages the gateway measures itself (end-of-turn
detection, end of speech to first audio, an interruption) are child spans with their real start
and end times; the other services' spans join through the trace context in message headers.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from services.common import telemetry as tm
from services.common.messages import now_ms


class TurnTraces:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._spans: dict[str, trace.Span] = {}
        self.speech_end_ms: dict[str, float] = {}

    def start(self, turn_id: str, source: str, start_ms: float | None = None) -> Context:
        span = tm.tracer.start_span(
            "turn",
            context=Context(),  # a new trace: not a child of the request that set up media
            kind=trace.SpanKind.SERVER,
            start_time=tm.ms_to_ns(start_ms) if start_ms else None,
            attributes={
                tm.ATTR_SESSION: self.session_id,
                tm.ATTR_TURN: turn_id,
                tm.ATTR_SOURCE: source,
            },
        )
        self._spans[turn_id] = span
        return trace.set_span_in_context(span)

    def ctx(self, turn_id: str | None) -> Context | None:
        span = self._spans.get(turn_id or "")
        return trace.set_span_in_context(span) if span is not None else None

    def stage(
        self,
        turn_id: str | None,
        name: str,
        start_ms: float,
        attrs: dict[str, Any] | None = None,
        end_ms: float | None = None,
    ) -> None:
        """A finished child span of the turn with its measured start and end."""
        ctx = self.ctx(turn_id)
        if ctx is None:
            return
        span = tm.tracer.start_span(
            name,
            context=ctx,
            start_time=tm.ms_to_ns(start_ms),
            attributes={k: v for k, v in (attrs or {}).items() if v is not None},
        )
        span.end(end_time=tm.ms_to_ns(end_ms if end_ms is not None else now_ms()))

    def end(self, turn_id: str | None, outcome: str, attrs: dict[str, Any] | None = None) -> None:
        span = self._spans.pop(turn_id or "", None)
        self.speech_end_ms.pop(turn_id or "", None)
        if span is not None:
            span.set_attribute(tm.ATTR_OUTCOME, outcome)
            for key, value in (attrs or {}).items():
                if value is not None:
                    span.set_attribute(key, value)
            span.end()

    def close_all(self) -> None:
        for turn_id in list(self._spans):
            self.end(turn_id, "abandoned")
