"""An HTTP live viewer (HTTP-FLV, WS-FLV, HTTP-TS) as the hub sees it: the owner of a hub :class:`Viewer`, and a
client in the hub's registry (see :mod:`livesrv.hub.clients`)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from livesrv import stats
from livesrv.hub.clients import VIEWER, HookContext
from livesrv.hub.viewer import Viewer
from livesrv.log import client_event

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.hub.hub import Hub
    from livesrv.hub.stream import Stream
    from livesrv.servers.http import HTTPConnection


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
