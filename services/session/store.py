"""Redis state owned by the session service: agents, sessions, conversation history.

Keys (prefix `va:`):
    va:agent:{agent_id}        JSON AgentRecord
    va:session:{sid}           hash: agent_id, created_at, ended ("0"/"1")
    va:history:{sid}           list of JSON HistoryMessage, oldest first (the full history)
    va:window:{sid}            index of the first history entry the LLM still sees
    va:summary:{sid}           JSON Summary of the entries before the window (memory.py)
    va:inflight:{sid}          reply id of the turn in flight (expires by itself)
    va:secret                  token signing key when none is configured (shared by replicas;
                               replicated with the rest under Sentinel; VA_TOKEN_SECRET is safer)

Nothing else in the project writes these keys. History is only ever appended to; an interrupted
reply is written once, after the interruption, with what was actually played.

Agents never change once written (a new config is a new agent; the built-in one is rewritten
only when a replica starts), so each replica keeps the ones it has read for `AGENT_CACHE_TTL_S`.
A replica of a newer release that rewrites the built-in agent is seen by the others within that
time. Active sessions are kept the same way for `SESSION_CACHE_TTL_S` (their agent never
changes; only `ended` does, and `begin_turn` reads that again inside Redis), so a turn is
accepted without waiting on Redis: each Redis round trip costs a wake-up of two idle processes,
about 0.4 ms here, where the acceptance is otherwise about 0.2 ms of work.

`begin_turn` is one Lua script (atomic, one round trip): it checks that the session is still
active, takes the in-flight mark unless another reply holds it, and reads the history from the
window's start. Its keys are all one session's; a Redis Cluster would need them in one hash slot.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as redis
from cachetools import TTLCache
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.messages import AgentConfig, AgentRecord, HistoryMessage, Summary

DEFAULT_AGENT_ID = "default"
AGENT_CACHE_TTL_S = 60.0
AGENT_CACHE_SIZE = 4096
SESSION_CACHE_TTL_S = 30.0
SESSION_CACHE_SIZE = 65536

# Entries before the window that no summary holds yet are read too, at most this many (the
# newest): the prompt keeps the user's own words from them until the summary catches up.
MAX_UNSUMMARIZED = 24
# A submission's claim is kept this long: a repeat comes within the gateway's VA_SESSION_WAIT_S.
SUBMISSION_TTL_S = 60
# KEYS: session hash, in-flight mark, window start, history, summary, the submission's claim.
# ARGV: reply id, mark TTL (s), "1" to take the mark even while another reply holds it,
# MAX_UNSUMMARIZED, this reply's claim ("reply_id worker_id"; "": no submission to claim), the
# claim's TTL (s).
# Returns the state, the window start, the history from `from` (the summary's end or the window
# start, whichever comes first), the summary JSON and `from`.
BEGIN_TURN = """
if redis.call('HGET', KEYS[1], 'ended') ~= '0' then return {'ended', 0} end
if ARGV[5] ~= '' then
  local held = redis.call('GET', KEYS[6])
  if held and held ~= ARGV[5] then return {'taken', 0} end
  if not held then redis.call('SET', KEYS[6], ARGV[5], 'EX', tonumber(ARGV[6])) end
