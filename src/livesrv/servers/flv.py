"""HTTP-FLV and WebSocket-FLV viewers (SRS ``http_remux``): ``GET /app/stream.flv``, with or without Upgrade.

A request is resolved against the hub when it arrives: nothing is mounted, so nothing can stay mounted after
its stream is gone (SRS #4140 "pattern duplicated"). The response is a live body with no length; each viewer
is a :class:`~livesrv.hub.viewer.Viewer` whose transport is the connection's, so the fan-out writes the shared
batch bytes straight to the socket.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request as WSRequest
from wsproto.utilities import RemoteProtocolError

from livesrv import stats
from livesrv.codec import flv
from livesrv.access import gate_http_viewer
from livesrv.hooks.payloads import HookContext
from livesrv.hub.keys import StreamRequest, parse_http_path, request_problem
from livesrv.hub.stream import Stream
from livesrv.hub.viewer import Viewer
from livesrv.log import client_event
from livesrv.media.formats import FLV, WS_FLV, ws_binary_frame_header
from livesrv.servers.common import new_client_id, stream_settings
from livesrv.servers.http import HTTPConnection, Request, Response

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.flv")

CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Expose-Headers", "Server, Content-Type"),
]
FLV_HEAD = flv.file_header(True, True)


def resolve(config: Config, req: Request, suffix: str) -> StreamRequest | None:
    """The stream a live URL names, or None when the path is not one or its vhost does not serve it."""
    sreq = parse_http_path(req.headers.get("host"), req.target, suffix, config.vhosts.keys())
    if sreq is None:
        return None
    vhost = config.vhost(sreq.key.vhost)
    if not vhost.enabled or not vhost.http_remux.enabled:
        return None
    return sreq


def refuse_bad_name(req: Request, sreq: StreamRequest, protocol: str) -> Response | None:
    """400 with the reason, logged once, when the URL names no acceptable stream (the name rule of
    :func:`~livesrv.hub.keys.request_problem`); None when its names are fine. Nothing is created for it."""
    problem = request_problem(sreq)
    if problem is None:
        return None
    client_event(log, "play-rejected", new_client_id(), req.ip, sreq.key, problem, logging.WARNING, protocol=protocol)
    return Response(400, f"bad request: {problem}\n".encode(), headers=CORS)


class FlvViewerOwner:
    """The hub's view of an HTTP-FLV / WS-FLV connection."""

    __slots__ = ("conn", "viewer", "ws", "reason")

    def __init__(self, conn: HTTPConnection, ws: WSConnection | None) -> None:
        self.conn = conn
        self.ws = ws
        self.viewer: Viewer | None = None
        self.reason = "viewer closed"  # why the connection ends, for the one log line

    def publisher_left(self, stream: Stream) -> None:
        pass  # the body goes on; the viewer gets the next publisher's media or is closed after the grace

    def publisher_arrived(self, stream: Stream) -> None:
        pass

    def close_viewer(self, reason: str) -> None:
        conn = self.conn
        if conn.closed:
            return
        self.reason = reason
        if self.ws is not None:
            try:
                conn.write(self.ws.send(CloseConnection(code=1000, reason=reason[:100])))
            except Exception:  # noqa: BLE001 - a close frame is a courtesy
                pass
        conn.close()  # HTTP-FLV: end of the body (Connection: close)

    def data_received(self, data: bytes) -> None:
        """Frames from a WebSocket viewer: answer pings, close on close. Anything else is ignored."""
        ws = self.ws
        if ws is None:
            return
        try:
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, Ping):
                    self.conn.write(ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    try:
                        self.conn.write(ws.send(ev.response()))
                    except Exception:  # noqa: BLE001
                        pass
                    self.conn.close()
                    return
        except RemoteProtocolError as exc:
            client_event(log, "close", self.viewer.cid if self.viewer else "?", self.conn.ip, reason=f"websocket: {exc}")
            self.conn.close(abort=True)


async def serve_flv(config: Config, hub: Hub, access: Access, req: Request, conn: HTTPConnection) -> Response | None:
    sreq = resolve(config, req, ".flv")
    if sreq is None:
        return Response(404, b"not found\n", headers=CORS)
    is_ws = req.headers.get("upgrade", "").lower() == "websocket"
    protocol = "ws-flv" if is_ws else "flv"
    refused = refuse_bad_name(req, sreq, protocol)
    if refused is not None:
        return refused
    if req.method == "OPTIONS":
        return Response(200, b"", headers=CORS)
    if req.method == "HEAD":
        # Answered without attaching a viewer (SRS crashed on this, #4140's title).
        return Response(200, b"", "video/x-flv", [*CORS, ("Cache-Control", "no-cache")])
    if req.method != "GET":
        return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
    key = sreq.key
    cid = new_client_id()
    owner = FlvViewerOwner(conn, None)
    viewer = owner.viewer = Viewer(cid, conn.ip, protocol, WS_FLV if is_ws else FLV, conn.transport, owner, sreq.param)
    viewer.limit = config.rtmp_limits.max_write_buffer
    ctx, refused = await gate_http_viewer(access, hub, viewer, sreq, req.headers.get("referer", ""),
                                          stream_settings(config, key.vhost))
    if refused is not None:
        client_event(log, "play-rejected", cid, conn.ip, key, refused, logging.WARNING, protocol=protocol)
        return Response(403, f"forbidden: {refused}\n".encode(), headers=CORS)
    if conn.closed:  # it left while its hook was awaited
        hub.detach(viewer)
        return None
    ws: WSConnection | None = None
    if is_ws:
        ws = WSConnection(ConnectionType.SERVER)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()]
        try:
            ws.initiate_upgrade_connection(headers, req.target)
            ev = next(ws.events())
            if not isinstance(ev, WSRequest):
                raise RemoteProtocolError("not a websocket request", event_hint=None)
            conn.take_over(ws.send(AcceptConnection()))
        except RemoteProtocolError as exc:
            hub.detach(viewer)
            return Response(400, f"bad websocket request: {exc}\n".encode())
        owner.ws = ws
        conn.write(ws_binary_frame_header(len(FLV_HEAD)) + FLV_HEAD)
    else:
        conn.start_stream(200, [("Content-Type", "video/x-flv"), ("Cache-Control", "no-cache"), *CORS])
        conn.write(FLV_HEAD)
    conn.attach_viewer(viewer, owner)
    client_event(log, "play", cid, conn.ip, key, param=sreq.masked_param(), protocol=protocol)
    conn.on_close.append(lambda: _closed(hub, access, viewer, owner, ctx))
    if conn.write_paused:
        viewer.pause(time.monotonic())
    hub.admit(viewer)
    return None


def _closed(hub: Hub, access: Access, viewer: Viewer, owner: FlvViewerOwner, ctx: HookContext) -> None:
    client_event(log, "close", viewer.cid, viewer.ip, viewer.stream.key if viewer.stream else "", owner.reason,
                 protocol=viewer.protocol, send_bytes=viewer.send_bytes)
    stats.connection_closed(viewer.protocol, 0, viewer.send_bytes, "stopped reading" in owner.reason)
    hub.detach(viewer)
    access.stop(ctx)
