"""One session replica: the agents/sessions API, turn claims, and interrupts of its turns.

- `va.session.rpc.{method}` (queue group "session-rpc"): agents, sessions, tokens, history.
- `va.session.prefill` (queue group "session"): a `TurnPrefill` hint (services/session/memory.py).
- `va.session.turn` (queue group "session"): a `TurnSubmit`; the replica answers
  `TurnAccepted` and runs the turn (services/session/turns.py).
- `va.ctl.interrupt.*` (every replica, subscribed first): hands an interrupt to the turn it
  concerns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus, subjects
from services.common.messages import (
    RPC_REQUESTS,
    AgentConfig,
    BadMessage,
    EndSession,
    ErrorCode,
    Interrupt,
    Message,
    RpcError,
    RpcMethod,
    TurnAccepted,
    TurnPrefill,
    TurnSubmit,
    decode,
)
from services.common.replies import ReplyWorker

from .api import Denied, SessionApi
from .mcp import McpCatalog
from .memory import Memory
from .settings import SessionSettings
from .store import Store
from .tools import parse_networks
from .turns import Turn

log = logging.getLogger(__name__)


class SessionWorker(ReplyWorker):
    kind = "session"

    def __init__(self, settings: SessionSettings, store: Store) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.store = store
        self.turns: dict[str, Turn] = {}
        self.api: SessionApi | None = None
        self.memory: Memory | None = None
        # Tool calls' HTTP client (services/session/tools.py): one connection pool for the
        # replica; no proxy from the environment, no redirects.
        self.tool_client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self.mcp = McpCatalog(parse_networks(settings.tool_networks))

    async def start(self, nc: NATS) -> None:
        self.nc = nc
        self.memory = Memory(nc, self.store, self.cfg, self.mcp)
        await self.store.ensure_default_agent(AgentConfig())
        secret = self.cfg.token_secret or await self.store.signing_secret()
        self.api = SessionApi(self.store, secret, self.cfg.token_ttl_s)
        api = self.api
        # Each method's handler; its request type is the shared table's (RPC_REQUESTS).
        self.rpc: dict[RpcMethod, Callable[[Any], Awaitable[Message]]] = {
            RpcMethod.CREATE_AGENT: api.create_agent,
            RpcMethod.GET_AGENT: api.get_agent,
            RpcMethod.CREATE_SESSION: api.create_session,
            RpcMethod.RESUME_SESSION: api.resume_session,
            RpcMethod.AUTHORIZE: api.session_info,
            RpcMethod.END_SESSION: self._end_session,
            RpcMethod.GET_MESSAGES: api.get_messages,
        }
        await self.accept(nc, subjects.SESSION_RPC_ALL, subjects.QUEUE_SESSION_RPC, self._on_rpc)
        await self.claim(
            nc,
            subjects.SESSION_PREFILL,
            subjects.QUEUE_SESSION,
            TurnPrefill,
            self._on_prefill,
            name="prefill",
        )
        await self.claim(
            nc,
            subjects.SESSION_TURN,
            subjects.QUEUE_SESSION,
            TurnSubmit,
            self._on_turn,
            name="turn",
        )

    def ready(self) -> bool:
        return super().ready() and self.api is not None

    async def close(self) -> None:
        if self.memory is not None:
            await self.memory.close()
        await self.tool_client.aclose()
        await self.store.close()

    # -- rpc -----------------------------------------------------------------------------------
    async def _on_rpc(self, msg: Msg) -> None:
        parsed = subjects.parse(msg.subject)
        method = (parsed.id if parsed is not None else None) or ""
        try:
            if method not in self.rpc:
                answer: Message = RpcError(
                    code=ErrorCode.UNKNOWN_METHOD, message=method, status=404
                )
            else:
                known = RpcMethod(method)
                answer = await self.rpc[known](decode(RPC_REQUESTS[known], msg.data))
        except BadMessage as exc:
            answer = RpcError(code=ErrorCode.BAD_REQUEST, message=str(exc), status=422)
        except Denied as exc:
            answer = exc.error
        except Exception as exc:
            log.exception("rpc %s failed", method)
            answer = RpcError(
                code=ErrorCode.INTERNAL, message=f"session service error: {exc}", status=500
            )
        await bus.reply(msg, answer)

    async def _end_session(self, req: EndSession) -> Any:
        assert self.api is not None and self.nc is not None
        answer = await self.api.end_session(req)
        await bus.publish(
            self.nc,
            subjects.interrupt(req.session_id),
            Interrupt(session_id=req.session_id, reason="session_end"),
        )
        return answer

    # -- turns ---------------------------------------------------------------------------------
    async def _on_turn(self, submit: TurnSubmit, msg: Msg) -> TurnAccepted | RpcError:
        assert self.nc is not None
        subjects.check_token(submit.session_id)
        subjects.check_token(submit.turn_id)
        data = await self.store.active_session(submit.session_id)
        if data is None:
            return RpcError(
                code=ErrorCode.SESSION_NOT_FOUND, message="no such active session", status=404
            )
        record = await self.store.get_agent(data["agent_id"])
        if record is None:
            return RpcError(
                code=ErrorCode.AGENT_NOT_FOUND, message="the session's agent is gone", status=410
            )
        reply_id = bus.new_id()
        claim = f"{reply_id} {self.worker_id}"
        if submit.attempt > 1:  # asked again: a replica may run it already (Store.begin_turn)
            held = await self.store.claim_submission(submit.session_id, submit.submission, claim)
            if held != claim:
                rid, _, wid = held.partition(" ")
                return TurnAccepted(turn_id=submit.turn_id, reply_id=rid, worker_id=wid)
        turn = Turn(
            self.nc,
            self.store,
            self.cfg,
            submit,
            reply_id,
            record.config,
            self.tool_client,
            claim,
            self.mcp,
        )
        self.turns[reply_id] = turn
        job = self.jobs.start(submit.session_id, submit.turn_id, reply_id, turn.run())
        job.task.add_done_callback(lambda _t: self._turn_ended(reply_id, turn))
        # The turn's first step sends its one Redis read (Turn._prepare) and waits; the turn is
        # accepted while Redis answers, instead of before the read is sent. Nothing below
        # yields to the loop, so the turn subscribes before any answer can reach it.
        await asyncio.sleep(0)
        try:
            await turn.open()
        except BaseException:
            turn.abandon()
            job.task.cancel()
            raise
        await self.announce(submit.session_id, submit.turn_id, reply_id)
        return TurnAccepted(turn_id=submit.turn_id, reply_id=reply_id, worker_id=self.worker_id)

    async def _on_prefill(self, req: TurnPrefill, msg: Msg) -> None:
        subjects.check_token(req.session_id)
        data = await self.store.active_session(req.session_id)
        record = await self.store.get_agent(data["agent_id"]) if data else None
        if record is not None and self.memory is not None:
            self.memory.prefill(req.session_id, record.config, req.text)

    def _turn_ended(self, reply_id: str, turn: Turn) -> None:
        self.turns.pop(reply_id, None)
        if turn.holds_subscriptions:  # its task was cancelled before it ran
            self.spawn(turn.release(), "turn-release")
        elif turn.written and self.memory is not None:
            self.memory.after_turn(turn.sid, turn.agent)

    async def _on_interrupt(self, intr: Interrupt, msg: Msg) -> None:
        """An interrupt goes to the turn it names, which ends itself: no job is cancelled here
        (a `failure` one the session sent itself)."""
        if intr.reason == "session_end":
            self.store.forget_session(intr.session_id)
        for turn in list(self.turns.values()):
            if turn.sid == intr.session_id and intr.reply_id in (None, turn.rid):
                if intr.reason != "failure":
                    turn.interrupt(intr)
