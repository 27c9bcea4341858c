"""The gateway's HTTP API, event WebSocket and WebRTC signalling (FastAPI).

Agents and sessions are the session service's: each call here is a request on
`va.session.rpc.{method}`. Media and the event socket of a session are held by the replica that
answered its WebRTC offer (see docs/deploy.md on routing by session id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    AgentRecord,
    Authorize,
    BadMessage,
    ClientCommand,
    CreateAgent,
    CreateSession,
    EndSession,
    ErrorCode,
    ErrorEvent,
    GetAgent,
    GetMessages,
    Message,
    MessageList,
    Ok,
    ResumeSession,
    RpcRequest,
    SessionGrant,
    SessionInfo,
    UserText,
    decode,
    rpc_method,
)
from services.common.metrics import ACTIVE_SESSIONS

from .limits import Limits
from .live import LiveSession
from .settings import GatewaySettings

log = logging.getLogger(__name__)
access = logging.getLogger("gateway.access")
STATIC = Path(__file__).parent / "static"
R = TypeVar("R", bound=Message)
# Idle sessions are looked for this often at most (a shorter idle_session_s: 4 times in it), so
# one is closed within a quarter of its idle time after it is due.
REAP_EVERY_S = 30.0


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str | None = Field(None, max_length=64)
    session_id: str | None = Field(None, max_length=64)


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sdp: str = Field(min_length=1)
    type: str
    # The client cancels no echo itself (a speakerphone, a kiosk, a browser with its audio
    # processing off): the gateway takes the reply's echo out of its microphone. None: the
    # gateway's default (VA_ECHO_CANCELLATION).
    echo_cancellation: bool | None = None


class Hub:
    """What one gateway replica holds: the NATS connection and its live sessions."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.cfg = settings
        self.nc: Any = None
        self.live: dict[str, LiveSession] = {}
        self.limits = Limits(settings)
        self._lock = asyncio.Lock()

    async def rpc(self, req: RpcRequest, kind: type[R]) -> R:
        """Call the session service's method for `req`; its error becomes the HTTP error. While
        no replica listens (a restart, a NATS reconnection) it is asked again for up to
        `session_wait_s`."""
        try:
            return await bus.request_patiently(
                self.nc,
                subjects.session_rpc(rpc_method(req)),
                req,
                kind,
                timeout=self.cfg.rpc_timeout_s,
                wait_s=self.cfg.session_wait_s,
                again=lambda exc: isinstance(exc, bus.NoResponders),
            )
        except bus.RemoteError as exc:
            raise api_error(exc.error.status, exc.error.code, exc.error.message) from exc
        except bus.BusUnavailable as exc:
            raise api_error(
                503, ErrorCode.UNAVAILABLE, "the session service is not answering"
            ) from exc

    async def authorize(self, session_id: str, token: str) -> SessionInfo:
        try:
            subjects.check_token(session_id)
        except subjects.InvalidSubjectToken as exc:
            raise api_error(404, ErrorCode.SESSION_NOT_FOUND, "no such session") from exc
        return await self.rpc(Authorize(session_id=session_id, token=token), SessionInfo)

    async def live_session(self, info: SessionInfo) -> LiveSession:
        async with self._lock:
            live = self.live.get(info.session_id)
            if live is None or live.closed:
                live = LiveSession(
                    self.nc,
                    self.cfg,
                    info.session_id,
                    info.agent,
                    self.limits,
                    messages=info.messages,
                )
                await live.open()
                self.live[info.session_id] = live
                ACTIVE_SESSIONS.set(len(self.live))
            return live

    async def drop(self, session_id: str) -> None:
        live = self.live.pop(session_id, None)
        ACTIVE_SESSIONS.set(len(self.live))
        if live is not None:
            await live.close()

    async def reap_idle(self) -> None:
        """Close the live sessions that have had no event socket and no media for
        `idle_session_s` (the session itself stays: a client coming back gets a new one)."""
        idle_s = self.cfg.idle_session_s
        while True:
            await asyncio.sleep(min(REAP_EVERY_S, idle_s / 4))
            now = time.monotonic()
            for sid, live in list(self.live.items()):
                if not live.sockets and not live.has_voice and now - live.last_seen > idle_s:
                    await self.drop(sid)


def api_error(status: int, code: str, message: str) -> HTTPException:
    """An HTTP error with the API's body: `{code, message}` (`code`: an ErrorCode, or the one a
    session replica answered)."""
    return HTTPException(status, {"code": code, "message": message})


def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise api_error(
            401, ErrorCode.MISSING_TOKEN, "Authorization: Bearer <session token> is required"
        )
    return authorization[7:].strip()


