"""WebRTC's HTTP side, SRS's URLs on the ``http_api`` port: ``POST /rtc/v1/whep/?app=live&stream=name`` plays,
``POST /rtc/v1/whip/?app=live&stream=name`` publishes (``/rtc/v1/whip-play/`` and ``?action=play`` play too, as
SRS). The body is the SDP offer; the answer is ``201`` with the SDP answer and a ``Location`` that ``DELETE``
ends the session with (SRS's ``?action=delete&token=...``).

An offer is checked before anything is created (:func:`livesrv.codec.webrtc.check_offer`); a refusal is a 4xx
with the reason as its body, logged once, and leaves nothing behind. Security rules and the ``on_play`` /
``on_publish`` hooks apply as to any client; ``on_stop`` and ``on_unpublish`` follow at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from livesrv.codec.webrtc import Offer, OfferError, check_offer
from livesrv.config.model import VhostRtcConfig
from livesrv.hub.clients import HookContext
from livesrv.hub.hub import StreamBusy
from livesrv.hub.keys import StreamRequest, parse_rtmp_request, request_problem
from livesrv.hub.settings import stream_settings
from livesrv.log import client_event, event
from livesrv.servers.http import HTTPConnection, Request, Response

if TYPE_CHECKING:
    # The WebRTC stack (aiortc, aioice, PyAV: ~50 MiB of every process's memory) is imported only once WebRTC is
    # on: by start(), or by the first request after a reload turned it on.
    from livesrv.servers.rtc import ice
    from livesrv.servers.rtc.play import WhepViewer
    from livesrv.servers.rtc.session import RtcSession
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.rtc")

PREFIX = "/rtc/v1/"
#: Query parameters that are SRS's WebRTC options, not the client's (tokens stay in ``param`` for hooks).
_OWN_PARAMS = frozenset({"app", "stream", "action", "eip", "candidate", "codec", "encrypt", "dtls", "ice-ufrag",
                         "ice-pwd", "vhost", "domain"})
CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Authorization, If-Match"),
    ("Access-Control-Expose-Headers", "Location, Content-Type"),
]
#: aioice's consent checks fail this many times in a row before a session counts as gone (its constant).
CONSENT_FAILURES = 6


class RtcError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class RtcService:
    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access) -> None:
        self.hub = hub
        self._config = config
        self.access = access
        self.sessions: dict[str, RtcSession] = {}  # token -> session
        self.tasks: set[asyncio.Task[None]] = set()
        self.plan: ice.IcePlan | None = None  # (set by start(), when WebRTC is on)

    # ---------------------------------------------------------------------------------- lifecycle

    @property
    def enabled(self) -> bool:
        return self._config().rtc_server.enabled

    async def start(self) -> None:
        cfg = self._config()
        rs = cfg.rtc_server
        if not rs.enabled:
            return
        import aioice.ice

        from livesrv.servers.rtc import ice

        self.plan = ice.plan(rs.candidate, rs.ip_family)
        ice.install(self.plan, rs.ip_family)
        # SRS's stun_timeout: a peer whose ICE consent checks keep failing this long is closed. aioice checks
        # every CONSENT_INTERVAL seconds and gives up after CONSENT_FAILURES misses (process-wide constants).
        timeout = cfg.vhost("").rtc.stun_timeout
        aioice.ice.CONSENT_INTERVAL = max(0.5, timeout / CONSENT_FAILURES)
        if rs.tcp.enabled or rs.protocol == "tcp":
            event(log, "rtc-no-tcp", logging.WARNING, reason="WebRTC over TCP (rtc_server.tcp, protocol tcp) is not "
                  "supported: sessions use UDP")
        event(log, "rtc-ready", candidate=rs.candidate, bind=",".join(self.plan.bind or ("*",)),
              announce=self.plan.announce or "", note="WHIP/WHEP on the http_api port; one OS-chosen UDP port "
              "per session (rtc_server.listen is not used)")

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close("server shutting down")
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=6)

    def vhost_rtc(self, vhost: str) -> VhostRtcConfig:
        return self._config().vhost(vhost).rtc

    def vhost_publish(self, vhost: str) -> Any:
        return self._config().vhost(vhost).publish

    def keep_bframe(self, vhost: str) -> bool:
        return self.vhost_rtc(vhost).keep_bframe

    def forget(self, session: RtcSession) -> None:
        if self.sessions.get(session.token) is session:
            del self.sessions[session.token]

    # ---------------------------------------------------------------------------------- requests

    def handles(self, req: Request) -> bool:
        return req.path.startswith(PREFIX)

    async def handle(self, req: Request, conn: HTTPConnection) -> Response:
        path = req.path.rstrip("/")
        action = req.query.get("action", "")
        if path not in ("/rtc/v1/whip", "/rtc/v1/whep", "/rtc/v1/whip-play"):
            return _text(404, f"no WebRTC API at {req.path} (WHIP: /rtc/v1/whip/, WHEP: /rtc/v1/whep/)")
        if req.method == "OPTIONS":
            return Response(204, b"", headers=list(CORS))
        if req.method == "DELETE" or action == "delete":
            return self._delete(req)
        if req.method != "POST":
            return _text(405, f"method {req.method} not allowed: POST an SDP offer (application/sdp)",
                         [("Allow", "POST, DELETE, OPTIONS")])
        play = path in ("/rtc/v1/whep", "/rtc/v1/whip-play") or action == "play"
        try:
            return await (self._play(req) if play else self._publish(req))
        except RtcError as exc:
            client_event(log, "play-rejected" if play else "publish-rejected", "-", req.ip,
                         _key_text(req), str(exc), logging.WARNING, protocol="rtc")
            return _text(exc.status, str(exc))

    def _delete(self, req: Request) -> Response:
        token = req.query.get("token", "")
        if not token:
            return _text(400, "DELETE needs the token of the Location the session was created with")
        session = self.sessions.get(token)
        if session is not None:
            session.close("DELETE by the client")
        return Response(200, b"", headers=list(CORS))  # as SRS: also for a session already gone

    # ---------------------------------------------------------------------------------- common checks

    def _request(self, req: Request, method: str) -> tuple[StreamRequest, Any, ice.IcePlan]:
        from livesrv.servers.rtc import ice

        cfg = self._config()
        if not cfg.rtc_server.enabled:
            raise RtcError(404, "WebRTC is off: rtc_server { enabled on; }")
        if len(self.sessions) >= cfg.max_connections:  # each holds a UDP port and a peer connection
            raise RtcError(503, f"too many WebRTC sessions (max_connections {cfg.max_connections})")
        app = req.query.get("app", "live")
        stream = req.query.get("stream", "livestream")
        host = req.headers.get("host", "")
        extra = {k: v for k, v in req.query.items() if k not in _OWN_PARAMS}
        vhost_q = req.query.get("vhost") or req.query.get("domain")
        if vhost_q:
            extra = {"vhost": vhost_q, **extra}
        query = urlencode(extra)
        sreq = parse_rtmp_request(f"webrtc://{host}/{app}", app, stream + (f"?{query}" if query else ""),
                                  cfg.vhosts.keys())
        if not sreq.key.app or not sreq.key.stream:
            raise RtcError(400, f"invalid stream {app!r}/{stream!r}: want ?app=live&stream=name")
        problem = request_problem(sreq)
        if problem is not None:
            raise RtcError(400, problem)
        vhost = cfg.vhost(sreq.key.vhost)
        if not vhost.enabled:
            raise RtcError(403, f"vhost {sreq.key.vhost} is disabled")
        if not vhost.rtc.enabled:
            raise RtcError(403, f"WebRTC is off for vhost {sreq.key.vhost}: vhost {{ rtc {{ enabled on; }} }}")
        denied = self.access.security(sreq.key.vhost, method, req.ip)
        if denied is not None:
            raise RtcError(403, denied)
        plan = self.plan or ice.IcePlan(None, None)  # (None: turned on by a reload; aioice's own choice)
        eip = req.query.get("eip") or req.query.get("candidate") or ""
        if eip:  # SRS: announce this address for this session; what is bound stays as configured
            asked = ice.plan("*", eip=eip)
            announce = asked.announce or (asked.bind[0] if asked.bind else None)
            plan = ice.IcePlan(plan.bind, announce if announce not in (plan.bind or ()) else None)
        return sreq, vhost, plan

    async def _negotiate(self, session: RtcSession, req: Request) -> str:
        try:
            sdp = await session.answer(req.body.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - aiortc refuses what it cannot answer: the client's offer
            raise RtcError(400, f"cannot answer this offer: {exc}") from None
        if session.closed:
            raise RtcError(409, f"the session ended during negotiation: {session.reason}")
        return sdp

    def _created(self, session: RtcSession, sdp: str) -> Response:
        self.sessions[session.token] = session
        session.arm(self.vhost_rtc(session.key.vhost).stun_timeout)
        return Response(201, sdp.encode(), "application/sdp",
                        [("Location", session.location()), ("Connection", "Close"), *CORS])

    # ---------------------------------------------------------------------------------- WHEP

    async def _play(self, req: Request) -> Response:
        from livesrv.servers.rtc.play import RtcSource, WhepViewer

        sreq, vhost, plan = self._request(req, "play")
        offer, kinds = _checked_offer(req, sending=True)
        key = sreq.key
        stream = self.hub.get(key)
        if (not vhost.rtc.rtmp_to_rtc and stream is not None and stream.publisher is not None
                and getattr(stream.publisher, "protocol", "") != "rtc"):
            raise RtcError(403, "Disabled rtmp_to_rtc: this stream is not published over WebRTC and the vhost's "
                                "rtc { rtmp_to_rtc on; } is off")
        session = WhepViewer(self, req.ip, key, plan, kinds)
        ctx = HookContext.from_request(session.cid, req.ip, sreq, req.headers.get("referer", ""))
        session.context = ctx
        viewer = session.viewer
        viewer.param = sreq.param
        self.hub.attach(key, viewer, stream_settings(self._config(), key.vhost))  # holds the stream from now
        session.on_end.append(lambda: self._release_viewer(session))
        try:
            if self.access.urls(key.vhost, "on_play"):
                refused = await self.access.play(ctx)
                if refused is not None:
                    raise RtcError(403, f"on_play refused: {refused}")
            sdp = await self._negotiate(session, req)
        except BaseException as exc:
            session.close(f"play refused: {exc}" if isinstance(exc, RtcError) else "request ended", logging.DEBUG)
            raise
        if viewer.detached or session.closed:
            session.close("detached during negotiation")
            raise RtcError(409, "the stream closed this viewer while its offer was answered")
        self.hub.register(session)
        session.registered = True
        stream = viewer.stream
        assert stream is not None
        source = stream.extra.get("rtc")
        if not isinstance(source, RtcSource):
            source = stream.extra["rtc"] = RtcSource(self, stream)
            stream.add_output(source)
            if stream.live:
                source.start(stream)
        source.add(session)
        session.source = source
        session.playing = True
        client_event(log, "play", session.cid, req.ip, key, param=sreq.masked_param(), protocol="rtc",
                     media=",".join(kinds))
        self.hub.admit(viewer)
        return self._created(session, sdp)

    def _release_viewer(self, session: WhepViewer) -> None:
        session.end_tracks()
        source = session.source
        stream = session.viewer.stream
        if source is not None:
            source.remove(session)
            if not source.viewers and stream is not None and stream.extra.get("rtc") is source:
                del stream.extra["rtc"]
                stream.remove_output(source)  # the last WebRTC viewer: no more Opus for this stream
                source.close()
        if session.registered:
            self.hub.unregister(session)
        self.hub.detach(session.viewer)
        if session.playing:
            self.access.stop(session.context)

    # ---------------------------------------------------------------------------------- WHIP

    async def _publish(self, req: Request) -> Response:
        from livesrv.servers.rtc.publish import WhipPublisher

        sreq, vhost, plan = self._request(req, "publish")
        offer, kinds = _checked_offer(req, sending=False)
        key = sreq.key
        session = WhipPublisher(self, req.ip, key, plan, kinds)
        ctx = HookContext.from_request(session.cid, req.ip, sreq, req.headers.get("referer", ""))
        session.context = ctx
        try:
            token = self.hub.begin_publish(key, session, stream_settings(self._config(), key.vhost), sreq.param)
        except StreamBusy as exc:
            session.close("publish refused: stream busy", logging.DEBUG)
            raise RtcError(409, f"Stream already exists or busy: {exc}") from None
        session.token_ = token
        session.on_end.insert(0, lambda: self.hub.unregister(session))
        self.hub.register(session)
        session.registered = True
        try:
            if self.access.publish_gated(key.vhost):  # on_publish, and the cluster's claim in a cluster
                refused = await self.access.publish(ctx)
                if refused is not None:
                    raise RtcError(403, f"on_publish refused: {refused}")
            sdp = await self._negotiate(session, req)
            session.tap()
        except BaseException as exc:
            session.close(f"publish refused: {exc}" if isinstance(exc, RtcError) else "request ended", logging.DEBUG)
            raise
        if session.closed or not token.ready():
            session.close("taken over while its offer was answered")
            raise RtcError(409, "another publisher took the stream while this offer was answered")
        session.start(token)
        client_event(log, "publish", session.cid, req.ip, key, param=sreq.masked_param(), protocol="rtc",
                     media=",".join(kinds))
        return self._created(session, sdp)


def _text(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, f"{reason}\n".encode(), headers=[*(headers or []), *CORS])


def _key_text(req: Request) -> str:
    return f"/{req.query.get('app', 'live')}/{req.query.get('stream', 'livestream')}"


def _checked_offer(req: Request, *, sending: bool) -> tuple[Offer, list[str]]:
    """The request's SDP offer, checked (an RtcError 400 with the reason otherwise), and its media kinds."""
    try:
        offer = check_offer(req.body, sending=sending)
    except OfferError as exc:
        raise RtcError(400, str(exc)) from None
    kinds = [m.kind for m in offer.media if m.kind in ("audio", "video") and m.port]
    if kinds.count("audio") > 1 or kinds.count("video") > 1:
        raise RtcError(400, "one audio and one video section at most")
    return offer, kinds
