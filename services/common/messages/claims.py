"""Claiming work: the answer to a claim, and the notice that a replica took a job."""

from __future__ import annotations

from typing import Literal

from .base import Message

WorkKind = Literal["asr", "llm", "tts", "session"]  # the stages that take work by claim


class ClaimAck(Message):
    """Reply to any claim request: the worker that took the job."""

    type: Literal["claim.ack"] = "claim.ack"
    worker_id: str
    kind: str


class WorkClaimed(Message):
    """Published for observability (and the fault tests) when a replica takes a job."""

    type: Literal["work.claimed"] = "work.claimed"
    kind: WorkKind
    worker_id: str
    session_id: str
    turn_id: str
    reply_id: str | None = None
