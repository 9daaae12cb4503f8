"""What the server counts, for the HTTP API and Prometheus: totals of closed connections, and the live clients.

Totals that must outlive a connection (bytes, connections, errors) are added once, when the connection closes
(:func:`connection_closed`, called from each protocol's close path); the share of connections still open is
read from the live objects at the moment someone asks (:func:`traffic`). Nothing here runs per packet.

The closed totals are process-wide (one server per process in production; tests may run several apps, which
then share them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livesrv.app import App
    from livesrv.hub.stream import Stream


@dataclass(slots=True)
class Totals:
    """Counters of one protocol ("rtmp", "flv", "ws-flv", ...)."""

    connections: int = 0
    errors: int = 0
    recv_bytes: int = 0
    send_bytes: int = 0


CLOSED: dict[str, Totals] = {}
"""Totals of the connections that have closed, by protocol."""


def connection_closed(protocol: str, recv_bytes: int, send_bytes: int, error: bool = False) -> None:
    """Called exactly once per connection, when it closes."""
    t = CLOSED.get(protocol)
    if t is None:
        t = CLOSED[protocol] = Totals()
    t.connections += 1
    t.recv_bytes += recv_bytes
    t.send_bytes += send_bytes
    if error:
        t.errors += 1


@dataclass(slots=True)
class LiveClient:
    """A connection that publishes or plays a stream, whatever its protocol (SRS's "client")."""

    cid: str
    protocol: str  # "rtmp", "flv", "ws-flv", ...
    publish: bool
    ip: str
    stream: Stream | None
    tc_url: str
    created: float  # time.monotonic() when it connected (RTMP) or attached (HTTP viewers)
    recv_bytes: int
    send_bytes: int
    handle: Any  # the RTMPConnection, or the hub Viewer of an HTTP viewer

    @property
    def type(self) -> str:
        """SRS's client type string."""
        if self.publish:
            return "fmle-publish"  # what SRS reports for OBS and FFmpeg (FCPublish)
        if self.protocol in ("flv", "ws-flv"):
            return "flv-play"
        return f"{self.protocol}-play"

    def kick(self, reason: str) -> None:
        """Close this one client at once; every other client goes on."""
        if self.protocol == "rtmp":
            self.handle.kick(reason)
        else:
            self.handle.owner.close_viewer(reason)


def live_clients(app: App) -> Iterator[LiveClient]:
    """Every publisher and viewer now connected. RTMP connections that neither publish nor play are not
    clients yet (as in SRS), but they are counted by :func:`traffic`."""
    for conn in tuple(app.rtmp.connections.values()):
        token = conn.pub_token
        viewer = conn.viewer
        if token is not None:
            stream: Stream | None = token.stream
        elif viewer is not None:
            stream = viewer.stream
        else:
            continue
        yield LiveClient(
            conn.cid, "rtmp", token is not None, conn.ip, stream, conn.session.tc_url, conn.created,
            conn.recv_bytes, conn.send_bytes + (viewer.send_bytes if viewer is not None else 0), conn,
        )
    for stream in tuple(app.hub.streams.values()):
        for v in tuple(stream.viewers.values()):
            if v.protocol == "rtmp":
                continue  # listed with its connection above
            yield LiveClient(v.cid, v.protocol, False, v.ip, stream, "", v.created, 0, v.send_bytes, v)


def traffic(app: App) -> dict[str, Totals]:
    """Totals by protocol over every connection so far: the closed ones plus those still open.

    A connection moves from "open" to "closed" in one synchronous step (its close path removes it from the
    live registries and calls :func:`connection_closed`), so these sums only grow — for protocols whose close
    path reports. Consumers that need strictly monotonic counters clamp (see ``servers/metrics.py``).
    """
    out = {name: Totals(t.connections, t.errors, t.recv_bytes, t.send_bytes) for name, t in CLOSED.items()}

    def add(protocol: str, recv: int, send: int) -> None:
        t = out.get(protocol)
        if t is None:
            t = out[protocol] = Totals()
        t.connections += 1
        t.recv_bytes += recv
        t.send_bytes += send

    for conn in tuple(app.rtmp.connections.values()):
        viewer = conn.viewer
        add("rtmp", conn.recv_bytes, conn.send_bytes + (viewer.send_bytes if viewer is not None else 0))
    for stream in tuple(app.hub.streams.values()):
        for v in tuple(stream.viewers.values()):
            if v.protocol != "rtmp":
                add(v.protocol, 0, v.send_bytes)
    return out
