"""Every NATS subject the services use, built in one place.

No service writes a subject string inline: it calls a builder here. Tokens are ids the session
service generated (url-safe, no dots), so they are safe as subject tokens; `check_token` guards the
few places where an id comes from outside.

Subject map (see docs/architecture.md for who publishes and who subscribes):

    va.asr.claim                      request, queue group "asr": claim one utterance
    va.asr.utt.{sid}.{tid}            core: PCM16 frames of one utterance, then an `end` request
    va.session.turn                   request, queue group "session": submit one turn
    va.session.rpc.{method}           request, queue group "session-rpc": agents and sessions API
    va.llm.claim                      request, queue group "llm": claim one reply generation
    va.llm.out.{sid}.{rid}            LLM deltas / done / error for one reply
    va.tts.claim                      request, queue group "tts": claim one reply synthesis
    va.tts.in.{sid}.{rid}             text for TTS of one reply (clauses), then a final marker
    va.tts.out.{sid}.ctl              TTS segments and done markers (gateway and session)
    va.tts.out.{sid}.audio            TTS audio chunks (the gateway only)
    va.playback.{sid}                 gateway -> session: playback started / done of a reply
    va.events.{sid}                   client events (the WebSocket schema), gateway forwards them
    va.ctl.interrupt.{sid}            interrupts: every LLM, TTS and session replica subscribes
    va.work.claimed.{sid}             observability: which replica claimed which work

`parse` reads a subject back (its kind, session and id): the one place that splits a subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "va"

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidSubjectToken(ValueError):
    """An id that cannot be a NATS subject token."""


def check_token(value: str) -> str:
    if not _TOKEN_RE.match(value):
        raise InvalidSubjectToken(f"not a valid id: {value[:70]!r}")
    return value


# -- queue groups -----------------------------------------------------------------------------
QUEUE_ASR = "asr"
QUEUE_LLM = "llm"
QUEUE_TTS = "tts"
QUEUE_SESSION = "session"
QUEUE_SESSION_RPC = "session-rpc"

# -- claims and requests ----------------------------------------------------------------------
ASR_CLAIM = f"{PREFIX}.asr.claim"
LLM_CLAIM = f"{PREFIX}.llm.claim"
TTS_CLAIM = f"{PREFIX}.tts.claim"
SESSION_TURN = f"{PREFIX}.session.turn"
SESSION_PREFILL = f"{PREFIX}.session.prefill"


def session_rpc(method: str) -> str:
    return f"{PREFIX}.session.rpc.{check_token(method)}"


SESSION_RPC_ALL = f"{PREFIX}.session.rpc.*"


# -- streams ----------------------------------------------------------------------------------
def asr_utterance(session_id: str, turn_id: str) -> str:
    return f"{PREFIX}.asr.utt.{session_id}.{turn_id}"


def llm_out(session_id: str, reply_id: str) -> str:
    return f"{PREFIX}.llm.out.{session_id}.{reply_id}"


def tts_in(session_id: str, reply_id: str) -> str:
    return f"{PREFIX}.tts.in.{session_id}.{reply_id}"


class TtsPart(StrEnum):
    """The two halves of a session's TTS output: the session needs only the control half."""

    CTL = "ctl"  # tts.segment, tts.done
    AUDIO = "audio"  # raw PCM16 chunks with an AudioChunkHeader


def tts_out(session_id: str, part: TtsPart) -> str:
    return f"{PREFIX}.tts.out.{session_id}.{part}"


def tts_out_all(session_id: str) -> str:
    """Both halves on one subscription, so segments, audio and done arrive in publish order."""
    return f"{PREFIX}.tts.out.{session_id}.*"


def playback(session_id: str) -> str:
    return f"{PREFIX}.playback.{session_id}"


def events(session_id: str) -> str:
    return f"{PREFIX}.events.{session_id}"


def interrupt(session_id: str) -> str:
    return f"{PREFIX}.ctl.interrupt.{session_id}"


