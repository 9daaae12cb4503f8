"""Hook bodies carry SRS's fields, in SRS's order, with SRS's types."""

from __future__ import annotations

import json

from livesrv.hooks import payloads as p
from livesrv.hooks.payloads import ServerIdentity
from livesrv.hub.clients import HookContext
from livesrv.hub.keys import parse_rtmp_request

SERVER = ServerIdentity(server_id="vid-0w9f3xy", service_id="k7r2m1q9", cwd="/srv/livesrv")
CTX = HookContext(
    client_id="3n4l0v9s",
    ip="192.0.2.10",
    vhost="__defaultVhost__",
    app="live",
    stream="livestream",
    param="?token=abc",
    tc_url="rtmp://192.0.2.1/live",
    page_url="http://example.com/player.html",
    stream_id="vid-stream1",
)

COMMON = ["server_id", "service_id", "action", "client_id", "ip", "vhost", "app"]


def test_on_connect() -> None:
    body = p.on_connect(SERVER, CTX)
    assert list(body) == COMMON + ["stream", "param", "tcUrl", "pageUrl"]
    assert body == {
        "server_id": "vid-0w9f3xy", "service_id": "k7r2m1q9", "action": "on_connect",
        "client_id": "3n4l0v9s", "ip": "192.0.2.10", "vhost": "__defaultVhost__", "app": "live",
        "stream": "livestream", "param": "?token=abc", "tcUrl": "rtmp://192.0.2.1/live",
        "pageUrl": "http://example.com/player.html",
    }


def test_on_close() -> None:
    body = p.on_close(SERVER, CTX, send_bytes=1234, recv_bytes=5678)
    assert list(body) == COMMON + ["send_bytes", "recv_bytes"]
    assert body["action"] == "on_close" and body["send_bytes"] == 1234 and body["recv_bytes"] == 5678


def test_publish_and_unpublish() -> None:
    for build, action in ((p.on_publish, "on_publish"), (p.on_unpublish, "on_unpublish")):
        body = build(SERVER, CTX)
        assert list(body) == COMMON + ["tcUrl", "stream", "param", "stream_url", "stream_id"]
        assert body["action"] == action
        assert body["stream_url"] == "/live/livestream" and body["stream_id"] == "vid-stream1"


def test_play_and_stop() -> None:
    play = p.on_play(SERVER, CTX)
    assert list(play) == COMMON + ["stream", "tcUrl", "param", "pageUrl", "stream_url", "stream_id"]
    stop = p.on_stop(SERVER, CTX)
    assert list(stop) == COMMON + ["tcUrl", "stream", "param", "stream_url", "stream_id"]
    assert (play["action"], stop["action"]) == ("on_play", "on_stop")


def test_on_dvr() -> None:
    body = p.on_dvr(SERVER, CTX, file="./objs/nginx/html/live/livestream.1700000000000.flv")
    assert list(body) == COMMON + ["tcUrl", "stream", "param", "cwd", "file", "stream_url", "stream_id"]
    assert body["cwd"] == "/srv/livesrv" and body["file"].endswith(".flv")


def test_on_hls() -> None:
    body = p.on_hls(
        SERVER, CTX, duration=10.0104, file="./objs/nginx/html/live/livestream-3.ts", url="livestream-3.ts",
        m3u8="./objs/nginx/html/live/livestream.m3u8", m3u8_url="live/livestream.m3u8", seq_no=3,
    )
    assert list(body) == COMMON + [
        "tcUrl", "stream", "param", "duration", "cwd", "file", "url", "m3u8", "m3u8_url", "seq_no",
        "stream_url", "stream_id",
    ]
    assert body["duration"] == 10.01 and isinstance(body["duration"], float)
    assert body["url"] == "live/livestream-3.ts" and body["seq_no"] == 3
    assert json.loads(json.dumps(body)) == body


def test_hls_segment_url() -> None:
    assert p.hls_segment_url("s-1.ts", "live/s.m3u8") == "live/s-1.ts"
    assert p.hls_segment_url("s-1.ts", "s.m3u8") == "s-1.ts"
    assert p.hls_segment_url("s-1.ts", "/s.m3u8") == "/s-1.ts"
    assert p.hls_segment_url("http://cdn/x/s-1.ts", "live/s.m3u8") == "http://cdn/x/s-1.ts"


def test_stream_id_omitted_when_unknown() -> None:
    ctx = HookContext("c1", "::1", "__defaultVhost__", "live", "s")
    for body in (p.on_publish(SERVER, ctx), p.on_play(SERVER, ctx), p.on_stop(SERVER, ctx),
                 p.on_dvr(SERVER, ctx, "f.flv"),
                 p.on_hls(SERVER, ctx, duration=1, file="f", url="u", m3u8="m", m3u8_url="m", seq_no=0)):
        assert "stream_id" not in body
        assert body["param"] == "" and body["tcUrl"] == ""


def test_stream_url_names_a_non_default_vhost() -> None:
    ctx = HookContext("c1", "1.1.1.1", "sports.example", "live", "match")
    assert ctx.stream_url == "sports.example/live/match"
    assert p.on_publish(SERVER, ctx)["stream_url"] == "sports.example/live/match"


def test_context_from_rtmp_request() -> None:
    req = parse_rtmp_request("rtmp://127.0.0.1:1935/live", "live", "cam?token=xyz")
    ctx = HookContext.from_request("c9", "127.0.0.1", req, stream_id="vid-1")
    assert (ctx.vhost, ctx.app, ctx.stream, ctx.param, ctx.tc_url) == (
        "__defaultVhost__", "live", "cam", "?token=xyz", "rtmp://127.0.0.1:1935/live"
    )
    assert p.on_play(SERVER, ctx)["stream_url"] == "/live/cam"


def test_on_forward() -> None:
    """The forward backend's body (``SrsHttpHooks::on_forward_backend``): ``action`` first, no stream_url or
    stream_id, the publisher's context."""
    body = p.on_forward(SERVER, CTX)
    assert body == {
        "action": "on_forward", "server_id": "vid-0w9f3xy", "service_id": "k7r2m1q9", "client_id": "3n4l0v9s",
        "ip": "192.0.2.10", "vhost": "__defaultVhost__", "app": "live", "tcUrl": "rtmp://192.0.2.1/live",
        "stream": "livestream", "param": "?token=abc",
    }
    assert list(body) == ["action", "server_id", "service_id", "client_id", "ip", "vhost", "app", "tcUrl",
                          "stream", "param"]
