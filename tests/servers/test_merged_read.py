"""Merged read (SRS's ``publish { mr on; }``, livesrv's default): a live publisher's socket is read at most every
mr_latency ms and each read goes to the viewers as one batch. Fewer reads, the same media, and never a cap on a
publisher's rate."""

from __future__ import annotations

import time

import pytest

from livesrv.codec import flv
from livesrv.servers.rtmp import RTMPConnection
from tests.helpers import wait_until
from tests.servers.rtmp_client import AVC_SEQUENCE_HEADER, RTMPClient, inter_frame, keyframe


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every read of every RTMP connection of the in-process server."""
    sizes: list[int] = []
    original = RTMPConnection.data_received

    def counting(self: RTMPConnection, data: bytes) -> None:
        sizes.append(len(data))
        original(self, data)

    monkeypatch.setattr(RTMPConnection, "data_received", counting)
    return sizes


@pytest.mark.parametrize("mr", ["on", "off"])
async def test_a_paced_publisher_is_read_in_few_reads_and_every_frame_arrives(make_server, reads: list[int],  # type: ignore[no-untyped-def]
                                                                              mr: str) -> None:
    app = await make_server(vhost=f"publish {{ mr {mr}; mr_latency 300; }}")
    port = app.port("rtmp")
    pub, player = await RTMPClient.open(port), await RTMPClient.open(port)
    try:
        await pub.publish("test", port=port)
        pub.send_media(flv.VIDEO, 0, AVC_SEQUENCE_HEADER)
        pub.send_media(flv.VIDEO, 0, keyframe(0))
        await player.play("test", port=port)
        await wait_until(lambda: len(player.av()) >= 2, 10, "the player's first frames")
        before = len(reads)
        start = time.monotonic()
        for i in range(1, 49):  # 48 frames, one every 25 ms: 1.2 s
            pub.send_media(flv.VIDEO, i * 25, keyframe(i) if i % 24 == 0 else inter_frame(i))
            await pub.drain()
            await wait_until(lambda i=i: time.monotonic() - start >= i * 0.025, 5, "the next frame's time")
        await wait_until(lambda: len(player.av()) >= 50, 10, "every frame at the player")
        n = len(reads) - before
        frames = [m.payload[5:9] for m in player.av()[1:]]
        assert frames == [keyframe(i)[5:9] for i in range(49)]  # all of them, in order
        if mr == "on":
            assert n <= 12, n  # about one read per 300 ms (48 without merging)
        else:
            assert n >= 30, n
    finally:
        await pub.close()
        await player.close()


async def test_merged_reads_never_cap_a_publishers_rate(make_server, reads: list[int]) -> None:  # type: ignore[no-untyped-def]
    """12 MB sent as fast as possible arrive in about the time the socket takes, not in 12 MB / 256 KB pauses."""
    app = await make_server(vhost="publish { mr on; mr_latency 350; }")
    port = app.port("rtmp")
    pub = await RTMPClient.open(port)
    try:
        await pub.publish("test", port=port)
        pub.send_media(flv.VIDEO, 0, AVC_SEQUENCE_HEADER)
        start = time.monotonic()
        for i in range(100):
            pub.send_media(flv.VIDEO, i * 40, keyframe(i, size=120_000))
            await pub.drain()
        stream = next(iter(app.hub.streams.values()))
        await wait_until(lambda: stream.stats.video_frames >= 100, 20, "every frame at the server")
        elapsed = time.monotonic() - start
        # Pausing 350 ms after every read would take 12 MB / 256 KB x 0.35 s > 16 s.
        assert elapsed < 6, elapsed
        assert max(reads) > 128 * 1024
    finally:
        await pub.close()


async def test_publishers_paused_together_resume_together_on_the_grid(make_server) -> None:  # type: ignore[no-untyped-def]
    """Merged reads resume on a grid: publishers due at the same point are resumed by one timer (one wake-up of
    the loop for all of them), never before mr_latency minus half a grid step."""
    import asyncio

    from livesrv.servers.rtmp import MERGED_READ_GRID

    app = await make_server()
    server = app.rtmp
    loop = asyncio.get_running_loop()
    resumed: list[tuple[int, float]] = []

    class Conn:
        def __init__(self, i: int) -> None:
            self.i = i

        def merged_read_done(self) -> None:
            resumed.append((self.i, loop.time()))

    start = loop.time()
    for i in range(5):  # paused in the same iteration of the loop: due at the same point of the grid
        server.resume_later(Conn(i), 0.3)  # type: ignore[arg-type]
    server.resume_later(Conn(9), 0.01)  # type: ignore[arg-type]  # below the grid: a timer of its own
    await wait_until(lambda: len(resumed) == 6, 5, "every connection resumed")
    assert resumed[0][0] == 9
    batch = resumed[1:]
    assert sorted(i for i, _ in batch) == list(range(5))
    assert len({t for _, t in batch}) == 1  # one timer's callback
    assert batch[0][1] - start >= 0.3 - MERGED_READ_GRID / 2 - 0.002
    assert not server._resumes  # nothing left behind
