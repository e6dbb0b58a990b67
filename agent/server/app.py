"""The ASGI app: the call page, health, and pipecat's SmallWebRTC signalling routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger

import web
from agent.config import Settings
from agent.process import configure_process
from agent.server.access import TokenError
from agent.server.cors import AccessMiddleware
from agent.server.gate import Gate, RateLimitedError, caller_address
from agent.server.ice import browser_ice_servers
from agent.server.sessions import (
    SessionLimitError,
    SessionManager,
    SessionStartError,
    UnknownCallError,
)
from agent.server.signalling import (
    BodyTooLargeError,
    SignallingError,
    UnsupportedMediaTypeError,
    parse_offer,
    parse_patch,
    read_body,
)
from agent.server.start_ids import StartSessionIds

WEB_DIR = Path(web.__file__).parent


#: Seconds a caller refused for lack of capacity is told to wait before trying again.
RETRY_AFTER_S = 5


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _internal_error(request: Request, exc: BaseException, what: str) -> JSONResponse:
    """Log ``exc`` once, with its context, under a fresh error id; the caller gets only the
    id, never the exception's text (paths, settings, internals)."""
    error_id = uuid.uuid4().hex[:12]
    logger.opt(exception=exc).error(
        f"{request.method} {request.url.path} failed (error {error_id}): {what}"
    )
    return _error(500, f"{what}; the server logged it as error {error_id}", error_id=error_id)


#: What aiortc raises for a description or candidate it cannot use: the caller's fault.
NEGOTIATION_ERRORS = (ValueError, InvalidAccessError, InvalidStateError, OperationError)


def _rejected(request: Request, exc: BaseException, what: str) -> SignallingError:
    """A 400 for a request the WebRTC stack refused, logged (once, briefly) under an id."""
    error_id = uuid.uuid4().hex[:12]
    logger.warning(f"{request.method} {request.url.path} (error {error_id}): {what}: {exc!r}")
    return SignallingError(f"{what}; the server logged it as error {error_id}")