INTERRUPT_ALL = f"{PREFIX}.ctl.interrupt.*"


def work_claimed(session_id: str) -> str:
    return f"{PREFIX}.work.claimed.{session_id}"


WORK_CLAIMED_ALL = f"{PREFIX}.work.claimed.*"


# -- reading a subject back --------------------------------------------------------------------
class Kind(StrEnum):
    """What a subject is: the tokens after the prefix that name it."""

    ASR_CLAIM = "asr.claim"
    ASR_UTTERANCE = "asr.utt"
    SESSION_TURN = "session.turn"
    SESSION_PREFILL = "session.prefill"
    SESSION_RPC = "session.rpc"
    LLM_CLAIM = "llm.claim"
    LLM_OUT = "llm.out"
    TTS_CLAIM = "tts.claim"
    TTS_IN = "tts.in"
    TTS_OUT = "tts.out"
    PLAYBACK = "playback"
    EVENTS = "events"
    INTERRUPT = "ctl.interrupt"
    WORK_CLAIMED = "work.claimed"


# The tokens after a kind's name: a session id, then an id (turn, stream or reply), a method, or
# a part (kept, like a method, in the low-cardinality template).
_SESSION, _ID, _METHOD, _PART = "{session}", "{id}", "{method}", "{part}"
_SHAPES: dict[Kind, tuple[str, ...]] = {
    Kind.ASR_CLAIM: (),
    Kind.ASR_UTTERANCE: (_SESSION, _ID),
    Kind.SESSION_TURN: (),
    Kind.SESSION_PREFILL: (),
    Kind.SESSION_RPC: (_METHOD,),
    Kind.LLM_CLAIM: (),
    Kind.LLM_OUT: (_SESSION, _ID),
    Kind.TTS_CLAIM: (),
    Kind.TTS_IN: (_SESSION, _ID),
    Kind.TTS_OUT: (_SESSION, _PART),
    Kind.PLAYBACK: (_SESSION,),
    Kind.EVENTS: (_SESSION,),
    Kind.INTERRUPT: (_SESSION,),
    Kind.WORK_CLAIMED: (_SESSION,),
}
_BY_NAME = {tuple(kind.value.split(".")): kind for kind in Kind}


@dataclass(frozen=True)
class Subject:
    """A subject read back by `parse`."""

    kind: Kind
    session_id: str | None = None
    id: str | None = None  # turn id (asr.utt), stream id (llm.out), reply id (tts.in), method,
    # or part (tts.out)

    @property
    def template(self) -> str:
        """Low-cardinality form for span and metric names: ids replaced, methods kept."""
        shape = [(self.id or "") if t in (_METHOD, _PART) else t for t in _SHAPES[self.kind]]
        return ".".join([PREFIX, self.kind.value, *shape])


def parse(subject: str) -> Subject | None:
    """What `subject` is; None for one outside the map above (an inbox, a bench subject)."""
    tokens = subject.split(".")
    if len(tokens) < 2 or tokens[0] != PREFIX:
        return None
    for size in (1, 2):
        kind = _BY_NAME.get(tuple(tokens[1 : 1 + size]))
        if kind is not None:
            break
    else:
        return None
    rest = tokens[1 + size :]
    shape = _SHAPES[kind]
    if len(rest) != len(shape) or not all(rest):
        return None
    values = dict(zip(shape, rest, strict=True))
    if _PART in values and values[_PART] not in set(TtsPart):
        return None
    return Subject(
        kind, values.get(_SESSION), values.get(_ID) or values.get(_METHOD) or values.get(_PART)
    )


def template(subject: str) -> str:
    """Low-cardinality form of a subject for span and metric names (ids replaced)."""
    parsed = parse(subject)
    return subject if parsed is None else parsed.template


def session_of(subject: str) -> str | None:
    """The session a subject belongs to, if it names one."""
    parsed = parse(subject)
    return None if parsed is None else parsed.session_id
