"""Redis state owned by the session service: agents, sessions, conversation history.

Keys (prefix `va:`):
    va:agent:{agent_id}        JSON AgentRecord
    va:session:{sid}           hash: agent_id, created_at, ended ("0"/"1")
    va:history:{sid}           list of JSON HistoryMessage, oldest first (the full history)
    va:window:{sid}            index of the first history entry the LLM still sees
    va:inflight:{sid}          reply id of the turn in flight (expires by itself)
    va:secret                  token signing key when none is configured (shared by replicas)

Nothing else in the project writes these keys. History is only ever appended to; an interrupted
reply is written once, after the interruption, with what was actually played.

Agents never change once written (a new config is a new agent; the built-in one is rewritten
only when a replica starts), so each replica keeps the ones it has read for `AGENT_CACHE_TTL_S`:
a turn then costs one Redis round trip fewer. A replica of a newer release that rewrites the
built-in agent is seen by the others within that time.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis.asyncio as redis
from cachetools import TTLCache
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.messages import AgentConfig, AgentRecord, HistoryMessage

DEFAULT_AGENT_ID = "default"
AGENT_CACHE_TTL_S = 60.0
AGENT_CACHE_SIZE = 4096


def _k(*parts: str) -> str:
    return ":".join(("va",) + parts)


def _messages(raw: list[Any]) -> list[HistoryMessage]:
    return [HistoryMessage.model_validate_json(item) for item in raw]


class Store:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._agents: TTLCache[str, AgentRecord] = TTLCache(AGENT_CACHE_SIZE, AGENT_CACHE_TTL_S)

    @classmethod
    def from_url(cls, url: str) -> Store:
        # A restarted Redis drops every connection: retry a command on a fresh one instead of
        # failing the turn that happened to use it first.
        return cls(
            redis.from_url(
                url,
                decode_responses=True,
                health_check_interval=15,
                retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        )

    async def close(self) -> None:
        await self.r.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.r.ping())
        except Exception:
            return False

    # -- agents ------------------------------------------------------------------------------
    async def put_agent(self, agent_id: str, config: AgentConfig) -> AgentRecord:
        record = AgentRecord(agent_id=agent_id, config=config, created_at=time.time())
        await self.r.set(_k("agent", agent_id), record.model_dump_json())
        self._agents[agent_id] = record
        return record

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        record = self._agents.get(agent_id)
        if record is None:
            raw = await self.r.get(_k("agent", agent_id))
            if not raw:
                return None
            record = self._agents[agent_id] = AgentRecord.model_validate_json(raw)
        return record

    async def ensure_default_agent(self, config: AgentConfig) -> None:
        """(Re)write the built-in agent from this release's defaults."""
        await self.put_agent(DEFAULT_AGENT_ID, config)

    # -- sessions ----------------------------------------------------------------------------
    async def create_session(self, session_id: str, agent_id: str) -> None:
        await self.r.hset(
            _k("session", session_id),
            mapping={"agent_id": agent_id, "created_at": str(time.time()), "ended": "0"},
        )

    async def get_session(self, session_id: str) -> dict[str, str] | None:
        data: dict[str, str] = await self.r.hgetall(_k("session", session_id))  # type: ignore[assignment, misc]
        return data or None

    async def end_session(self, session_id: str) -> None:
        await self.r.hset(_k("session", session_id), "ended", "1")
        await self.r.delete(_k("inflight", session_id))

    # -- history -----------------------------------------------------------------------------
    async def append(self, session_id: str, *messages: HistoryMessage) -> int:
        """Append messages in one atomic push; returns the index of the last one."""
        n = await self.r.rpush(_k("history", session_id), *(m.model_dump_json() for m in messages))
        return int(n) - 1

    async def history(self, session_id: str, start: int = 0) -> list[HistoryMessage]:
        return _messages(await self.r.lrange(_k("history", session_id), start, -1))

    async def inflight_and_window(self, session_id: str) -> tuple[str | None, int]:
        """The reply in flight and the window's start, in one round trip."""
        _, inflight, start = await self.turn_state(session_id, with_session=False)
        return inflight, start

    async def turn_state(
        self, session_id: str, with_session: bool = True
    ) -> tuple[dict[str, str] | None, str | None, int]:
        """What a new turn needs, in one round trip: the session (None if unknown), the reply
        in flight and the window's start."""
        async with self.r.pipeline(transaction=False) as p:
            if with_session:
                p.hgetall(_k("session", session_id))
            p.get(_k("inflight", session_id))
            p.get(_k("window", session_id))
            *data, inflight, start = await p.execute()
        session = data[0] if data and data[0] else None
        return session, (str(inflight) if inflight else None), (int(start) if start else 0)

    async def begin_reply(
        self, session_id: str, reply_id: str, start: int, ttl_s: int = 300
    ) -> list[HistoryMessage]:
        """Mark `reply_id` in flight and read the history from `start`, in one round trip."""
        async with self.r.pipeline(transaction=False) as p:
            p.set(_k("inflight", session_id), reply_id, ex=ttl_s)
            p.lrange(_k("history", session_id), start, -1)
            _, raw = await p.execute()
        return _messages(raw)

    async def set_window_start(self, session_id: str, start: int) -> None:
        await self.r.set(_k("window", session_id), str(start))

    # -- turn in flight ----------------------------------------------------------------------
    async def clear_inflight(self, session_id: str, reply_id: str) -> None:
        key = _k("inflight", session_id)
        if await self.r.get(key) == reply_id:
            await self.r.delete(key)

    # -- secret ------------------------------------------------------------------------------
    async def signing_secret(self) -> str:
        key = _k("secret")
        await self.r.set(key, secrets.token_urlsafe(48), nx=True)
        value = await self.r.get(key)
        assert value
        return str(value)