def create_app(
    settings: Settings, sessions: SessionManager | None = None, *, long_running: bool = False
) -> FastAPI:
    """Build the app; ``sessions`` lets tests inject a manager with a lighter pipeline.
    ``long_running`` is for ``visage serve``: the process lives for this one server."""
    configure_process(settings)
    manager = sessions or SessionManager(settings, freeze_when_idle=long_running)
    start_ids = StartSessionIds()
    gate = Gate(settings.server)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.close_all()

    app = FastAPI(title="Visage", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sessions = manager
    app.state.gate = gate
    app.add_middleware(AccessMiddleware, policy=gate.policy)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.exception_handler(SignallingError)
    async def _bad_signalling(_request: Request, exc: SignallingError) -> JSONResponse:
        status = 400
        if isinstance(exc, BodyTooLargeError):
            status = 413
        elif isinstance(exc, UnsupportedMediaTypeError):
            status = 415
        return _error(status, str(exc))

    @app.exception_handler(SessionLimitError)
    async def _busy(_request: Request, exc: SessionLimitError) -> JSONResponse:
        logger.warning(f"call refused: {exc}")  # the reason names settings: log it only
        return _error(503, "the server cannot take another call right now; try again shortly")

    @app.exception_handler(SessionStartError)
    async def _start_failed(request: Request, exc: SessionStartError) -> JSONResponse:
        return _internal_error(request, exc.__cause__ or exc, "the call could not be started")

    @app.exception_handler(TokenError)
    async def _no_token(_request: Request, exc: TokenError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(RateLimitedError)
    async def _rate_limited(_request: Request, exc: RateLimitedError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)}
        body = {"error": str(exc), "retry_after": exc.retry_after_s}
        return JSONResponse(body, status_code=429, headers=headers)

    @app.exception_handler(UnknownCallError)
    async def _unknown_call(_request: Request, exc: UnknownCallError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc, "internal error")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    # The embeddable widget (web/embed.js); /widget.js is the older snippet's address.
    @app.get("/embed.js", include_in_schema=False)
    @app.get("/widget.js", include_in_schema=False)
    async def embed() -> FileResponse:
        return FileResponse(WEB_DIR / "embed.js", media_type="text/javascript")

    @app.get("/health")
    async def health() -> dict[str, object]:
        # 200 even when degraded: the server still takes calls and the avatar says its
        # fallback line, and an LLM shared by every node would otherwise take them all out
        # of rotation at once. A balancer that should drain a degraded node matches on
        # "status" in the body.
        return {
            "status": "degraded" if manager.health.degraded else "ok",
            "sessions": manager.count,
            "max_sessions": manager.max_sessions,
            "dependencies": manager.health.describe(),
        }

    @app.get("/api/ice-servers")
    async def ice_servers(request: Request) -> JSONResponse:
        """The STUN/TURN servers for the browser's RTCPeerConnection, with TURN
        credentials minted for this request (``expires_in`` seconds). With token auth
        only a caller holding a session token gets them (checked, not spent: the offer
        spends it), so the relay is not open to anyone who asks."""
        gate.admit_ice_servers(request)
        body = browser_ice_servers(settings.server)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    # No route lists calls: a call's pc_id is its caller's secret.
    @app.get("/api/calls/{pc_id}")
    async def call_stats(pc_id: str, request: Request) -> dict[str, object]:
        """One call's figures (stage timings per turn, barge-ins, video), for its caller."""
        return manager.owned(pc_id, caller_address(request)).describe()

    async def answer_offer(request: Request) -> dict[str, str]:
        offer = parse_offer(await read_body(request))
        with gate.spending_token(request, offer):
            try:
                return await manager.offer(offer, caller_address(request))
            except (
                SessionLimitError,
                SessionStartError,
                UnknownCallError,
                SignallingError,
                HTTPException,
            ):
                raise
            except NEGOTIATION_ERRORS as exc:
                # The SDP passed our checks but the WebRTC stack could not use it. Its
                # message describes our internals, so the caller gets an id and the log
                # the rest.
                raise _rejected(request, exc, "the offer could not be negotiated") from exc

    async def add_candidates(request: Request) -> dict[str, str]:
        patch = parse_patch(await read_body(request))
        try:
            await manager.add_candidates(patch, caller_address(request))
        except (UnknownCallError, HTTPException):
            raise
        except NEGOTIATION_ERRORS as exc:
            raise _rejected(request, exc, "the ICE candidates could not be used") from exc
        return {"status": "success"}

    @app.post("/api/session")
    async def session_token(request: Request) -> JSONResponse:
        """A single-use session token: ``{"token": ..., "expires_in": seconds}``."""
        return await gate.mint(request)

    @app.post("/api/offer")
    async def offer(request: Request) -> dict[str, str]:
        return await answer_offer(request)

    @app.patch("/api/offer")
    async def patch_offer(request: Request) -> dict[str, str]:
        return await add_candidates(request)

    # pipecat's client SDKs first POST /start, then signal under /sessions/{id}/.
    @app.post("/start")
    async def start(request: Request) -> dict[str, str]:
        await gate.admit_start(request)
        return {"sessionId": start_ids.issue()}

    def check_start_session(session_id: str) -> None:
        if not start_ids.valid(session_id):
            raise HTTPException(404, f"unknown session id {session_id!r}; POST /start first")

    @app.post("/sessions/{session_id}/api/offer")
    async def session_offer(session_id: str, request: Request) -> dict[str, str]:
        check_start_session(session_id)
        return await answer_offer(request)

    @app.patch("/sessions/{session_id}/api/offer")
    async def session_patch(session_id: str, request: Request) -> dict[str, str]:
        check_start_session(session_id)
        return await add_candidates(request)

    return app
