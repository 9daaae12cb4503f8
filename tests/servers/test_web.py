"""The pages' serving (livesrv.servers.web) over real HTTP: content types, caching (ETag, 304, gzip), what is
and is not served, the pages' config, the stills of live streams (a real H.264 keyframe decoded and made a
JPEG, at most once per interval), and a file under ``http_server.dir`` winning over a page."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import aiohttp
import pytest

from livesrv.app import App
from livesrv.servers.api.sampling import stream_id
from livesrv.servers.web import WEB_DIR
from tests.helpers import Procs, ffmpeg_publish_args, wait_until

pytestmark = pytest.mark.e2e


async def fetch(app: App, path: str, method: str = "GET", headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, f"http://127.0.0.1:{app.port('http')}{path}",
                             headers={"Accept-Encoding": "identity", **(headers or {})},
                             allow_redirects=False) as r:
            return r.status, r.headers.copy(), await r.read()  # type: ignore[return-value]  # case-insensitive


@pytest.mark.parametrize("path, ctype, needle", [
    ("/", "text/html; charset=utf-8", b"/livesrv/index.js"),
    ("/index.html", "text/html; charset=utf-8", b"/livesrv/index.js"),
    ("/player.html", "text/html; charset=utf-8", b"/livesrv/watch.js"),
    ("/console/", "text/html; charset=utf-8", b"/livesrv/console.js"),
    ("/livesrv/common.js", "text/javascript; charset=utf-8", b"export class Api"),
    ("/livesrv/style.css", "text/css; charset=utf-8", b":root"),
    ("/livesrv/favicon.svg", "image/svg+xml", b"<svg"),
    ("/livesrv/vendor/mpegts.js", "text/javascript; charset=utf-8", b"mpegts"),
    ("/livesrv/vendor/hls.js", "text/javascript; charset=utf-8", b"Hls"),
])
async def test_pages_and_assets(server, path: str, ctype: str, needle: bytes) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = await fetch(server, path)
    assert status == 200 and headers["Content-Type"] == ctype, (status, headers)
    assert needle in body
    assert headers["Cache-Control"] == "no-cache" and headers["X-Content-Type-Options"] == "nosniff"
    etag = headers["ETag"]
    status, headers, body = await fetch(server, path, headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and headers["ETag"] == etag
    status, headers, _ = await fetch(server, path, "HEAD")
    assert status == 200 and int(headers["Content-Length"]) > 0


async def test_gzip_when_asked(server) -> None:  # type: ignore[no-untyped-def]
    _, _, plain = await fetch(server, "/livesrv/vendor/hls.js")
    status, headers, packed = await fetch(server, "/livesrv/vendor/hls.js", headers={"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) / 2


@pytest.mark.parametrize("path", [
    "/livesrv/", "/livesrv/nothing.js", "/livesrv/../app.py", "/livesrv/%2e%2e/app.py", "/livesrv/vendor/",
    "/livesrv/vendor/package.json", "/livesrv/vendor/node_modules/hls.js/package.json", "/livesrv/web.py",
    "/livesrv/.hidden.js", "/livesrv/thumbs/nostream.jpg", "/console/x.html", "/nothing",
])
async def test_nothing_else_is_served(server, path: str) -> None:  # type: ignore[no-untyped-def]
    status, _, _ = await fetch(server, path)
    assert status == 404, path


async def test_console_redirect_and_methods(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, _ = await fetch(server, "/console")
    assert status == 301 and headers["Location"] == "/console/"
    status, _, _ = await fetch(server, "/", "POST")
    assert status == 405


async def test_pages_config(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = await fetch(server, "/livesrv/config.json")
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    cfg = json.loads(body)
    assert cfg["ports"] == {"rtmp": server.port("rtmp"), "http": server.port("http"), "api": server.port("api"),
                            "rtmps": None, "https": None, "api_https": None}
    assert cfg["api"] == {"enabled": True, "auth": False, "crossdomain": True}
    assert cfg["flv"] is True and cfg["hls"] is False and cfg["rtc"] is False
    assert cfg["players"] == {"mpegts.js": True, "hls.js": True}
    server.web.vendor_dir = Path("/nonexistent")
    assert json.loads((await fetch(server, "/livesrv/config.json"))[2])["players"] == {"mpegts.js": False, "hls.js": False}


async def test_pages_config_says_where_webrtc_plays(make_server) -> None:  # type: ignore[no-untyped-def]
    """WHEP is offered when rtc_server is on and the vhost has rtc with rtmp_to_rtc: for the vhost asked for
    (?vhost=, else the host name), as a stream's URL resolves it."""
    app = await make_server(
        "rtc_server { enabled on; candidate 127.0.0.1; } vhost plain.test { } "
        "vhost rtmp-only.test { rtc { enabled on; rtmp_to_rtc off; } } vhost hls.test { hls { enabled on; } }",
        "rtc { enabled on; rtmp_to_rtc on; }")

    async def cfg(query: str = "", host: str | None = None) -> dict:  # type: ignore[type-arg]
        return json.loads((await fetch(app, "/livesrv/config.json" + query, headers={"Host": host} if host else None))[2])

    assert (await cfg())["rtc"] is True
    assert (await cfg("?vhost=plain.test"))["rtc"] is False  # no rtc block
    assert (await cfg("?vhost=rtmp-only.test"))["rtc"] is False  # only WHIP streams would play
    assert (await cfg("?vhost=unknown.test"))["rtc"] is True  # an unknown name is the default vhost
    assert (await cfg(host=f"plain.test:{app.port('http')}"))["rtc"] is False
    assert (await cfg("?vhost=hls.test"))["hls"] is True and (await cfg())["hls"] is False
    off = await make_server(vhost="rtc { enabled on; rtmp_to_rtc on; }")  # rtc_server off
    assert json.loads((await fetch(off, "/livesrv/config.json"))[2])["rtc"] is False


async def test_a_file_in_http_server_dir_wins(server) -> None:  # type: ignore[no-untyped-def]
    root = Path(server.config.http_server.dir)
    root.mkdir(parents=True)
    (root / "index.html").write_text("<p>my own page</p>")
    status, _, body = await fetch(server, "/")
    assert status == 200 and body == b"<p>my own page</p>"
    status, _, body = await fetch(server, "/player.html")  # the others are still livesrv's
    assert status == 200 and b"watch.js" in body


async def test_still_of_a_live_stream(server, procs: Procs, sample_flv: Path) -> None:  # type: ignore[no-untyped-def]
    import av

    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{server.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in server.hub.streams.values()), 20, "the stream")
    (stream,) = server.hub.streams.values()
    sid = stream_id(stream)
    status, headers, jpeg = await fetch(server, f"/livesrv/thumbs/{sid}.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
    assert jpeg[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(jpeg)) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (320, 240)  # the 320x240 sample, at most 320 wide
    rendered = server.web.thumbnails.rendered
    for _ in range(5):  # many pages asking within the interval: one picture
        assert (await fetch(server, f"/livesrv/thumbs/{sid}.jpg"))[2] == jpeg
    assert server.web.thumbnails.rendered == rendered == 1


def test_the_web_directory_is_flat_and_known() -> None:
    """Assets are served from a flat directory by suffix: every file there has a known type."""
    from livesrv.servers.web import CONTENT_TYPES

    files = [p for p in WEB_DIR.iterdir() if p.is_file()]
    assert {p.suffix for p in files} <= set(CONTENT_TYPES), files
    assert {"index.html", "player.html", "console.html", "common.js", "style.css"} <= {p.name for p in files}