def create_app(hub: Hub) -> FastAPI:
    cfg = hub.cfg
    app = FastAPI(title="Voice assistant gateway", version="1.0")
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        response = await call_next(request)
        # Never the query string: WebSocket tokens travel there.
        access.info(
            "%s %s %d %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {"code": ErrorCode.ERROR, "message": str(exc.detail)}
        )
        return JSONResponse(detail, status_code=exc.status_code)

    def require_api_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if cfg.api_keys and x_api_key not in cfg.api_keys:
            raise api_error(401, ErrorCode.INVALID_API_KEY, "a valid X-API-Key header is required")

    @app.post("/v1/agents", dependencies=[Depends(require_api_key)])
    async def create_agent(config: AgentConfig) -> dict[str, str]:
        record = await hub.rpc(CreateAgent(config=config), AgentRecord)
        return {"agent_id": record.agent_id}

    @app.get("/v1/agents/{agent_id}", dependencies=[Depends(require_api_key)])
    async def get_agent(agent_id: str) -> dict[str, Any]:
        record = await hub.rpc(GetAgent(agent_id=agent_id), AgentRecord)
        return {
            "agent_id": record.agent_id,
            "config": record.config.model_dump(mode="json"),
            "created_at": record.created_at,
        }

    @app.post("/v1/sessions")
    async def create_session(
        request: Request,
        body: SessionBody | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        body = body or SessionBody()
        client = request.client.host if request.client else "unknown"
        if body.session_id is None and not await hub.limits.new_session(client):
            raise api_error(429, ErrorCode.RATE_LIMITED, "too many new sessions from this address")
        if body.session_id is not None:
            token = bearer(authorization)
            grant = await hub.rpc(
                ResumeSession(session_id=body.session_id, token=token), SessionGrant
            )
        else:
            grant = await hub.rpc(CreateSession(agent_id=body.agent_id), SessionGrant)
        return {
            "session_id": grant.session_id,
            "token": grant.token,
            "expires_at": grant.expires_at,
            "agent_id": grant.agent_id,
        }

    @app.delete("/v1/sessions/{session_id}")
    async def end_session(
        session_id: str, token: Annotated[str, Depends(bearer)]
    ) -> dict[str, str]:
        await hub.authorize(session_id, token)
        await hub.rpc(EndSession(session_id=session_id, token=token), Ok)
        live = hub.live.get(session_id)
        if live is not None:
            for ws in list(live.sockets):
                with contextlib.suppress(Exception):
                    await ws.close(4410, "session ended")
            await hub.drop(session_id)
        return {"status": "ended"}

    @app.get("/v1/sessions/{session_id}/messages")
    async def messages(
        session_id: str, token: Annotated[str, Depends(bearer)]
    ) -> list[dict[str, Any]]:
        await hub.authorize(session_id, token)
        result = await hub.rpc(GetMessages(session_id=session_id, token=token), MessageList)
        return [m.model_dump() for m in result.messages]

    @app.post("/v1/sessions/{session_id}/webrtc")
    async def webrtc(
        session_id: str, offer: Offer, token: Annotated[str, Depends(bearer)]
    ) -> dict[str, str]:
        info = await hub.authorize(session_id, token)
        if offer.type != "offer":
            raise api_error(400, ErrorCode.BAD_SDP, 'type must be "offer"')
        if len(offer.sdp) > cfg.max_sdp_bytes:
            raise api_error(413, ErrorCode.SDP_TOO_LARGE, "the offer is too large")
        live = await hub.live_session(info)
        from .webrtc import answer_offer

        try:
            echo = offer.echo_cancellation
            if echo is None:
                echo = cfg.echo_cancellation
            sdp, kind = await answer_offer(live, offer.sdp, cfg.ice_servers, echo)
        except ValueError as exc:
            raise api_error(400, ErrorCode.BAD_SDP, f"invalid SDP offer: {exc}") from exc
        return {"sdp": sdp, "type": kind}

    @app.websocket("/v1/sessions/{session_id}/events")
    async def events(ws: WebSocket, session_id: str, token: str = "") -> None:
        await ws.accept()
        try:
            info = await hub.authorize(session_id, token)
        except HTTPException as exc:
            detail: dict[str, str] = exc.detail if isinstance(exc.detail, dict) else {}
            await ws.send_text(
                ErrorEvent(
                    code=detail.get("code", ErrorCode.UNAUTHORIZED),
                    message=detail.get("message", "not allowed"),
                ).model_dump_json()
            )
            await ws.close(4000 + exc.status_code)
            return
        live = await hub.live_session(info)
        live.sockets.add(ws)
        await ws.send_text(live.last_state)  # where the agent is now (e.g. after a reconnect)
        try:
            await _serve_socket(ws, live, cfg)
        except WebSocketDisconnect:
            pass
        finally:
            live.sockets.discard(ws)
            live.last_seen = time.monotonic()

    if cfg.tls_ca is not None:
        ca = cfg.tls_ca

        @app.get("/ca.crt", include_in_schema=False)
        async def ca_certificate() -> FileResponse:
            """The local certificate authority, for devices to trust (tls.py)."""
            return FileResponse(ca, media_type="application/x-x509-ca-cert", filename="ca.crt")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    return app


async def _serve_socket(ws: WebSocket, live: LiveSession, cfg: GatewaySettings) -> None:
    while True:
        raw = await ws.receive_text()
        if not await live.limits.message(live.sid):
            await _ws_error(ws, ErrorCode.RATE_LIMITED, "too many messages: slow down")
            continue
        if len(raw) > cfg.max_ws_message_bytes:
            await _ws_error(ws, ErrorCode.MESSAGE_TOO_LARGE, "the message is too large")
            continue
        try:
            cmd = decode(ClientCommand, raw)
        except BadMessage as exc:
            if _is_json(raw):
                await _ws_error(ws, ErrorCode.BAD_REQUEST, f"invalid message: {exc}")
            else:
                await _ws_error(ws, ErrorCode.INVALID_JSON, "the message is not valid JSON")
            continue
        if isinstance(cmd, UserText):
            text = cmd.text.strip()
            if not text:
                await _ws_error(ws, ErrorCode.BAD_REQUEST, "text is empty")
                continue
            if len(text) > cfg.max_text_chars:
                await _ws_error(
                    ws, ErrorCode.TEXT_TOO_LONG, f"text is over {cfg.max_text_chars} characters"
                )
                continue
            await live.submit_text(text)
        else:
            await live.interrupt("client")


def _is_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


async def _ws_error(ws: WebSocket, code: ErrorCode, message: str) -> None:
    await ws.send_text(ErrorEvent(code=code, message=message).model_dump_json())


__all__ = ["Hub", "create_app", "ValidationError"]
