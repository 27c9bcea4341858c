"""The session service's request/reply API on `va.session.rpc.{method}`: agents, sessions,
tokens and history. The gateway's HTTP API is a thin layer over these calls.

Tokens are JWTs (HS256) scoped to one session (`sid`), with an expiry; ending a session revokes
every token it was given (the session is marked ended, and authorization checks that).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt

from services.common.messages import (
    AgentRecord,
    Authorize,
    CreateAgent,
    CreateSession,
    EndSession,
    ErrorCode,
    GetAgent,
    GetMessages,
    MessageList,
    Ok,
    ResumeSession,
    RpcError,
    SessionGrant,
    SessionInfo,
)

from .store import DEFAULT_AGENT_ID, Store


class Denied(Exception):
    def __init__(self, code: ErrorCode, message: str, status: int) -> None:
        super().__init__(message)
        self.error = RpcError(code=code, message=message, status=status)


class SessionApi:
    def __init__(self, store: Store, secret: str, token_ttl_s: int) -> None:
        self.store = store
        self.secret = secret
        self.ttl = token_ttl_s

    # -- tokens ------------------------------------------------------------------------------
    def issue(self, session_id: str) -> tuple[str, float]:
        exp = time.time() + self.ttl
        token = jwt.encode(
            {
                "sid": session_id,
                "exp": int(exp),
                "iat": int(time.time()),
                "jti": secrets.token_hex(8),
            },
            self.secret,
            algorithm="HS256",
        )
        return token, float(int(exp))

    async def authorize(self, session_id: str, token: str) -> dict[str, str]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=["HS256"], options={"require": ["exp", "sid"]}
            )
        except jwt.ExpiredSignatureError as exc:
            raise Denied(ErrorCode.TOKEN_EXPIRED, "the session token has expired", 401) from exc
        except jwt.InvalidTokenError as exc:
            raise Denied(ErrorCode.INVALID_TOKEN, "the session token is not valid", 401) from exc
        if claims.get("sid") != session_id:
            raise Denied(ErrorCode.FORBIDDEN, "the token belongs to another session", 403)
        data = await self.store.get_session(session_id)
        if data is None:
            raise Denied(ErrorCode.SESSION_NOT_FOUND, "no such session", 404)
        if data.get("ended") == "1":
            raise Denied(ErrorCode.SESSION_ENDED, "the session has ended", 410)
        return data

    # -- handlers (each returns a Message; Denied becomes an RpcError) -------------------------
    # An agent's tool headers (secrets) stay in the store and this service: every answer
    # carries its config `redacted()`.
    async def create_agent(self, req: CreateAgent) -> AgentRecord:
        record = await self.store.put_agent(secrets.token_hex(8), req.config)
        return record.model_copy(update={"config": record.config.redacted()})

    async def get_agent(self, req: GetAgent) -> AgentRecord | RpcError:
        record = await self.store.get_agent(req.agent_id)
        if record is None:
            return RpcError(code=ErrorCode.AGENT_NOT_FOUND, message="no such agent", status=404)
        return record.model_copy(update={"config": record.config.redacted()})

    async def create_session(self, req: CreateSession) -> SessionGrant | RpcError:
        agent_id = req.agent_id or DEFAULT_AGENT_ID
        if await self.store.get_agent(agent_id) is None:
            return RpcError(code=ErrorCode.AGENT_NOT_FOUND, message="no such agent", status=404)
        session_id = secrets.token_hex(12)
        await self.store.create_session(session_id, agent_id)
        token, exp = self.issue(session_id)
        return SessionGrant(session_id=session_id, token=token, expires_at=exp, agent_id=agent_id)

    async def resume_session(self, req: ResumeSession) -> SessionGrant:
        data = await self.authorize(req.session_id, req.token)
        token, exp = self.issue(req.session_id)
        return SessionGrant(
            session_id=req.session_id, token=token, expires_at=exp, agent_id=data["agent_id"]
        )

    async def session_info(self, req: Authorize) -> SessionInfo | RpcError:
        data = await self.authorize(req.session_id, req.token)
        record = await self.store.get_agent(data["agent_id"])
        if record is None:
            return RpcError(
                code=ErrorCode.AGENT_NOT_FOUND, message="the session's agent is gone", status=410
            )
        return SessionInfo(
            session_id=req.session_id,
            agent_id=record.agent_id,
            agent=record.config.redacted(),
            messages=await self.store.history_len(req.session_id),
        )

    async def end_session(self, req: EndSession) -> Ok:
        await self.authorize(req.session_id, req.token)
        await self.store.end_session(req.session_id)
        return Ok()

    async def get_messages(self, req: GetMessages) -> MessageList:
        await self.authorize(req.session_id, req.token)
        return MessageList(messages=await self.store.history(req.session_id))
