"""The shared vocabulary (services/common): the audio chunk header codec, the ASR control words,
the subject parser, the RPC methods and the typed request.

Invariants protected: what a writer encodes, a reader decodes to the same values, and the wire
form stays what it was (`Va-Type: audio`, `Va-Reply`, `Va-Turn`, `Va-Segment`, `Va-Rate`;
`Va-Ctl: peek | resume | end | cancel`; `va.…` subjects). A malformed header is a `BadMessage`
that names what is wrong; no reader guesses a missing sample rate. Every subject a builder makes
parses back to its kind, session and id, and its span name template is unchanged; a subject
outside the map parses to None. `bus.request` tells an error answer from a reply by decoding it,
so a reply whose text merely mentions `"type":"rpc.error"` is still the reply.
"""

from __future__ import annotations

import json

import nats
import pytest
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common.messages import (
    RPC_REQUESTS,
    AsrControl,
    AsrEnd,
    AsrResult,
    AudioChunkHeader,
    BadMessage,
    ErrorCode,
    RpcError,
    RpcMethod,
    rpc_method,
)
from services.common.subjects import Kind

WIRE = {
    "Va-Type": "audio",
    "Va-Reply": "r1",
    "Va-Turn": "t1",
    "Va-Segment": "3",
    "Va-Rate": "22050",
}


# -- the audio chunk header ---------------------------------------------------------------------
def test_an_audio_chunk_header_round_trips_in_its_wire_form() -> None:
    header = AudioChunkHeader(reply_id="r1", turn_id="t1", segment=3, sample_rate=22050)
    assert header.encode() == WIRE
    assert AudioChunkHeader.decode(header.encode()) == header
    assert AudioChunkHeader.is_audio(WIRE)


def test_a_json_message_is_not_an_audio_chunk() -> None:
    assert not AudioChunkHeader.is_audio(None)
    assert not AudioChunkHeader.is_audio({})
    assert not AudioChunkHeader.is_audio({"traceparent": "00-0-0-01"})
    with pytest.raises(BadMessage, match="not an audio chunk"):
        AudioChunkHeader.decode(None)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"Va-Rate": None}, "Va-Rate is missing"),  # no hidden default rate
        ({"Va-Rate": "fast"}, "Va-Rate is not a number"),
        ({"Va-Rate": "0"}, "Va-Rate is 0"),
        ({"Va-Segment": "-1"}, "Va-Segment is -1"),
        ({"Va-Segment": None}, "Va-Segment is missing"),
        ({"Va-Reply": ""}, "Va-Reply is missing"),
        ({"Va-Turn": None}, "Va-Turn is missing"),
    ],
)
def test_a_malformed_audio_chunk_header_says_what_is_wrong(
    change: dict[str, str | None], complaint: str
) -> None:
    headers = {**WIRE, **change}
    wire = {k: v for k, v in headers.items() if v is not None}
    with pytest.raises(BadMessage, match=complaint):
        AudioChunkHeader.decode(wire)


# -- ASR control words --------------------------------------------------------------------------
def test_asr_control_words_round_trip_in_their_wire_form() -> None:
    assert [c.value for c in AsrControl] == ["peek", "resume", "end", "cancel"]
    for ctl in AsrControl:
        assert ctl.headers() == {"Va-Ctl": ctl.value}
        assert AsrControl.decode(ctl.headers()) is ctl
    assert AsrControl.decode(None) is None  # an audio frame
    assert AsrControl.decode({"traceparent": "00-0-0-01"}) is None
    with pytest.raises(BadMessage, match="unknown Va-Ctl word: 'stop'"):
        AsrControl.decode({"Va-Ctl": "stop"})


