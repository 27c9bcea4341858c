"""The error answer to a bus request."""

from __future__ import annotations

from typing import Any, Literal

from .base import Message


class RpcError(Message):
    type: Literal["rpc.error"] = "rpc.error"
    code: str
    message: str
    status: int = 400
    details: list[dict[str, Any]] | None = None
