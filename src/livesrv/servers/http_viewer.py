"""An HTTP live viewer (HTTP-FLV, WS-FLV, HTTP-TS) as the hub sees it: the owner of a hub :class:`Viewer`, and a
client in the hub's registry (see :mod:`livesrv.hub.clients`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from livesrv import stats
from livesrv.access import gate_http_viewer
from livesrv.hub.clients import VIEWER, HookContext
from livesrv.hub.keys import StreamRequest
from livesrv.hub.stream import Viewer
from livesrv.log import client_event
from livesrv.media.formats import Format
from livesrv.hub.clients import new_client_id
from livesrv.hub.settings import stream_settings
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.tls import viewer_transport

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub
    from livesrv.hub.stream import Stream

CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Expose-Headers", "Server, Content-Type"),
]


class HttpViewerOwner:
    """Closing the connection is how a viewer ends; :meth:`closed` releases what it holds, exactly once."""

    kind = VIEWER

    def __init__(self, conn: HTTPConnection) -> None:
        self.conn = conn
        self.viewer: Viewer | None = None
        self.reason = "viewer closed"  # why the connection ends, for the one log line
        self.context = HookContext("", "", "", "")  # until it starts
        self.started = 0.0

    # ------------------------------------------------------------------------------ the hub's client

    @property
    def cid(self) -> str:
        return self.viewer.cid if self.viewer is not None else ""

    @property
    def protocol(self) -> str:
        return self.viewer.protocol if self.viewer is not None else "http"

    @property
    def ip(self) -> str:
        return self.conn.ip

    @property
    def recv_bytes(self) -> int:
        return 0

    @property
    def send_bytes(self) -> int:
        return self.viewer.send_bytes if self.viewer is not None else 0

    def kick(self, reason: str) -> None:
        self.close_viewer(reason)

    # ------------------------------------------------------------------------------ the viewer's owner

    def publisher_left(self, stream: Stream) -> None:
        pass  # the body goes on; the viewer gets the next publisher's media or is closed after the grace

    def publisher_arrived(self, stream: Stream) -> None:
        pass

    def close_viewer(self, reason: str) -> None:
        if not self.conn.closed:
            self.reason = reason
            self.conn.close()  # end of the body (Connection: close)

    def data_received(self, data: bytes) -> None:
        pass  # an HTTP viewer has nothing more to say

    # ------------------------------------------------------------------------------ life

    def start(self, hub: Hub, access: Access, ctx: HookContext, log: logging.Logger) -> None:
        """Its hooks accepted: registered with the hub, released when the connection closes."""
        assert self.viewer is not None
        self.context = ctx
        self.started = time.time()
        hub.register(self)
        self.conn.on_close.append(lambda: self.closed(hub, access, log))

    def closed(self, hub: Hub, access: Access, log: logging.Logger) -> None:
        viewer = self.viewer
        assert viewer is not None
        client_event(log, "close", viewer.cid, viewer.ip, viewer.stream.key if viewer.stream else "", self.reason,
                     protocol=viewer.protocol, send_bytes=viewer.send_bytes)
        stats.connection_closed(viewer.protocol, 0, viewer.send_bytes, "stopped reading" in self.reason)
        hub.unregister(self)
        hub.detach(viewer)
        access.stop(self.context)


def not_a_viewer(req: Request, content_type: str) -> Response | None:
    """The answer to a request on a live URL that attaches no viewer (OPTIONS, HEAD, a wrong method), or None
    for a GET. HEAD answers without attaching anything (SRS crashed on this, #4140's title)."""
    if req.method == "OPTIONS":
        return Response(200, b"", headers=CORS)
    if req.method == "HEAD":
        return Response(200, b"", content_type, [*CORS, ("Cache-Control", "no-cache")])
    if req.method != "GET":
        return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
    return None


async def admit_http_viewer(
    config: Config, hub: Hub, access: Access, req: Request, conn: HTTPConnection, sreq: StreamRequest,
    owner: HttpViewerOwner, protocol: str, fmt: Format, open_body: Callable[[Viewer], Response | None],
    log: logging.Logger,
) -> Response | None:
    """What every HTTP live viewer goes through: registered with the hub before its hooks are awaited, refused
    (403) or accepted; ``open_body`` then sends the response head (or the WebSocket 101) and may refuse with a
    Response of its own; the viewer is listed, and gets media from the hub's fan-out."""
    key = sreq.key
    cid = new_client_id()
    viewer = owner.viewer = Viewer(cid, conn.ip, protocol, fmt, viewer_transport(conn.transport), owner, sreq.param)
    viewer.limit = config.rtmp_limits.max_write_buffer
    ctx, refused = await gate_http_viewer(access, hub, viewer, sreq, req.headers.get("referer", ""),
                                          stream_settings(config, key.vhost))
    if refused is not None:
        client_event(log, "play-rejected", cid, conn.ip, key, refused, logging.WARNING, protocol=protocol)
        return Response(403, f"forbidden: {refused}\n".encode(), headers=CORS)
    if conn.closed:  # it left while its hook was awaited
        hub.detach(viewer)
        return None
    answer = open_body(viewer)
    if answer is not None:
        hub.detach(viewer)
        return answer
    conn.attach_viewer(viewer, owner)
    client_event(log, "play", cid, conn.ip, key, param=sreq.masked_param(), protocol=protocol)
    owner.start(hub, access, ctx, log)
    if conn.write_paused:
        viewer.pause(time.monotonic())
    hub.admit(viewer)
    return None
