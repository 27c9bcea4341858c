"""Bus overhead: the hops of a typed turn (`HOPS`, each between two stamps) and the stamps of
one turn found in the tap's messages (`index_rows`, `points`)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from services.common import subjects
from services.common.messages import H_REPLY, AudioChunkHeader
from services.common.subjects import Kind
from services.tts.text import ClauseSplitter


@dataclass(frozen=True)
class Hop:
    key: str
    start: str
    end: str
    label: str
    # "bus": publisher's stamp -> on the bus; "rtt": a request's round trip, handler included;
    # "work": a hop with the service's own work between the two messages (held to the target:
    # with engines that answer at once that is the message path's overhead); "media": WebRTC
    # pacing and jitter buffer (20 ms frames), not the bus; "total": sums, for reference.
    kind: str


HOPS: tuple[Hop, ...] = (
    Hop(
        "ws_to_gateway",
        "ws_send",
        "gw_final",
        "user.text sent (WS) -> transcript.final on the bus",
        "work",
    ),
    Hop(
        "gateway_submit",
        "gw_final",
        "gw_submit",
        "transcript.final -> turn.submit request (gateway)",
        "work",
    ),
    Hop(
        "submit_to_session",
        "gw_submit",
        "ses_claimed",
        "turn.submit -> work.claimed (session: session and agent kept, 2 SUBs, no Redis)",
        "work",
    ),
    Hop("submit_rtt", "gw_submit", "ses_accepted", "turn.submit -> TurnAccepted reply", "rtt"),
    Hop(
        "session_prepare",
        "ses_claimed",
        "tts_claim",
        "work.claimed -> tts.claim (session: 1 Redis script, sent before the acceptance)",
        "work",
    ),
    Hop("tts_claim_rtt", "tts_claim", "tts_ack", "tts.claim -> ClaimAck (tts replica)", "rtt"),
    Hop(
        "tts_ack_to_llm_claim",
        "tts_ack",
        "llm_claim",
        "tts ClaimAck -> llm.claim (both claims leave at once: <= 0)",
        "work",
    ),
    Hop("llm_claim_rtt", "llm_claim", "llm_ack", "llm.claim -> ClaimAck (llm replica)", "rtt"),
    Hop(
        "llm_first_delta",
        "llm_claim",
        "llm_delta1",
        "llm.claim -> first llm.delta (llm, fake engine)",
        "work",
    ),
    Hop(
        "session_reply_delta",
        "llm_delta1",
        "ev_delta1",
        "first llm.delta -> first reply.delta on the bus (session)",
        "work",
    ),
    Hop(
        "delta_to_client",
        "ev_delta1",
        "ws_delta1",
        "reply.delta on the bus -> at the client WebSocket (gateway)",
        "work",
    ),
    Hop(
        "session_tts_text",
        "llm_delta1",
        "tts_text1",
        "first llm.delta -> first tts.text (session)",
        "work",
    ),
    Hop(
        "tts_segment",
        "tts_clause",
        "tts_seg0",
        "tts.text completing clause 1 -> tts.segment (tts, fake engine)",
        "work",
    ),
    Hop("tts_first_chunk", "tts_seg0", "audio0", "tts.segment -> first audio chunk (tts)", "work"),
    Hop(
        "gateway_first_frame",
        "audio0",
        "pb_at",
        "first audio chunk -> first frame to WebRTC (gateway: next 20 ms frame; at once if idle)",
        "media",
    ),
    Hop(
        "webrtc_to_client",
        "pb_at",
        "client_audible",
        "first frame to WebRTC -> first audible frame at the client",
        "media",
    ),
    Hop(
        "transit_turn_submit",
        "submit_stamp",
        "gw_submit",
        "transit: gateway's TurnSubmit stamp -> on the bus",
        "bus",
    ),
    Hop(
        "transit_playback_started",
        "pb_at",
        "pb_seen",
        "transit: gateway's playback.started stamp -> on the bus",
        "bus",
    ),
    Hop(
        "transit_interrupt",
        "intr_stamp",
        "intr_seen",
        "transit: gateway's Interrupt stamp -> on the bus",
        "bus",
    ),
    Hop(
        "total_first_delta",
        "ws_send",
        "ws_delta1",
        "total: user.text sent -> first reply.delta at the client",
        "total",
    ),
    Hop(
        "total_first_chunk",
        "ws_send",
        "audio0",
        "total: user.text sent -> first audio chunk at the gateway",
        "total",
    ),
    Hop(
        "total_first_audible",
        "ws_send",
        "client_audible",
        "total: user.text sent -> first audible reply frame",
        "total",
    ),
)


def index_rows(rows: list[list[Any]]) -> dict[str, Any]:
    """One pass over the tap's messages: the first stamp of each thing a hop needs."""
    ix: dict[str, Any] = defaultdict(dict)
    first = ix  # alias: every table keeps the first occurrence only

    def put(table: str, key: Any, value: Any) -> None:
        first[table].setdefault(key, value)

    for t, subject, reply, headers, payload, _size in rows:
        if subject.startswith("_INBOX."):
            put("reply", subject, t)
            continue
        at = subjects.parse(subject)
        if at is None:
            continue
        if AudioChunkHeader.is_audio(headers):
            put("audio0", headers.get(H_REPLY), t)
            continue
        if payload is None:
            continue
        try:
            msg = json.loads(payload)
        except ValueError:
            continue
        mtype = msg.get("type")
        kind = at.kind
        if kind is Kind.EVENTS:
            put("event", (mtype, msg.get("turn_id"), msg.get("state")), t)
        elif kind is Kind.SESSION_TURN:
            put("submit", msg.get("turn_id"), (t, reply, msg.get("speech_end_ms")))
        elif kind is Kind.WORK_CLAIMED:
            put("claimed", (msg.get("kind"), msg.get("turn_id")), (t, msg.get("reply_id")))
        elif kind is Kind.TTS_CLAIM:
            put("tts_claim", msg.get("turn_id"), (t, reply))
        elif kind is Kind.LLM_CLAIM:
            put("llm_claim", msg.get("turn_id"), (t, reply, msg.get("stream_id")))
        elif kind is Kind.LLM_OUT and mtype == "llm.delta":
            put("llm_delta", at.id, t)
        elif kind is Kind.TTS_IN:
            ix["tts_text"].setdefault(at.id, []).append(
                (msg.get("seq"), t, msg.get("text", ""), msg.get("final", False))
            )
        elif kind is Kind.TTS_OUT and mtype == "tts.segment":
            put("segment", (msg.get("reply_id"), msg.get("index")), t)
        elif kind is Kind.PLAYBACK and mtype == "playback.started":
            put("pb_started", msg.get("reply_id"), (t, msg.get("at_ms")))
        elif kind is Kind.INTERRUPT and mtype == "interrupt":
            put("interrupt", msg.get("turn_id"), (t, msg.get("at_ms")))
    return ix


