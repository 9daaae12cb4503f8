"""A viewer as the hub sees it, whatever protocol it plays over.

The fan-out touches only these slots on its hot path (cursor, blocked, fmt, transport, send_bytes): one
object per viewer, no queue of message objects, no per-viewer task or timer. The protocol server that owns
the connection implements :class:`ViewerOwner` for the few notifications that are protocol-specific.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from livesrv.media.formats import Format

if TYPE_CHECKING:
    from livesrv.hub.stream import Stream

#: ``Viewer.cursor`` values below zero: the viewer is not in step with the shared batches.
NEED_KEYFRAME = -1  # rejoin at the next keyframe (joined without a GOP, fell behind, paused, new publisher)
PENDING = -2  # registered (it holds the stream) but not admitted yet: its on_play hook is being awaited


class ViewerOwner(Protocol):
    """The connection behind a viewer."""

    def publisher_left(self, stream: Stream) -> None:
        """The stream lost its publisher; the viewer stays attached for the grace period."""

    def publisher_arrived(self, stream: Stream) -> None:
        """A (new) publisher's media will follow."""

    def close_viewer(self, reason: str) -> None:
        """The hub wants this viewer gone (grace over, kicked, stream deleted, stalled): close the connection.
        The owner then calls :meth:`Hub.detach`, as on any other close."""


class Viewer:
    __slots__ = (
        "cid", "ip", "protocol", "fmt", "transport", "owner", "stream", "cursor", "blocked", "stalled_since",
        "wait_deadline", "send_bytes", "dropped", "created", "param", "detached", "limit", "starting",
    )

    def __init__(
        self, cid: str, ip: str, protocol: str, fmt: Format, transport: Any, owner: ViewerOwner, param: str = ""
    ) -> None:
        self.cid = cid
        self.ip = ip
        self.protocol = protocol  # "rtmp", "flv", "ws-flv", ...: for the API and logs
        self.fmt = fmt
        self.transport = transport  # anything with write(bytes); back-pressure sets ``blocked``
        self.owner = owner
        self.stream: Stream | None = None
        self.cursor = PENDING
        self.blocked = False  # the transport's buffer is above its high-water mark (pause_writing)
        self.stalled_since: float | None = None
        self.wait_deadline: float | None = None  # closed at this time unless a publisher is live
        self.send_bytes = 0
        self.dropped = 0  # packets skipped because the viewer was behind
        self.created = 0.0
        self.param = param
        self.detached = False
        # Bytes the transport may hold for this viewer: a batch that would go past it is skipped (the viewer
        # rejoins at a keyframe), so a stuck viewer costs at most this much memory.
        self.limit = 4 * 1024 * 1024
        # Called by the stream right before the viewer (re)starts at a random access point with fresh headers
        # (its first media, after a skip, with a new publisher). It may write a prelude and change ``fmt`` (the
        # FLV header, whose track flags can only be known once media is there); False: the owner closed it.
        self.starting: Callable[[Stream], bool] | None = None

    def write(self, data: bytes) -> None:
        self.send_bytes += len(data)
        self.transport.write(data)

    def pause(self, now: float) -> None:
        """The transport's buffer went over its limit: skip batches until it drains, then rejoin at a keyframe."""
        self.blocked = True
        if self.stalled_since is None:
            self.stalled_since = now

    def resume(self) -> None:
        self.blocked = False
        self.stalled_since = None

    def __repr__(self) -> str:
        return f"<Viewer {self.cid} {self.protocol} cursor={self.cursor}>"
