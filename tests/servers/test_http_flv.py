"""HTTP-FLV / WebSocket-FLV routes: resolved against the hub per request; HEAD, 404s, CORS, a stuck viewer."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from livesrv.codec import flv
from tests.helpers import FlvViewer, ffmpeg_publish_args, wait_until


def url(app, path: str) -> str:  # type: ignore[no-untyped-def]
    return f"http://127.0.0.1:{app.port('http')}{path}"


async def test_head_options_and_404s(make_server) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(extra="vhost off.example.com { http_remux { enabled off; } }")
    async with aiohttp.ClientSession() as s:
        async with s.head(url(app, "/live/test.flv")) as r:  # SRS crashed on this (#4140's title)
            assert r.status == 200 and r.headers["Content-Type"] == "video/x-flv"
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert not app.hub.streams  # HEAD attaches no viewer
        async with s.options(url(app, "/live/test.flv")) as r:
            assert r.status == 200 and "GET" in r.headers["Access-Control-Allow-Methods"]
        async with s.get(url(app, "/test.flv")) as r:  # no app
            assert r.status == 404
        async with s.get(url(app, "/live/test.flv?vhost=off.example.com")) as r:  # http_remux off there
            assert r.status == 404
        async with s.post(url(app, "/live/test.flv")) as r:
            assert r.status == 405
    assert not app.hub.streams


async def test_viewer_before_publisher_waits_then_plays(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server()
    viewer = FlvViewer(url(app, "/live/test.flv")).start()
    await wait_until(lambda: app.hub.streams, 10, "the viewer to be registered")
    assert viewer.status == 200 and viewer.headers["Content-Type"] == "video/x-flv"
    assert viewer.headers["Access-Control-Allow-Origin"] == "*"
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: viewer.keyframes_after(0) >= 2, 20, "media at the waiting viewer")
    tags = viewer.tags
    assert tags[0].tag_type == flv.SCRIPT and flv.is_sequence_header(tags[1].payload)
    await viewer.close()


async def test_waiting_viewer_closed_after_wait_timeout(make_server) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="play { wait_timeout 0.5; }")
    viewer = FlvViewer(url(app, "/live/nobody.flv")).start()
    await asyncio.wait_for(viewer.ended.wait(), 10)  # end of body, cleanly
    assert viewer.status == 200 and viewer.error is None
    await wait_until(lambda: not app.hub.streams, 5, "the stream to be collected")


async def test_stuck_viewer_is_bounded_and_does_not_delay_others(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    limit = 64 * 1024
    app = await make_server(extra=f"rtmp_limits {{ max_write_buffer {limit}; idle_timeout 2; }}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: app.hub.streams and next(iter(app.hub.streams.values())).live, 20, "the publish")
    stream = next(iter(app.hub.streams.values()))
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", app.port("http")))
    stuck.sendall(b"GET /live/test.flv HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    await wait_until(lambda: len(stream.viewers) == 1, 10, "the stuck viewer")
    good = FlvViewer(url(app, "/live/test.flv")).start()
    await wait_until(lambda: len(stream.viewers) == 2, 10, "both viewers")
    stuck_conn = next(c for c in app.http.connections if c.viewer is next(iter(stream.viewers.values())))
    # A small kernel buffer on the server's side, so that this low-bitrate stream fills it in seconds.
    stuck_conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peak = 0

    def watch() -> bool:
        nonlocal peak
        if not stuck_conn.closed and stuck_conn.transport is not None:
            peak = max(peak, stuck_conn.transport.get_write_buffer_size())
        return len(stream.viewers) == 1

    await wait_until(watch, 20, "the stuck viewer to be closed")
    batch = 400_000  # one 350 ms batch of this ~400 kbit/s stream, with room
    assert peak <= limit + batch, peak
    n = len(good.tags)
    await wait_until(lambda: len(good.tags) > n + 20, 10, "the good viewer to go on")
    assert good.error is None and not good.ended.is_set()
    assert peak > limit // 2, "the viewer never filled its buffer: the test proves nothing"
    stuck.close()
    await good.close()