def clause_stamp(texts: list[tuple[int, float, str, bool]]) -> float | None:
    """Stamp of the tts.text whose arrival completes the first clause (as the TTS splits it)."""
    splitter = ClauseSplitter()
    for _seq, t, text, final in sorted(texts, key=lambda x: x[0]):
        clauses = splitter.feed(text)
        if final:
            clauses += splitter.flush()
        if clauses:
            return t
    return None


def points(turn: dict[str, Any], ix: dict[str, Any]) -> dict[str, float | None]:
    """Every stamp of one turn (seconds, wall clock), None where it is missing."""
    tid, rid = turn["turn_id"], turn["reply_id"]
    p: dict[str, float | None] = {
        k: turn.get(k) for k in ("ws_send", "ws_final", "ws_delta1", "client_audible")
    }
    ev = ix["event"]
    p["gw_final"] = ev.get(("transcript.final", tid, None))
    p["ses_thinking"] = ev.get(("agent.state", tid, "thinking"))
    p["ev_delta1"] = ev.get(("reply.delta", tid, None))
    submit = ix["submit"].get(tid)
    p["gw_submit"] = submit[0] if submit else None
    p["ses_accepted"] = ix["reply"].get(submit[1]) if submit else None
    p["submit_stamp"] = submit[2] / 1000.0 if submit and submit[2] else None
    claimed = ix["claimed"].get(("session", tid))
    p["ses_claimed"] = claimed[0] if claimed else None
    rid = rid or (claimed[1] if claimed else None)
    tc = ix["tts_claim"].get(tid)
    p["tts_claim"] = tc[0] if tc else None
    p["tts_ack"] = ix["reply"].get(tc[1]) if tc else None
    lc = ix["llm_claim"].get(tid)
    p["llm_claim"] = lc[0] if lc else None
    p["llm_ack"] = ix["reply"].get(lc[1]) if lc else None
    p["llm_delta1"] = ix["llm_delta"].get(lc[2]) if lc else None
    texts = ix["tts_text"].get(rid, [])
    p["tts_text1"] = min((t for seq, t, _x, _f in texts if seq == 1), default=None)
    p["tts_clause"] = clause_stamp(texts) if texts else None
    p["tts_seg0"] = ix["segment"].get((rid, 0))
    p["audio0"] = ix["audio0"].get(rid)
    pb = ix["pb_started"].get(rid)
    p["pb_seen"] = pb[0] if pb else None
    p["pb_at"] = pb[1] / 1000.0 if pb and pb[1] else None
    intr = ix["interrupt"].get(tid)
    p["intr_seen"] = intr[0] if intr else None
    p["intr_stamp"] = intr[1] / 1000.0 if intr and intr[1] else None
    return p


def hop_samples(turn_points: list[dict[str, float | None]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {h.key: [] for h in HOPS}
    for p in turn_points:
        for h in HOPS:
            a, b = p.get(h.start), p.get(h.end)
            if a is not None and b is not None:
                out[h.key].append((b - a) * 1000.0)
    return out
