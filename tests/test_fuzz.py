"""Hostile input, generated: the HTTP API against its own OpenAPI schema (schemathesis) and the
bus message decoders (hypothesis).

Invariants protected: no input makes the gateway answer 5xx or takes a service down, and every
rejected input gets a clear, typed error (an HTTP status with a code, or `BadMessage`).
"""

from __future__ import annotations

import json
import typing

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from harness.services import start_stack
from services.common import messages as m

API_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(
        procs_module,
        replicas={"asr": 0, "llm": 0, "tts": 0},
        env={"gateway": {"VA_API_KEYS": API_KEY, "VA_SESSION_CREATE_RATE": "100000/minute"}},
    )


def test_http_api_never_answers_5xx(stack) -> None:  # type: ignore[no-untyped-def]
    """Every operation of the gateway's OpenAPI schema, with generated bodies, paths, queries
    and headers (schemathesis): never a 5xx, and every refusal carries an error code."""
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.headers = {**(case.headers or {}), "x-api-key": API_KEY}
            response = case.call(base_url=stack.base_url)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                body = response.json()
                assert body.get("code") or body.get("detail"), body

        run()


def test_every_service_is_still_up(stack) -> None:  # type: ignore[no-untyped-def]
    for procs in stack.by_kind.values():
        for sp in procs:
            assert sp.alive() and sp.ready(), sp.log_tail()


# -- bus decoders ---------------------------------------------------------------------------------
KINDS: list[typing.Any] = [
    cls
    for cls in vars(m).values()
    if isinstance(cls, type) and issubclass(cls, m.Message) and cls is not m.Message
] + [m.ClientEvent, m.ClientCommand, m.LLMOut, m.TTSOut, m.PlaybackEvent]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)


def decode_or_badmessage(kind: typing.Any, data: bytes) -> None:
    try:
        m.decode(kind, data)
    except m.BadMessage as exc:
        assert str(exc)  # says what is wrong


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: getattr(k, "__name__", str(k)))
@given(data=st.binary(max_size=300))
@settings(max_examples=60, deadline=None)
def test_decoders_take_any_bytes(kind: typing.Any, data: bytes) -> None:
    decode_or_badmessage(kind, data)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: getattr(k, "__name__", str(k)))
@given(value=json_values)
@settings(max_examples=60, deadline=None)
def test_decoders_take_any_json(kind: typing.Any, value: typing.Any) -> None:
    decode_or_badmessage(kind, json.dumps(value).encode())


@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["session_id", "turn_id", "text", "source", "voice", "type", "v", "speculative"]
        ),
        json_values,
        max_size=8,
    )
)
@settings(max_examples=200, deadline=None)
def test_turn_submit_near_misses(fields: dict[str, typing.Any]) -> None:
    fields.setdefault("type", "turn.submit")
    decode_or_badmessage(m.TurnSubmit, json.dumps(fields).encode())