end
local start = tonumber(redis.call('GET', KEYS[3]) or '0')
local other = redis.call('GET', KEYS[2])
if other and other ~= ARGV[1] and ARGV[3] ~= '1' then return {'busy', start} end
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
local summary = redis.call('GET', KEYS[5]) or ''
local upto = 0
if summary ~= '' then upto = tonumber(cjson.decode(summary).upto) end
local from = math.max(math.min(start, upto), start - tonumber(ARGV[4]))
return {'ok', start, redis.call('LRANGE', KEYS[4], from, -1), summary, from}
"""
# KEYS: summary, window start. ARGV: summary JSON, its `upto`. The window never moves back.
SAVE_SUMMARY = """
redis.call('SET', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
"""


@dataclass
class TurnStart:
    """What `begin_turn` found: `ok` (the mark is this reply's; `history` from `start`), `busy`
    (another reply holds the mark), `ended` (the session has ended or is gone) or `taken`
    (another reply runs the same submission)."""

    state: Literal["ok", "busy", "ended", "taken"]
    start: int = 0
    history: list[HistoryMessage] = field(default_factory=list)
    summary: Summary | None = None
    # Entries before `start` that the summary does not hold yet (it is still being made).
    unsummarized: list[HistoryMessage] = field(default_factory=list)


def _k(*parts: str) -> str:
    return ":".join(("va",) + parts)


def _messages(raw: list[Any]) -> list[HistoryMessage]:
    return [HistoryMessage.model_validate_json(item) for item in raw]


class _PrimaryConnection(SentinelManagedConnection):
    """Asks the sentinels for the primary before each (re)connection. redis-py (8.2) reconnects
    a command's connection through `connect_check_health`, to the address it had, skipping the
    lookup its `connect` makes: after a failover every retry went to the dead primary."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
            retry_socket_connect = False  # the command's retry asks again, maybe elsewhere
        await super().connect_check_health(check_health, retry_socket_connect)


class Store:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._agents: TTLCache[str, AgentRecord] = TTLCache(AGENT_CACHE_SIZE, AGENT_CACHE_TTL_S)
        self._active: TTLCache[str, dict[str, str]] = TTLCache(
            SESSION_CACHE_SIZE, SESSION_CACHE_TTL_S
        )
        self._begin_turn = client.register_script(BEGIN_TURN)
        self._save_summary = client.register_script(SAVE_SUMMARY)

    @classmethod
    def from_url(
        cls, url: str, sentinels: list[tuple[str, int]] | None = None, master: str = "mymaster"
    ) -> Store:
        """Redis at `url`; with `sentinels`, the primary they name `master` (asked again when a
        connection fails or the server turned replica: a failover), `url` giving db and auth."""
        # A restarted Redis drops every connection, and a failover takes the sentinels a few
        # seconds: retry a command on a fresh connection (to the primary of the moment) instead
        # of failing the turn that happened to use it first.
        options: dict[str, Any] = {
            "decode_responses": True,
            "health_check_interval": 15,
            "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        }
        if not sentinels:
            return cls(redis.from_url(url, **options))
        auth: dict[str, Any] = {
            k: v for k, v in parse_url(url).items() if k in ("db", "username", "password")
        }
        sentinel = Sentinel(sentinels, socket_timeout=1.0, socket_connect_timeout=1.0)
        return cls(
            sentinel.master_for(master, connection_class=_PrimaryConnection, **auth, **options)
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

    async def active_session(self, session_id: str) -> dict[str, str] | None:
        """The session's record if it exists and has not ended; an active one is kept (see
        the module's doc), so most calls need no round trip."""
        data = self._active.get(session_id)
        if data is None:
            data = await self.get_session(session_id)
            if data is None or data.get("ended") != "0":
                return None
            self._active[session_id] = data
        return data

    def forget_session(self, session_id: str) -> None:
        """The session has ended (here or on another replica): stop keeping it."""
        self._active.pop(session_id, None)

    async def end_session(self, session_id: str) -> None:
        self.forget_session(session_id)
        await self.r.hset(_k("session", session_id), "ended", "1")
        await self.r.delete(_k("inflight", session_id))

    # -- history -----------------------------------------------------------------------------
    async def append(self, session_id: str, *messages: HistoryMessage) -> int:
        """Append messages in one atomic push; returns the index of the last one."""
        n = await self.r.rpush(_k("history", session_id), *(m.model_dump_json() for m in messages))
        return int(n) - 1

    async def history_len(self, session_id: str) -> int:
        return int(await self.r.llen(_k("history", session_id)))

    async def history(self, session_id: str, start: int = 0) -> list[HistoryMessage]:
        return _messages(await self.r.lrange(_k("history", session_id), start, -1))

    async def begin_turn(
        self,
        session_id: str,
        reply_id: str,
        force: bool = False,
        ttl_s: int = 300,
        submission: str = "",
        claim: str = "",
    ) -> TurnStart:
        """Claim `submission` (when given) for `claim`, mark `reply_id` in flight and read the
        history from the window's start, in one round trip; unless another reply runs the
        submission (`taken`), another reply holds the mark (`busy`; `force` takes it anyway) or
        the session has ended (`ended`)."""
        kinds = ("session", "inflight", "window", "history", "summary")
        keys = [_k(kind, session_id) for kind in kinds]
        keys.append(_k("submission", session_id, submission))
        state, start, *rest = await self._begin_turn(
            keys=keys,
            args=[
                reply_id,
                ttl_s,
                "1" if force else "0",
                MAX_UNSUMMARIZED,
                (claim or reply_id) if submission else "",
                SUBMISSION_TTL_S,
            ],
        )
        if not rest:
            return TurnStart(state, int(start))
        raw, summary_json, first = rest
        summary = Summary.model_validate_json(summary_json) if summary_json else None
        messages = _messages(raw)
        cut = int(start) - int(first)
        return TurnStart(state, int(start), messages[cut:], summary, messages[:cut])

    async def claim_submission(
        self, session_id: str, submission: str, claim: str, ttl_s: int = SUBMISSION_TTL_S
    ) -> str:
        """Claim `submission` for `claim` ("reply_id worker_id") unless a reply holds it
        already (as `begin_turn` does): the claim that holds it."""
        key = _k("submission", session_id, submission)
        held = await self.r.set(key, claim, nx=True, get=True, ex=ttl_s)
        return str(held) if held else claim

    async def set_window_start(self, session_id: str, start: int) -> None:
        await self.r.set(_k("window", session_id), str(start))

    async def memory_state(self, session_id: str) -> tuple[int, Summary | None]:
        """The window start and the summary of what lies before it (None: no summary yet)."""
        start, raw = await self.r.mget(_k("window", session_id), _k("summary", session_id))
        return int(start or 0), Summary.model_validate_json(raw) if raw else None

    async def window(self, session_id: str) -> TurnStart:
        """What the next turn's prompt is made of, as `begin_turn` reads it (without taking the
        in-flight mark): the window, the summary and what it does not hold yet."""
        start, summary = await self.memory_state(session_id)
        first = max(min(start, summary.upto if summary else 0), start - MAX_UNSUMMARIZED)
        messages = await self.history(session_id, first)
        cut = start - first
        return TurnStart("ok", start, messages[cut:], summary, messages[:cut])

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        """Store the summary and move the window start to its end, in one step."""
        await self._save_summary(
            keys=[_k("summary", session_id), _k("window", session_id)],
            args=[summary.model_dump_json(), summary.upto],
        )

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
