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
    va.tts.out.{sid}                  TTS segments, audio chunks and done markers for the gateway
    va.playback.{sid}                 gateway -> session: playback started / done of a reply
    va.events.{sid}                   client events (the WebSocket schema), gateway forwards them
    va.ctl.interrupt.{sid}            interrupts: every LLM, TTS and session replica subscribes
    va.work.claimed.{sid}             observability: which replica claimed which work
"""

from __future__ import annotations

import re

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


def tts_out(session_id: str) -> str:
    return f"{PREFIX}.tts.out.{session_id}"


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


def template(subject: str) -> str:
    """Low-cardinality form of a subject for span and metric names (ids replaced)."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[1] in {"asr", "llm", "tts"} and parts[2] in {"utt", "out", "in"}:
        return ".".join(parts[:3] + ["{session}"] + (["{id}"] if len(parts) > 4 else []))
    if len(parts) == 3 and parts[1] in {"playback", "events"}:
        return f"{parts[0]}.{parts[1]}.{{session}}"
    if len(parts) == 4 and parts[1] in {"ctl", "work"}:
        return ".".join(parts[:3] + ["{session}"])
    return subject
