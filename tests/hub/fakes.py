"""In-memory clients for hub tests: real Stream/Hub/Format code, a transport that keeps what it is sent.

Not a stand-in for the media path (the e2e tests use real ffmpeg and sockets): these exist so the hub's
lifecycle can be driven through thousands of interleavings per second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from livesrv.codec import flv
from livesrv.hub.clients import HookContext
from livesrv.hub.hub import Hub, PublishToken
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import Stream, StreamSettings, Viewer
from livesrv.media.formats import FLV
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket

_ids = itertools.count(1)

AVC_HEADER = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04\x67\x64\x00\x1f\x01\x00\x04\x68\xee\x3c\x80"
AAC_HEADER = b"\xaf\x00\x12\x10"


def video(ts: int, key: bool, tag: bytes) -> MediaPacket:
    return MediaPacket.from_payload(VIDEO, ts, (b"\x17\x01" if key else b"\x27\x01") + b"\x00\x00\x00" + tag)


def audio(ts: int, tag: bytes) -> MediaPacket:
    return MediaPacket.from_payload(AUDIO, ts, b"\xaf\x01" + tag)


class RecordingTransport:
    """Parses what the fan-out writes as the FLV a real viewer would get."""

    def __init__(self) -> None:
        self.decoder = flv.FLVDecoder(expect_header=False)
        self.tags: list[flv.FLVTag] = []
        self.writes: list[bytes] = []
        self.keep_writes = False
        self.nbytes = 0

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.nbytes += len(data)
        if self.keep_writes:
            self.writes.append(data)
        for ev in self.decoder.feed(data):
            if isinstance(ev, flv.FLVTag):
                self.tags.append(ev)

    def media_tags(self) -> list[flv.FLVTag]:
        return [t for t in self.tags if t.tag_type in (flv.AUDIO, flv.VIDEO)]


@dataclass(eq=False)
class FakePublisher:
    cid: str = field(default_factory=lambda: f"pub{next(_ids)}")
    ip: str = "127.0.0.1"
    token: PublishToken | None = None
    kicked: list[str] = field(default_factory=list)

    @property
    def context(self) -> HookContext:
        return HookContext(self.cid, self.ip, "", "")

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)
        if self.token is not None:
            self.token.release(reason)


class FakeViewerOwner:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.viewer: Viewer | None = None
        self.closed: list[str] = []
        self.left = 0
        self.arrived = 0

    def publisher_left(self, stream: Stream) -> None:
        self.left += 1

    def publisher_arrived(self, stream: Stream) -> None:
        self.arrived += 1

    def close_viewer(self, reason: str) -> None:
        self.closed.append(reason)
        if self.viewer is not None:
            self.hub.detach(self.viewer)


def make_viewer(hub: Hub, transport: RecordingTransport | None = None) -> tuple[Viewer, FakeViewerOwner, RecordingTransport]:
    owner = FakeViewerOwner(hub)
    t = transport or RecordingTransport()
    v = Viewer(f"v{next(_ids)}", "127.0.0.1", "flv", FLV, t, owner)
    owner.viewer = v
    return v, owner, t


KEY = StreamKey("__defaultVhost__", "live", "test")
PER_MESSAGE = StreamSettings(flush_interval=0.0)
