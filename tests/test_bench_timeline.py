"""bench/timeline.py: a voice turn's steps found on a recorded bus, by turn and reply id."""

from __future__ import annotations

import json

from bench import timeline


def _row(t: float, subject: str, body: dict | None = None, reply: str = "", **headers: str):
    return [t, subject, reply, headers or None, json.dumps(body) if body else None, 10]


def test_steps_are_found_by_turn_and_reply_and_other_turns_are_ignored() -> None:
    t0 = 1000.0
    rows = [
        _row(t0 - 1.0, "va.asr.utt.S.T"),  # audio, before the end of speech
        # a pause inside the question: a speculative turn of its own, retracted
        _row(t0 - 0.9, "va.asr.utt.S.T", {"type": "asr.end"}, "_INBOX.q", **{"Va-Ctl": "peek"}),
        _row(t0 - 0.8, "_INBOX.q", {"type": "asr.result", "text": "what"}),
        _row(t0 - 0.8, "va.session.turn", {"turn_id": "T"}),
        _row(t0 + 0.10, "va.asr.utt.S.OTHER", reply="_INBOX.x", **{"Va-Ctl": "peek"}),
        _row(t0 + 0.15, "va.asr.utt.S.T", {"type": "asr.end"}, "_INBOX.p", **{"Va-Ctl": "peek"}),
        _row(t0 + 0.25, "_INBOX.p", {"type": "asr.result", "text": "hi"}),
        _row(t0 + 0.26, "va.session.turn", {"turn_id": "T"}),
        _row(t0 + 0.27, "va.llm.claim", {"reply_id": "OLD"}),
        _row(t0 + 0.28, "va.llm.claim", {"reply_id": "R", "stream_id": "STREAM"}),
        _row(t0 + 0.30, "va.llm.out.S.OLDSTREAM", {"type": "llm.delta"}),  # a retracted reply's
        _row(t0 + 0.28, "va.tts.claim", {"reply_id": "R"}),
        _row(t0 + 0.33, "va.llm.out.S.STREAM", {"type": "llm.delta"}),
        _row(t0 + 0.35, "va.tts.in.S.R", {"type": "tts.text"}),
        _row(t0 + 0.40, "va.tts.out.S.audio", None, **{"Va-Type": "audio", "Va-Reply": "OLD"}),
        _row(t0 + 0.45, "va.tts.out.S.audio", None, **{"Va-Type": "audio", "Va-Reply": "R"}),
        _row(t0 + 0.58, "va.playback.S", {"type": "turn.confirmed", "turn_id": "T"}),
    ]
    turn = {"turn_id": "T", "reply_id": "R", "t_end_wall": t0, "t_received_wall": t0 + 0.62}
    [steps] = timeline.timelines(rows, [turn])
    assert steps == {
        "peek": 150.0,
        "asr_text": 250.0,
        "submit": 260.0,
        "llm_claim": 280.0,
        "tts_claim": 280.0,
        "llm_first": 330.0,
        "tts_in": 350.0,
        "tts_audio": 450.0,
        "confirm": 580.0,
        "received": 620.0,
    }
    table = timeline.table([steps, steps])
    assert "| tts_audio | 2 | 450 | 450 | 450 | 100 |" in table