# -- subjects -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "kind", "session", "ident", "template"),
    [
        (subjects.ASR_CLAIM, Kind.ASR_CLAIM, None, None, "va.asr.claim"),
        (
            subjects.asr_utterance("S", "T"),
            Kind.ASR_UTTERANCE,
            "S",
            "T",
            "va.asr.utt.{session}.{id}",
        ),
        (subjects.SESSION_TURN, Kind.SESSION_TURN, None, None, "va.session.turn"),
        (subjects.SESSION_PREFILL, Kind.SESSION_PREFILL, None, None, "va.session.prefill"),
        (
            subjects.session_rpc(RpcMethod.GET_AGENT),
            Kind.SESSION_RPC,
            None,
            "get_agent",
            "va.session.rpc.get_agent",
        ),
        (subjects.LLM_CLAIM, Kind.LLM_CLAIM, None, None, "va.llm.claim"),
        (subjects.llm_out("S", "X"), Kind.LLM_OUT, "S", "X", "va.llm.out.{session}.{id}"),
        (subjects.TTS_CLAIM, Kind.TTS_CLAIM, None, None, "va.tts.claim"),
        (subjects.tts_in("S", "R"), Kind.TTS_IN, "S", "R", "va.tts.in.{session}.{id}"),
        (
            subjects.tts_out("S", subjects.TtsPart.CTL),
            Kind.TTS_OUT,
            "S",
            "ctl",
            "va.tts.out.{session}.ctl",
        ),
        (
            subjects.tts_out("S", subjects.TtsPart.AUDIO),
            Kind.TTS_OUT,
            "S",
            "audio",
            "va.tts.out.{session}.audio",
        ),
        (subjects.playback("S"), Kind.PLAYBACK, "S", None, "va.playback.{session}"),
        (subjects.events("S"), Kind.EVENTS, "S", None, "va.events.{session}"),
        (subjects.interrupt("S"), Kind.INTERRUPT, "S", None, "va.ctl.interrupt.{session}"),
        (subjects.work_claimed("S"), Kind.WORK_CLAIMED, "S", None, "va.work.claimed.{session}"),
    ],
)
def test_every_subject_parses_back_to_what_built_it(
    subject: str, kind: Kind, session: str | None, ident: str | None, template: str
) -> None:
    assert subjects.parse(subject) == subjects.Subject(kind, session, ident)
    assert subjects.template(subject) == template
    assert subjects.session_of(subject) == session


@pytest.mark.parametrize(
    "subject",
    [
        "_INBOX.abc.def",
        "bench.tap.probe",
        "va",
        "va.nothing.S",
        "va.asr.utt.S",  # the turn is missing
        "va.tts.out.S",  # the part is missing
        "va.tts.out.S.extra",
        "va.events..",
        "va.events.",
    ],
)
def test_a_subject_outside_the_map_parses_to_none(subject: str) -> None:
    assert subjects.parse(subject) is None
    assert subjects.template(subject) == subject
    assert subjects.session_of(subject) is None


# -- RPC methods and error codes ------------------------------------------------------------------
def test_every_rpc_method_has_its_request_and_subject() -> None:
    assert set(RPC_REQUESTS) == set(RpcMethod)
    for method, kind in RPC_REQUESTS.items():
        assert rpc_method(kind.model_construct()) is method
        # the request's type names its method (the wire form of both is unchanged)
        assert kind.model_fields["type"].default == f"rpc.{method.value}"
        parsed = subjects.parse(subjects.session_rpc(method))
        assert parsed is not None and parsed.id == method


def test_error_codes_are_their_wire_strings() -> None:
    error = RpcError(code=ErrorCode.BUSY, message="at capacity")
    assert error.encode().startswith(b'{"v":1,"type":"rpc.error","code":"busy"')
    assert ErrorCode.TURN_FAILED == "turn_failed"


# -- the typed request ----------------------------------------------------------------------------
async def test_request_tells_an_error_answer_from_a_reply_by_decoding(nats_url: str) -> None:
    subject = subjects.asr_utterance("vocab", "t")
    result = AsrResult(turn_id="t", text="hi", asr_ms=1.0, audio_ms=1.0, worker_id="w")
    # A newer replica's reply with a field this one does not know, which happens to hold the
    # bytes `"type":"rpc.error"`: still the reply.
    newer = {**result.model_dump(), "note": {"type": "rpc.error"}}
    nc = await nats.connect(nats_url)
    try:

        async def answer(msg: Msg) -> None:
            if AsrControl.decode(msg.headers) is AsrControl.END:
                await msg.respond(RpcError(code=ErrorCode.BUSY, message="at capacity").encode())
            else:
                await msg.respond(json.dumps(newer, separators=(",", ":")).encode())

        await nc.subscribe(subject, cb=answer)
        got = await bus.request(nc, subject, AsrEnd(speech_end_ms=1.0), AsrResult)
        assert got == result
        with pytest.raises(bus.RemoteError) as failed:
            await bus.request(
                nc, subject, AsrEnd(speech_end_ms=1.0), AsrResult, headers=AsrControl.END.headers()
            )
        assert failed.value.error.code == ErrorCode.BUSY
        assert failed.value.error.message == "at capacity"
    finally:
        await nc.close()
