"""Sessions: one pipecat pipeline per WebRTC peer, started by its offer, ended when it leaves."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.workers.runner import WorkerRunner

from agent.capacity import resolve_max_sessions
from agent.config import Settings
from agent.process import release_call_memory
from agent.server.ice import server_ice_servers
from agent.server.limits import end_at_limits
from agent.server.signalling import SignallingError
from pipelines.activity import UserActivityObserver
from pipelines.conversation import Conversation, avatar_transport_params, build_conversation
from pipelines.health import DependencyHealth
from pipelines.transports.smallwebrtc import AvatarVideoTrack, AvatarWebRTCTransport
from renderer.frames.factory import BUILTIN
from renderer.portrait.avatar import META_FILE, AvatarError, check_name

#: How often a new call checks whether its peer has connected (the greeting waits for it).
CONNECT_POLL_S = 0.02

#: Delay before the memory of ended calls is collected, so calls ending together share it.
RELEASE_DELAY_S = 0.5

#: Builds a conversation for a new peer; tests swap in lighter ones.
ConversationFactory = Callable[[SmallWebRTCConnection, Settings], Conversation]


def default_factory(
    connection: SmallWebRTCConnection,
    settings: Settings,
    health: DependencyHealth | None = None,
) -> Conversation:
    """The real pipeline with the configured stages, on the avatar's SmallWebRTC transport;
    its stages report to ``health``."""
    return build_conversation(
        AvatarWebRTCTransport(connection, avatar_transport_params(settings.avatar)),
        stt=settings.stt,
        llm=settings.llm,
        tts=settings.tts,
        vad=settings.vad,
        avatar=settings.avatar,
        budgets=settings.budgets,
        name=connection.pc_id,
        health=health,
    )


def call_settings(settings: Settings, request_data: Any) -> Settings:
    """The settings of a new call: ``settings`` with the face its caller chose
    (``request_data.avatar``: the built-in stylised face or a portrait avatar stored in
    ``avatar.dir``, never an import path), when ``server.caller_avatar`` allows it.
    :class:`SignallingError` for a choice that names nothing here."""
    wanted = request_data.get("avatar") if isinstance(request_data, dict) else None
    if wanted in (None, "", settings.avatar.face) or not settings.server.caller_avatar:
        return settings
    if not isinstance(wanted, str):
        raise SignallingError("request_data.avatar must be the name of an avatar")
    if wanted not in BUILTIN:
        try:
            check_name(wanted)
        except AvatarError:
            bad = wanted[:64]
            raise SignallingError(f"request_data.avatar {bad!r} is not an avatar name") from None
        if not (settings.avatar.dir / wanted / META_FILE).is_file():
            raise SignallingError(f"this server has no avatar named {wanted!r}")
    avatar = settings.avatar.model_copy(update={"face": wanted})
    return settings.model_copy(update={"avatar": avatar})


class SessionLimitError(RuntimeError):
    """The server already runs as many calls as it is configured for."""


class SessionStartError(RuntimeError):
    """The pipeline for a new call could not be built (our side, not the client's)."""


class UnknownCallError(LookupError):
    """No call with this ``pc_id`` belongs to the caller (a 404: whether the call exists
    under another caller is not revealed)."""


@dataclass
class Session:
    """One running call."""

    pc_id: str
    connection: SmallWebRTCConnection
    conversation: Conversation
    #: The network address the call was offered from; only it may restart the call or
    #: add ICE candidates, on top of knowing the unguessable ``pc_id``.
    owner: str
    task: asyncio.Task | None = None
    #: Whether the pipeline runs (the peer connected).
    running: bool = False
    started_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for its caller (GET /api/calls/{pc_id})."""
        track = self.video_track()
        core = self.conversation.avatar.core
        return {
            "pc_id": self.pc_id,
            "age_s": round(time.time() - self.started_at, 1),
            "engines": self.conversation.engines,
            "stats": self.conversation.stats.stats.as_dict(),
            "turns": [
                {
                    "turn": r.turn,
                    "stages_ms": r.stages_ms,
                    "over_budget": r.over_budget,
                    "speech_end": r.speech_end,
                    "starts_ms": r.starts_ms,
                }
                for r in self.conversation.latency.reports
            ],
            "barge_ins": [b.as_dict() for b in self.conversation.latency.barge_ins],
            "audio": {
                # Stretches inside replies when the avatar had no audio to play.
                "reply_gaps": core.gaps,
                "reply_gap_ms": round(core.gap_frames * 1000 / core.fps),
            },
            "video": {
                "rendered": self.conversation.avatar.frames_rendered,
                "drawn": self.conversation.avatar.frames_drawn,
                "quality": self.conversation.avatar.core.quality.describe(),
                "sent": track.frames_sent if track else 0,
                "repeated": track.frames_repeated if track else 0,
                "dropped": track.frames_dropped if track else 0,
            },
        }

    def video_track(self) -> AvatarVideoTrack | None:
        """The call's outgoing video track, once the peer is connected."""
        transport = self.conversation.transport
        return transport.video_track if isinstance(transport, AvatarWebRTCTransport) else None


class SessionManager:
    """Creates, tracks and tears down calls; all public methods are safe to call at any time."""

    def __init__(
        self,
        settings: Settings,
        factory: ConversationFactory | None = None,
        stop_timeout_s: float = 5.0,
        *,
        freeze_when_idle: bool = False,
    ) -> None:
        """``freeze_when_idle``: a long-running server freezes what outlives its calls out
        of the garbage collector's scans (see ``release_call_memory``)."""
        self._settings = settings
        self._freeze_when_idle = freeze_when_idle
        self._release: asyncio.TimerHandle | None = None
        #: The state of the LLM, TTS and STT, which every call's stages report to.
        self.health = DependencyHealth()
        self._factory = factory or functools.partial(default_factory, health=self.health)
        self._stop_timeout_s = stop_timeout_s
        #: Calls admitted at once: the setting, the machine's measured capacity, or a
        #: per-core figure (agent/capacity.py).
        self.max_sessions, why = resolve_max_sessions(settings)
        logger.info(f"call limit: {self.max_sessions} ({why})")
        self._handler = SmallWebRTCRequestHandler()
        self._sessions: dict[str, Session] = {}
        self._closing = False

    @property
    def count(self) -> int:
        """Calls currently running."""
        return len(self._sessions)

    def describe(self) -> list[dict[str, Any]]:
        """Summaries of the running calls (for tests and in-process tools; never served)."""
        return [session.describe() for session in self._sessions.values()]

    def owned(self, pc_id: str, owner: str) -> Session:
        """The call ``pc_id`` if ``owner`` made it; else :class:`UnknownCallError`."""
        session = self._sessions.get(pc_id)
        if session is None or session.owner != owner:
            raise UnknownCallError("no call with this pc_id is yours")
        return session

    async def offer(self, request: SmallWebRTCRequest, owner: str) -> dict[str, str]:
        """Answer an SDP offer from the address ``owner``: a new call gets its own
        pipeline; an offer naming a ``pc_id`` renegotiates that call, if it is the
        owner's."""
        if self._closing:
            raise SessionLimitError("the server is shutting down")
        # STUN/TURN servers with freshly derived TURN credentials, for the new connection
        # or for the one a restart makes.
        ice_servers = server_ice_servers(self._settings.server)
        settings = self._settings
        if request.pc_id is not None:
            self.owned(request.pc_id, owner).connection.ice_servers = ice_servers
        else:
            settings = call_settings(self._settings, request.request_data)
            self._admit()
            self._handler.update_ice_servers(ice_servers)
        failed: list[tuple[SmallWebRTCConnection, Exception]] = []

        async def start_session(connection: SmallWebRTCConnection) -> None:
            try:
                conversation = self._factory(connection, settings)
            except Exception as exc:
                # pipecat's handler only logs callback errors; keep it to answer with it.
                failed.append((connection, exc))
                raise
            self._start(Session(connection.pc_id, connection, conversation, owner))

        answer = await self._handler.handle_web_request(request, start_session)
        if failed:
            connection, exc = failed[0]
            await self._disconnect(connection)
            raise SessionStartError(f"could not start the call: {exc}") from exc
        assert answer is not None
        return answer

    def _admit(self) -> None:
        """Refuse a new call the running ones would pay for."""
        if self.count >= self.max_sessions:
            raise SessionLimitError(
                f"all {self.max_sessions} call slots are busy; try again later or raise "
                "server.max_sessions (measure with `visage bench load --find-capacity`)"
            )
        for session in self._sessions.values():
            ladder = session.conversation.avatar.ladder
            if session.running and ladder is not None and ladder.saturated:
                raise SessionLimitError(
                    f"call {session.pc_id} renders at the lowest quality and its frames are "
                    f"still late ({ladder.decided_load_s * 1000:.0f} ms of work per frame); "
                    "the machine is full"
                )

    async def add_candidates(self, request: SmallWebRTCPatchRequest, owner: str) -> None:
        """Trickle ICE: add the late candidates of ``owner``'s call."""
        self.owned(request.pc_id, owner)
        await self._handler.handle_patch_request(request)

    async def close_all(self) -> None:
        """Hang up every call and wait (bounded) for their pipelines to finish. Idempotent."""
        self._closing = True
        sessions = list(self._sessions.values())
        await asyncio.gather(*(self._stop(session) for session in sessions))
        await asyncio.wait_for(self._handler.close(), self._stop_timeout_s)
        if self._release is not None:
            self._release.cancel()

    def _start(self, session: Session) -> None:
        self._sessions[session.pc_id] = session
        session.task = asyncio.create_task(self._run(session), name=f"session-{session.pc_id}")
        # Once the task is done its frames no longer hold the call, so it can be freed.
        session.task.add_done_callback(self._release_soon)

        @session.connection.event_handler("closed")
        async def _on_closed(_connection: SmallWebRTCConnection) -> None:
            await session.conversation.worker.cancel(reason="peer connection closed")

    def _release_soon(self, _task: asyncio.Task) -> None:
        """Once a call's task is done (its frames no longer hold it), free what it held;
        calls that end together share one collection."""
        if self._release is None or self._release.cancelled():
            self._release = asyncio.get_running_loop().call_later(
                RELEASE_DELAY_S, self._release_now
            )

    def _release_now(self) -> None:
        self._release = None
        release_call_memory(self.count, freeze_when_idle=self._freeze_when_idle)

    async def _run(self, session: Session) -> None:
        limits: asyncio.Task | None = None
        try:
            # The pipeline (and its avatar's rendering) starts only once the peer is
            # there: an offer that never connects costs no CPU, only its slot, and only
            # for connect_timeout_s.
            if not await self._connected(session):
                return
            session.running = True
            worker = session.conversation.worker
            activity = UserActivityObserver()
            worker.add_observer(activity)
            server = self._settings.server
            limits = asyncio.create_task(
                end_at_limits(
                    worker, activity, server.idle_timeout_s, server.max_session_s, session.pc_id
                ),
                name=f"session-limits-{session.pc_id}",
            )
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        except Exception:
            logger.exception(f"session {session.pc_id} failed")
        finally:
            if limits is not None:
                limits.cancel()
                await asyncio.gather(limits, return_exceptions=True)
            # Counted until its sockets are closed: a slot is free only when they are.
            await self._disconnect(session.connection)
            self._sessions.pop(session.pc_id, None)
            logger.info(f"session {session.pc_id} ended; {self.count} running")

    async def _connected(self, session: Session) -> bool:
        """Wait until the peer's connection is up: False if it fails, closes, or takes
        longer than ``server.connect_timeout_s``."""
        deadline = time.monotonic() + self._settings.server.connect_timeout_s
        while True:
            # Polled, not an event: a restart replaces the connection's RTCPeerConnection.
            state = session.connection.pc.connectionState
            if state == "connected":
                return True
            if state in ("failed", "closed"):
                logger.info(f"session {session.pc_id}: the peer's connection {state}")
                return False
            if time.monotonic() >= deadline:
                logger.warning(
                    f"session {session.pc_id}: the peer did not connect within "
                    f"{self._settings.server.connect_timeout_s:g} s of its offer; hanging up"
                )
                return False
            await asyncio.sleep(CONNECT_POLL_S)

    async def _disconnect(self, connection: SmallWebRTCConnection) -> None:
        """Close the peer connection (its sockets and aiortc tasks), bounded in time."""
        try:
            await asyncio.wait_for(connection.disconnect(), self._stop_timeout_s)
        except TimeoutError:
            logger.warning(
                f"closing the peer connection {connection.pc_id} took over "
                f"{self._stop_timeout_s:g} s; abandoned"
            )
        except Exception:
            logger.exception(f"closing the peer connection {connection.pc_id} failed")

    async def _stop(self, session: Session) -> None:
        if session.task is None:
            return
        if not session.running:
            session.task.cancel()  # still waiting for the peer: nothing to wind down
        await session.conversation.worker.cancel(reason="server shutting down")
        try:
            await asyncio.wait_for(asyncio.shield(session.task), self._stop_timeout_s)
        except TimeoutError:
            logger.warning(f"session {session.pc_id} did not stop in time; cancelling")
            session.task.cancel()
        except asyncio.CancelledError:
            if not session.task.cancelled():
                raise
