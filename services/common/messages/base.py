"""What every bus message shares: `type` and `v`, JSON encoding, and one decoder.

Following NATS ADR-2, a version only ever adds optional fields; a consumer ignores fields it does
not know. Decoding goes through `decode()`, which raises `BadMessage` (never a pydantic or JSON
error) so a handler can answer or drop one bad message and keep running.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

SCHEMA_VERSION = 1


def now_ms() -> float:
    """Wall-clock milliseconds, comparable across processes on one machine (or NTP-synced hosts)."""
    return time.time() * 1000.0


class BadMessage(ValueError):
    """A payload that is not a valid message of the expected kind."""


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


M = TypeVar("M", bound=BaseModel)

_adapters: dict[Any, TypeAdapter[Any]] = {}


@overload
def decode(kind: type[M], data: bytes | str) -> M: ...
@overload
def decode(kind: Any, data: bytes | str) -> Any: ...
def decode(kind: Any, data: bytes | str) -> Any:
    """Decode `data` as `kind` (a model class or an annotated union). Raises BadMessage."""
    adapter = _adapters.get(kind)
    if adapter is None:
        adapter = _adapters[kind] = TypeAdapter(kind)
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        raise BadMessage(_summarize(exc)) from exc


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "message"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
