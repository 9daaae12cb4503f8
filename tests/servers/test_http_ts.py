"""HTTP-TS on the hub's fan-out: one muxer per stream, the same bytes for every viewer in step, joiners and
viewers that fell behind restarting at a keyframe (audio-only: at any audio packet, after the program)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from livesrv.access import Access, default_identity
from livesrv.codec import mpegts
from livesrv.hub.clients import HookContext
from livesrv.hub.hub import Hub, PublishToken
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import StreamSettings, Viewer
from livesrv.media.formats import TS
from livesrv.media.packet import MediaPacket
from livesrv.servers.http import Request
from livesrv.servers.ts import TS_EXTRA, TsViewerOwner, join_output, leave_output, serve_ts
from tests.codec.test_mpegts import check_continuity, read_ts
from tests.conftest import server_config
from tests.helpers import wait_until
from tests.remux.test_hls_segmenter import av_stream

KEY = StreamKey("__defaultVhost__", "live", "test")
SETTINGS = StreamSettings(flush_interval=0)


class Pub:
    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.ip = "127.0.0.1"
        self.context = HookContext(cid, self.ip, KEY.vhost, KEY.app, KEY.stream)
        self.kicked: str | None = None

    def kick(self, reason: str) -> None:
        self.kicked = reason


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeConn:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.closed = False
        self.ip = "10.0.0.2"
        self.write_paused = False
        self.on_close: list[Any] = []
        self.head: tuple[int, list[tuple[str, str]]] | None = None

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def start_stream(self, status: int, headers: Any) -> None:
        self.head = (status, list(headers))

    def attach_viewer(self, viewer: Any, owner: Any) -> None:
        self.viewer = viewer

    def close(self) -> None:
        self.closed = True
        for cb in self.on_close:
            cb()


def publish(hub: Hub, cid: str) -> PublishToken:
    token = hub.begin_publish(KEY, Pub(cid), SETTINGS)
    assert token.ready()
    return token


def media(seconds: float, start_ms: int = 0, video: bool = True) -> list[MediaPacket]:
    return [MediaPacket.from_payload(p.kind, p.timestamp, p.payload)
            for p in av_stream(seconds, start_ms=start_ms, video=video)]


def viewer(hub: Hub, cid: str, limit: int = 1_000_000) -> tuple[Viewer, FakeTransport]:
    """An HTTP-TS viewer as serve_ts makes one, on a fake transport."""
    conn = FakeConn()
    owner = TsViewerOwner(conn)  # type: ignore[arg-type]
    v = owner.viewer = Viewer(cid, "127.0.0.1", "ts", TS, conn.transport, owner)
    v.limit = limit
    stream = hub.attach(KEY, v, SETTINGS)
    owner.output = join_output(stream)
    v.starting = owner.starting
    hub.admit(v)
    return v, conn.transport


def first_video_pes_is_random_access(data: bytes) -> bool:
    video = read_ts(bytes(data)).pes_of(mpegts.VIDEO_PID)
    return bool(video) and video[0].random_access


async def test_joiners_start_with_the_program_and_a_keyframe_and_slow_viewers_skip() -> None:
    hub = Hub()
    early, early_t = viewer(hub, "early")
    slow, slow_t = viewer(hub, "slow", limit=10_000)
    token = publish(hub, "pub1")
    pkts = media(6)
    late_t = FakeTransport()
    for i, pkt in enumerate(pkts):
        if i == len(pkts) // 4:
            late, late_t = viewer(hub, "late")  # mid-GOP: the GOP burst, from its keyframe
            assert bytes(late_t.data[:3]) == b"\x47\x40\x00"  # PAT first
        if i == len(pkts) // 2:
            slow_t.buffered = 20_000  # its socket stopped draining
            skipped_at = slow.dropped
        if i == 3 * len(pkts) // 4:
            assert slow.dropped > skipped_at and slow.stalled_since is not None
            slow_t.buffered = 0
        assert token.stream.ingest(token.generation, pkt)
    for v, t in ((early, early_t), (late, late_t), (slow, slow_t)):
        data = bytes(t.data)
        ts = read_ts(data)
        assert ts.pat and ts.pmt and ts.pmt[-1]["streams"] == [(0x1B, mpegts.VIDEO_PID), (0x0F, mpegts.AUDIO_PID)]
        assert first_video_pes_is_random_access(data), v
        assert v.send_bytes == len(data)
    check_continuity(bytes(early_t.data))
    assert slow.stalled_since is None
    assert len(read_ts(bytes(slow_t.data)).pes_of(mpegts.VIDEO_PID)) < len(read_ts(bytes(early_t.data)).pes_of(mpegts.VIDEO_PID))
    # Everyone in step receives the very same bytes: after the slow one rejoined, their tails match.
    tail = bytes(early_t.data[-188 * 20 :])
    assert bytes(late_t.data).endswith(tail) and bytes(slow_t.data).endswith(tail)

    # A new publisher (takeover): everyone restarts at its first keyframe.
    mark = len(early_t.data)
    token2 = publish(hub, "pub2")
    for pkt in media(2):
        assert token2.stream.ingest(token2.generation, pkt)
    assert first_video_pes_is_random_access(bytes(early_t.data[mark:]))


def test_an_output_created_mid_stream_knows_the_codecs_from_the_gop_cache() -> None:
    hub = Hub()
    token = publish(hub, "pub1")
    for pkt in media(1.5):
        token.stream.ingest(token.generation, pkt)
    _, t = viewer(hub, "v")
    ts = read_ts(bytes(t.data))
    assert ts.pmt and ts.pmt[0]["streams"] == [(0x1B, mpegts.VIDEO_PID), (0x0F, mpegts.AUDIO_PID)]
    assert first_video_pes_is_random_access(bytes(t.data))


def test_pure_audio_viewers_join_at_any_audio_packet_with_the_program() -> None:
    hub = Hub()
    first, first_t = viewer(hub, "a")
    token = publish(hub, "pub1")
    pkts = media(4, video=False)
    second_t = FakeTransport()
    for i, pkt in enumerate(pkts):
        if i == len(pkts) // 2:
            _, second_t = viewer(hub, "b")
        token.stream.ingest(token.generation, pkt)
    for t in (first_t, second_t):
        ts = read_ts(bytes(t.data))
        assert ts.packets[0].pid == 0 and ts.pmt[0]["streams"] == [(0x0F, mpegts.AUDIO_PID)]
        assert ts.pes_of(mpegts.AUDIO_PID)
    assert len(read_ts(bytes(first_t.data)).pat) >= 3  # repeated about every second


def test_muxing_stops_with_the_last_viewer() -> None:
    hub = Hub()
    token = publish(hub, "pub1")
    stream = token.stream
    output = join_output(stream)
    output2 = join_output(stream)
    assert output is output2 and stream.outputs == [output]
    leave_output(stream, output)
    assert stream.outputs == [output]
    leave_output(stream, output)
    assert stream.outputs == [] and TS_EXTRA not in stream.extra


@pytest.fixture
async def deps(tmp_path: Path) -> Any:
    config = server_config()
    hub = Hub()
    access = Access(lambda: config, default_identity("vid-t", "t"))
    yield config, hub, access
    await hub.close()
    await access.aclose()


async def test_http_ts_viewer_waits_for_the_publisher_and_leaves_nothing_behind(deps: Any) -> None:
    config, hub, access = deps
    conn = FakeConn()
    req = Request("GET", "/live/test.ts", "/live/test.ts", {}, {"host": "h:8080"}, "10.0.0.2")
    assert await serve_ts(config, hub, access, req, conn) is None  # type: ignore[arg-type]
    assert conn.head is not None and conn.head[0] == 200 and ("Content-Type", "video/mp2t") in conn.head[1]
    stream = hub.get(KEY)
    assert stream is not None and not stream.live and [v.protocol for v in stream.viewers.values()] == ["ts"]
    (client,) = hub.clients.values()
    assert client.protocol == "ts" and client.context.tc_url == "http://h:8080/live"
    output = stream.extra[TS_EXTRA]
    assert stream.outputs == [output]
    token = publish(hub, "pub1")
    assert token.stream is stream
    for pkt in media(2.5):
        stream.ingest(token.generation, pkt)
    data = bytes(conn.transport.data)
    assert read_ts(data).pat and first_video_pes_is_random_access(data)
    check_continuity(data)
    conn.close()
    assert not stream.viewers and TS_EXTRA not in stream.extra and stream.outputs == [] and not hub.clients
    token.release("left")
    await wait_until(lambda: hub.get(KEY) is None, 10, "the stream to be collected")
