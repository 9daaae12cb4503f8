"""HLS viewers: players counted through SRS's ``hls_ctx`` session ids, each a client in the hub's registry.

A playlist request without ``?hls_ctx=`` is redirected (302) to the same URL with a session id; players
(hls.js, ffmpeg, Safari) follow it and resolve segment URIs against the new URL. FFmpeg reloads the *original*
URL each time, so a request without a session from the same (stream, ip, user-agent) as a recent session is
redirected to that session, not a new one. A session that has not fetched the playlist for
:data:`SESSION_TIMEOUT` seconds ends. An HLS player has no connection: kicking it ends its session and refuses
its id (403) for :data:`SESSION_TIMEOUT`, so the player stops.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final
from urllib.parse import quote

from livesrv import stats
from livesrv.hub.clients import VIEWER, HookContext
from livesrv.hub.keys import StreamKey
from livesrv.log import client_event, event
from livesrv.hub.clients import new_client_id
from livesrv.servers.http import Request, Response
from livesrv.servers.http_viewer import CORS

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.hls")

#: Seconds without a playlist request after which an HLS viewer has left.
SESSION_TIMEOUT: Final = 30.0
#: HLS viewer sessions kept at most (beyond it players are served but not counted).
MAX_SESSIONS: Final = 100_000
_CTX_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")


@dataclass(slots=True, eq=False)
class HlsSession:
    """An HLS viewer: a player that keeps fetching the playlist with its ``hls_ctx``."""

    id: str
    key: StreamKey
    ip: str
    user_agent: str
    started: float  # time.time()
    last_seen: float  # monotonic
    context: HookContext
    sessions: HlsSessions
    sent: int = 0  # playlist bytes served to it (segment requests carry no session id)

    kind: ClassVar[str] = VIEWER
    protocol: ClassVar[str] = "hls"

    @property
    def cid(self) -> str:
        return self.id

    @property
    def recv_bytes(self) -> int:
        return 0

    @property
    def send_bytes(self) -> int:
        return self.sent

    def kick(self, reason: str) -> None:
        self.sessions.kick(self, reason)


def _without_ctx(query: str) -> str:
    """The query a player sent, without the ``hls_ctx`` this server added (hooks see the player's own)."""
    if not query:
        return ""
    kept = [p for p in query.lstrip("?").split("&") if p and not p.startswith("hls_ctx=")]
    return "?" + "&".join(kept) if kept else ""


class HlsSessions:
    """Every HLS viewer session, their security rules and on_play/on_stop hooks, and their expiry."""

    def __init__(self, hub: Hub, access: Access) -> None:
        self.hub = hub
        self.access = access
        self._sessions: dict[str, HlsSession] = {}
        self._session_by_client: dict[tuple[StreamKey, str, str], str] = {}
        self._kicked: dict[str, float] = {}  # session ids kicked by the operator -> monotonic time, refused
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="hls-sessions")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for session in list(self._sessions.values()):
            self.end(session, "server stopped")

    def get(self, sid: str) -> HlsSession | None:
        return self._sessions.get(sid)

    def of(self, key: StreamKey) -> list[HlsSession]:
        return [s for s in self._sessions.values() if s.key == key]

    async def check(self, req: Request, key: StreamKey) -> Response | None:
        """Count the player (SRS ``hls_ctx``): a redirect for a request without a session, a refusal, or None
        (serve the playlist)."""
        ua = req.headers.get("user-agent", "")[:200]
        client = (key, req.ip, ua)
        now = time.monotonic()
        ctx = req.query.get("hls_ctx", "")
        if not ctx:
            sid = self._session_by_client.get(client)
            old = self._sessions.get(sid) if sid else None
            if old is None or now - old.last_seen > SESSION_TIMEOUT:
                sid = new_client_id()
            query = req.raw_query
            target = quote(req.path, safe="/:@!$&'()*+,;=-._~") + (query + "&" if query else "?") + f"hls_ctx={sid}"
            return Response(302, b"", headers=[("Location", target), *CORS, ("Cache-Control", "no-cache")])
        session = self._sessions.get(ctx)
        if session is not None and session.key == key:
            session.last_seen = now
            return None
        if not _CTX_RE.fullmatch(ctx):
            return Response(400, b"bad hls_ctx\n", headers=CORS)
        kicked = self._kicked.get(ctx)
        if kicked is not None and now - kicked < SESSION_TIMEOUT:
            return Response(403, b"forbidden: kicked\n", headers=CORS)
        if len(self._sessions) >= MAX_SESSIONS:
            return None  # (ids are the client's to choose: bounded memory) served, not counted
        # A new viewer (or one whose session expired, or from before a restart: it keeps its URL).
        context = HookContext(ctx, req.ip, key.vhost, key.app, key.stream, _without_ctx(req.raw_query),
                              f"{req.scheme}://{req.headers.get('host', '')}/{key.app}", req.headers.get("referer", ""))
        session = HlsSession(ctx, key, req.ip, ua, time.time(), now, context, self)
        refused = self.access.security(key.vhost, "play", req.ip)
        if refused is None:
            refused = await self.access.play(context)
        if refused is not None:
            client_event(log, "play-rejected", ctx, req.ip, key, refused, logging.WARNING, protocol="hls")
            return Response(403, b"forbidden\n", headers=CORS)
        if ctx in self._sessions:  # the same id on another stream: the old one is over
            self.end(self._sessions[ctx], "switched stream")
        self._sessions[ctx] = session
        self._session_by_client[client] = ctx
        self.hub.register(session)
        client_event(log, "play", ctx, req.ip, key, protocol="hls")
        return None

    def end(self, session: HlsSession, reason: str) -> None:
        if self._sessions.get(session.id) is not session:
            return
        del self._sessions[session.id]
        client = (session.key, session.ip, session.user_agent)
        if self._session_by_client.get(client) == session.id:
            del self._session_by_client[client]
        self.hub.unregister(session)
        client_event(log, "close", session.id, session.ip, session.key, reason, protocol="hls")
        stats.connection_closed("hls", 0, session.sent)
        self.access.stop(session.context)

    def kick(self, session: HlsSession, reason: str) -> None:
        """End a session now; its id is refused (403) for :data:`SESSION_TIMEOUT`, so the player stops."""
        if len(self._kicked) >= MAX_SESSIONS:
            self._kicked.clear()
        self._kicked[session.id] = time.monotonic()
        self.end(session, reason)

    def expire(self, now: float | None = None) -> None:
        limit = (time.monotonic() if now is None else now) - SESSION_TIMEOUT
        for session in [s for s in self._sessions.values() if s.last_seen < limit]:
            self.end(session, f"no playlist request for {SESSION_TIMEOUT:g}s")
        for sid in [sid for sid, t in self._kicked.items() if t < limit]:
            del self._kicked[sid]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                self.expire()
            except Exception:  # noqa: BLE001
                event(log, "hls-session-error", logging.ERROR, exc_info=True)
