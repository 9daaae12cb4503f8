"""The registry of live streams: the single owner of every stream, its publisher and its viewers.

Every method here is a plain ``def``: checking a stream's state and changing it happen in one synchronous
step, so no other task can run in between (the hazard behind SRS's "stream busy forever" bugs is an await
between the two). Protocol servers only call these methods and implement :class:`Subscriber`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from livesrv.hub.keys import StreamKey
from livesrv.media.gop import GopCache
from livesrv.media.packet import MediaPacket

log = logging.getLogger("livesrv.hub")


class StreamBusy(Exception):
    """Another publisher holds the stream."""


class Subscriber(Protocol):
    """A viewer as the hub sees it; protocol servers implement it."""

    cid: str

    def send_packets(self, packets: Sequence[MediaPacket]) -> None:
        """Queue packets for the viewer. Must not block; a slow viewer drops or is closed by its own server."""

    def publisher_left(self, stream: Stream) -> None:
        """The stream lost its publisher; the viewer stays attached and may see a new one."""

    def publisher_arrived(self, stream: Stream) -> None:
        """A publisher started (or restarted) the stream."""


class Stream:
    """One (vhost, app, stream) with its current publisher, viewers and GOP cache."""

    __slots__ = ("key", "publisher", "generation", "gop", "subscribers", "metadata", "param")

    def __init__(self, key: StreamKey, gop_cache: bool = True, gop_max_frames: int = 2500) -> None:
        self.key = key
        self.publisher: str | None = None  # client id of the accepted publisher
        self.generation = 0  # bumped on each accepted publish; stale work carries an older number
        self.gop = GopCache(gop_cache, gop_max_frames)
        self.subscribers: dict[str, Subscriber] = {}
        self.metadata: dict[str, object] = {}
        self.param = ""

    @property
    def live(self) -> bool:
        return self.publisher is not None

    def feed(self, publisher: str, generation: int, pkt: MediaPacket) -> bool:
        """Fan one packet out to every viewer. Returns False if ``publisher`` is no longer this stream's."""
        if publisher != self.publisher or generation != self.generation:
            return False
        self.gop.add(pkt)
        if self.subscribers:
            one = (pkt,)
            for sub in tuple(self.subscribers.values()):
                sub.send_packets(one)
        return True

    def set_metadata(self, publisher: str, generation: int, metadata: dict[str, object], pkt: MediaPacket) -> bool:
        if publisher != self.publisher or generation != self.generation:
            return False
        self.metadata = metadata
        self.gop.set_metadata(pkt)
        if self.subscribers:
            one = (pkt,)
            for sub in tuple(self.subscribers.values()):
                sub.send_packets(one)
        return True


class Hub:
    """All streams of the process, keyed by :class:`StreamKey`."""

    def __init__(self) -> None:
        self.streams: dict[StreamKey, Stream] = {}

    def get(self, key: StreamKey) -> Stream | None:
        return self.streams.get(key)

    def _stream(self, key: StreamKey, gop_cache: bool, gop_max_frames: int) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(key, gop_cache, gop_max_frames)
        return stream

    def acquire_publish(
        self, key: StreamKey, cid: str, param: str = "", *, gop_cache: bool = True, gop_max_frames: int = 2500
    ) -> tuple[Stream, int]:
        """Make ``cid`` the stream's publisher, or raise :class:`StreamBusy`. Returns the stream and generation."""
        stream = self._stream(key, gop_cache, gop_max_frames)
        if stream.publisher is not None:
            raise StreamBusy(f"stream {key} is already published by client {stream.publisher}")
        stream.publisher = cid
        stream.generation += 1
        stream.param = param
        stream.gop = GopCache(gop_cache, gop_max_frames)
        stream.metadata = {}
        for sub in tuple(stream.subscribers.values()):
            sub.publisher_arrived(stream)
        return stream, stream.generation

    def release_publish(self, stream: Stream, cid: str, generation: int) -> bool:
        """End ``cid``'s publish. A stale call (another publisher or generation since) changes nothing."""
        if stream.publisher != cid or stream.generation != generation:
            return False
        stream.publisher = None
        stream.gop.clear()
        for sub in tuple(stream.subscribers.values()):
            sub.publisher_left(stream)
        self._collect(stream)
        return True

    def subscribe(self, key: StreamKey, sub: Subscriber, *, gop_cache: bool = True, gop_max_frames: int = 2500) -> Stream:
        """Attach a viewer; it gets the start burst at once when the stream is live, else waits for a publisher."""
        stream = self._stream(key, gop_cache, gop_max_frames)
        stream.subscribers[sub.cid] = sub
        if stream.live:
            start = stream.gop.start_packets()
            if start:
                sub.send_packets(start)
        return stream

    def unsubscribe(self, stream: Stream, sub: Subscriber) -> None:
        if stream.subscribers.get(sub.cid) is sub:
            del stream.subscribers[sub.cid]
        self._collect(stream)

    def _collect(self, stream: Stream) -> None:
        """Forget a stream nobody holds: no publisher and no viewer."""
        if stream.publisher is None and not stream.subscribers and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
