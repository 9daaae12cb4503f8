"""HLS and HTTP-TS from the running server, with a real ffmpeg publisher and real ffprobe/ffmpeg players.

Live playlists have no EXT-X-ENDLIST, so every ffmpeg player here is bounded with ``-t`` and a timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livesrv.codec.hls_playlist import MediaPlaylist, parse_media_playlist
from livesrv.hub.keys import StreamKey
from tests.helpers import Procs, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e

KEY = StreamKey("__defaultVhost__", "live", "test")
FRAGMENT = 2
WINDOW = 10
TD_RATIO = 1.5
GOP_S = 1.0  # the sample's keyframe interval


@pytest.fixture(autouse=True)
def _small_segment_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample's ~75 kB segments go to disk in several appends while players read the stream."""
    monkeypatch.setattr("livesrv.remux.hls.SEGMENT_BUFFER_BYTES", 16 * 1024)


def hls_vhost(path: Path, dispose: float = 2) -> str:
    return (f"hls {{ enabled on; hls_fragment {FRAGMENT}; hls_window {WINDOW}; hls_td_ratio {TD_RATIO}; "
            f"hls_path {path}; hls_dispose {dispose}; }}")


async def fetch(url: str, method: str = "GET", redirects: bool = True) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.request(method, url, allow_redirects=redirects) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def raw_status(port: int, target: str) -> int:
    """The status line for a request target sent as is (clients would normalize ``..`` away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1])
    finally:
        writer.close()


async def playlist(base: str) -> MediaPlaylist:
    status, _, body = await fetch(f"{base}/live/test.m3u8")
    assert status == 200, status
    return parse_media_playlist(body.decode())


def segment_count(app: Any) -> int:
    state = app.hls.state(KEY)
    return 0 if state is None or state.playlist_body is None else len(state.segmenter.segments)


async def start_publisher(procs: Procs, app: Any, src: Path) -> asyncio.subprocess.Process:
    return await procs.start(*ffmpeg_publish_args(src, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))


async def test_live_hls_plays_with_the_configured_segments_window_and_headers(
    make_server, procs, sample_flv, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    hls_path = tmp_path / "hls"
    app = await make_server(vhost=hls_vhost(hls_path))
    base = f"http://127.0.0.1:{app.port('http')}"
    await start_publisher(procs, app, sample_flv)
    await wait_until(lambda: segment_count(app) >= 3, 30, "three segments")

    # A player without a session is sent to one (SRS hls_ctx); the playlist is never cached, CORS is open.
    status, headers, _ = await fetch(f"{base}/live/test.m3u8", redirects=False)
    assert status == 302 and "hls_ctx=" in headers["Location"] and headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = await fetch(f"{base}/live/test.m3u8")
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Cache-Control"] == "no-cache" and headers["Access-Control-Allow-Origin"] == "*"
    pl = parse_media_playlist(body.decode())
    seg_url = f"{base}/live/{pl.segments[0].uri}"
    status, headers, seg = await fetch(seg_url)
    assert status == 200 and headers["Content-Type"] == "video/mp2t" and "max-age=" in headers["Cache-Control"]
    assert headers["Access-Control-Allow-Origin"] == "*" and seg[:1] == b"\x47" and len(seg) % 188 == 0
    for url in (f"{base}/live/test.m3u8", seg_url):
        status, headers, body = await fetch(url, "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0, url

    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json",
                                     f"{base}/live/test.m3u8", timeout=30)
    assert code == 0, err.decode()
    streams = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["sample_rate"]) == 44100 and streams["audio"]["channels"] == 2

    # 8 s from the live edge: ffmpeg reloads the playlist while it waits for new segments.
    code, _, err = await procs.run(require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error",
                                   "-i", f"{base}/live/test.m3u8", "-t", "8", "-f", "null", "-", timeout=40)
    assert code == 0 and not err.strip(), err.decode()[-3000:]
    # ffprobe and ffmpeg (same address and user agent, reloading the URL without a session) and aiohttp.
    assert len(app.hls.viewers(KEY)) == 2, app.hls.viewers(KEY)

    # Once the window slides: it holds what fits in hls_window plus the segment that crosses it.
    await wait_until(lambda: app.hls.state(KEY).segmenter.segments[0].sequence > 0, 30, "the window to slide")
    pl = await playlist(base)
    durations = [s.duration for s in pl.segments]
    assert sum(durations[1:]) <= WINDOW < sum(durations), durations
    assert all(d <= FRAGMENT * TD_RATIO + GOP_S for d in durations), durations
    assert all(d >= FRAGMENT - 0.1 for d in durations), durations  # cut at the first keyframe after 2 s
    assert pl.target_duration == math.ceil(max(float(s.extinf) for s in pl.segments))
    on_disk = {p.name for p in (hls_path / "live").iterdir()}
    assert {"test.m3u8", *(s.uri for s in pl.segments)} <= on_disk
    assert min(int(n[len("test-"):-3]) for n in on_disk if n.endswith(".ts")) >= pl.media_sequence  # hls_cleanup
    # Besides them, only the open segment, growing under its hidden part name (no temp file left behind).
    hidden = [n for n in on_disk if n.startswith(".")]
    assert all(n.endswith((".ts", ".m3u8")) for n in on_disk - set(hidden))
    newest = pl.media_sequence + len(pl.segments) - 1
    assert all(n.startswith(".test-") and n.endswith(".ts.tmp") and int(n[6:-7]) > newest for n in hidden), hidden
    assert len(hidden) <= 1, hidden
    assert app.hls.state(KEY).segmenter.buffered < 16 * 1024

    # Every segment reads back in ffprobe with the duration the playlist gives it (copied first: the window
    # may slide meanwhile, and only a segment that left it may be gone).
    copies = tmp_path / "copies"
    copies.mkdir()
    for s in pl.segments:
        try:
            (copies / s.uri).write_bytes((hls_path / "live" / s.uri).read_bytes())
        except FileNotFoundError:
            assert s.uri not in {x.uri for x in app.hls.state(KEY).segmenter.segments}, s
    probed = 0
    for s in pl.segments:
        if not (copies / s.uri).exists():
            continue
        code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_format", "-of", "json",
                                         str(copies / s.uri), timeout=30)
        assert code == 0, err.decode()
        assert float(json.loads(out)["format"]["duration"]) == pytest.approx(s.duration, abs=0.1), s
        probed += 1
    assert probed >= len(pl.segments) - 1


async def test_republish_adds_a_discontinuity_and_dispose_removes_everything(
    make_server, procs, sample_flv, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    hls_path = tmp_path / "hls"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.m3u8").write_text("#EXTM3U\n")
    (tmp_path / "outside" / "secret.ts").write_bytes(b"secret")
    app = await make_server(vhost=hls_vhost(hls_path, dispose=3))
    port = app.port("http")
    base = f"http://127.0.0.1:{port}"
    pub = await start_publisher(procs, app, sample_flv)
    await wait_until(lambda: segment_count(app) >= 2, 30, "two segments")
    first = await playlist(base)
    assert not any(s.discontinuity for s in first.segments)
    state = app.hls.state(KEY)

    pub.kill()  # as after a crash; straight back
    pub = await start_publisher(procs, app, sample_flv)

    def after_discontinuity() -> int:
        state = app.hls.state(KEY)
        segs = state.segmenter.segments if state is not None else ()
        marks = [i for i, s in enumerate(segs) if s.discontinuity]
        return len(segs) - marks[0] if marks else 0

    await wait_until(lambda: after_discontinuity() >= 2, 30, "segments of the new publisher")
    assert app.hls.state(KEY) is state, "the playlist was disposed and restarted"
    pl = await playlist(base)
    assert sum(s.discontinuity for s in pl.segments) == 1
    mark = next(i for i, s in enumerate(pl.segments) if s.discontinuity)
    assert mark > 0 and pl.media_sequence <= first.media_sequence + len(first.segments) - 1  # old ones kept
    last = pl.media_sequence + len(pl.segments)
    await wait_until(lambda: (s := app.hls.state(KEY)) is not None and s.segmenter.segments[-1].sequence >= last,
                     20, "the playlist to keep growing")
    code, _, err = await procs.run(require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error",
                                   "-live_start_index", "0", "-i", f"{base}/live/test.m3u8", "-t", "6",
                                   "-f", "null", "-", timeout=30)
    assert code == 0 and not err.strip(), err.decode()[-3000:]  # across the discontinuity

    # Nothing outside hls_path, however the path is spelled.
    for target in ("/../outside/secret.m3u8", "/live/../../outside/secret.ts", "/live/%2e%2e/%2e%2e/outside/secret.ts",
                   "/%2e%2e/outside/secret.m3u8"):
        assert await raw_status(port, target) == 404, target

    pub.kill()
    await wait_until(lambda: app.hls.state(KEY) is None, 20, "hls_dispose")
    await wait_until(lambda: not [p for p in hls_path.rglob("*") if p.is_file()], 10, "every file deleted")
    status, _, _ = await fetch(f"{base}/live/test.m3u8")
    assert status == 404
    status, _, _ = await fetch(f"{base}/live/{pl.segments[-1].uri}")
    assert status == 404


async def test_http_ts_plays_in_ffprobe_and_ffmpeg(server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    await start_publisher(procs, server, sample_flv)
    await wait_until(lambda: (s := server.hub.get(KEY)) is not None and s.live and s.gop.gop, 20, "the publisher")
    url = f"http://127.0.0.1:{server.port('http')}/live/test.ts"
    status, headers, body = await fetch(url, "HEAD")
    assert status == 200 and headers["Content-Type"] == "video/mp2t" and body == b""
    assert not server.hub.get(KEY).viewers  # HEAD is not a viewer

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.get(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp2t"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            head = await resp.content.readexactly(188 * 4)
            assert head[0] == 0x47 and head[1:3] == b"\x40\x00"  # PAT first
            assert [v.protocol for v in server.hub.get(KEY).viewers.values()] == ["ts"]
    await wait_until(lambda: not server.hub.get(KEY).viewers, 10, "the TS viewer to be detached")

    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", url,
                                     timeout=30)
    assert code == 0, err.decode()
    streams = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["width"] == 320
    assert streams["audio"]["codec_name"] == "aac" and int(streams["audio"]["sample_rate"]) == 44100
    code, _, err = await procs.run(require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-i", url,
                                   "-t", "3", "-f", "null", "-", timeout=30)
    assert code == 0 and not err.strip(), err.decode()[-3000:]
