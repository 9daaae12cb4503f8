"""The HTTP API against real traffic: ffmpeg publishes a 640x360 H.264 + AAC 44.1 kHz stereo source at a known
bitrate, HTTP-FLV and WebSocket-FLV viewers come and go, and every figure the API reports is checked against
the source (ffprobe) or the traffic: codec details, client counts, byte counts, 30 s rates. Then the operator
actions: kick a viewer, kick the publisher (also the SRS console's JSONP way), delete a stream, and reload the
config while a viewer watches."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livesrv.app import App
from livesrv.config import load_config
from tests.helpers import FFMPEG, FlvViewer, Procs, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e


class Source:
    def __init__(self, path: Path) -> None:
        self.path = path
        out = subprocess.run(
            [require_tool("ffprobe"), "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
            check=True, capture_output=True, timeout=60,
        ).stdout
        info = json.loads(out)
        self.kbps = int(info["format"]["bit_rate"]) / 1000
        self.streams = {s["codec_type"]: s for s in info["streams"]}


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """10 s of 640x360 H.264 (25 fps, 1 s GOP, 500 kbps capped) + AAC-LC 44.1 kHz stereo, made once."""
    path = tmp_path_factory.mktemp("media") / "sample-640x360.flv"
    subprocess.run(
        [
            require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p",
            "-b:v", "500k", "-maxrate", "500k", "-bufsize", "500k",
            "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-ar", "44100", "-f", "flv", str(path),
        ],
        check=True, timeout=120,
    )
    src = Source(path)
    assert 400 < src.kbps < 700, src.kbps  # the rate checks below mean something only at a known rate
    return src


async def api(app: App, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://127.0.0.1:{app.port('api')}{path}") as r:
            text = await r.text()
            if text.startswith("cb("):
                text = text[3:-1]
            return r.status, json.loads(text)


def rtmp_url(app: App, name: str = "test") -> str:
    return f"rtmp://127.0.0.1:{app.port('rtmp')}/live/{name}"


def flv_url(app: App, name: str = "test") -> str:
    return f"http://127.0.0.1:{app.port('http')}/live/{name}.flv"


async def publish(procs: Procs, app: App, src: Path, name: str = "test") -> asyncio.subprocess.Process:
    proc = await procs.start(*ffmpeg_publish_args(src, rtmp_url(app, name)))
    await wait_until(lambda: any(s.key.stream == name and s.live and s.gop.video_header is not None
                                 and s.gop.audio_header is not None for s in app.hub.streams.values())
                     or proc.returncode is not None, 20, "the publisher to go live")
    assert proc.returncode is None, "ffmpeg publisher exited early"
    return proc


async def poll(app: App, path: str, cond: Any, what: str, timeout: float = 15) -> dict[str, Any]:
    """GET ``path`` until ``cond(body)`` holds."""
    last: dict[str, Any] = {}

    async def once() -> bool:
        nonlocal last
        _, last = await api(app, path)
        return bool(cond(last))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await once():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {last}")
        await asyncio.sleep(0.1)
    return last


def within(value: float, expected: float, tolerance: float) -> bool:
    return abs(value - expected) <= tolerance * expected


async def test_every_endpoint_reports_real_values(server, procs, source: Source) -> None:  # type: ignore[no-untyped-def]
    pub = await publish(procs, server, source.path)
    stream_obj = next(iter(server.hub.streams.values()))
    status, body = await api(server, "/api/v1/streams")
    assert status == 200 and body["code"] == 0 and body["total"] == 1
    s = body["streams"][0]
    probe_v, probe_a = source.streams["video"], source.streams["audio"]
    assert s["video"] == {
        "codec": "H264", "profile": probe_v["profile"], "level": f"{probe_v['level'] // 10}" if probe_v["level"] % 10 == 0
        else f"{probe_v['level'] // 10}.{probe_v['level'] % 10}", "width": 640, "height": 360,
    }
    assert s["audio"] == {"codec": "AAC", "sample_rate": 44100, "channel": 2, "profile": probe_a["profile"]}
    assert probe_a["profile"] == "LC" and int(probe_a["sample_rate"]) == 44100 and probe_a["channels"] == 2
    assert (s["name"], s["app"], s["url"]) == ("test", "live", "/live/test")
    assert s["tcUrl"] == f"rtmp://127.0.0.1:{server.port('rtmp')}/live"
    assert s["publish"] == {"active": True, "cid": stream_obj.publisher.cid}
    assert s["clients"] == 1 and s["recv_bytes"] > 0 and s["frames"] > 0
    assert s["id"] == stream_obj.extra["id"] and s["id"].startswith("vid-")
    status, one = await api(server, f"/api/v1/streams/{s['id']}")
    assert status == 200 and one["stream"]["id"] == s["id"] and one["stream"]["video"]["width"] == 640

    _, body = await api(server, "/api/v1/clients")
    assert body["total"] == 1
    publisher = body["clients"][0]
    assert publisher["type"] == "fmle-publish" and publisher["publish"] is True
    assert publisher["id"] == stream_obj.publisher.cid and publisher["ip"] == "127.0.0.1"
    assert publisher["stream"] == s["id"] and publisher["vhost"] == s["vhost"]
    assert publisher["url"] == "/live/test" and publisher["name"] == "test" and publisher["tcUrl"] == s["tcUrl"]
    assert publisher["recv_bytes"] > 0 and publisher["alive"] > 0

    # Viewers join: every count goes up; one leaves: they go down.
    viewers = [FlvViewer(flv_url(server)).start(), FlvViewer(flv_url(server), ws=True).start()]
    await poll(server, "/api/v1/clients", lambda b: b["total"] == 3, "3 clients")
    await wait_until(lambda: all(v.keyframes_after(0) for v in viewers), 20, "the viewers to get media")
    _, body = await api(server, f"/api/v1/streams/{s['id']}")
    assert body["stream"]["clients"] == 3
    _, body = await api(server, f"/api/v1/vhosts/{s['vhost']}")
    assert body["vhost"]["clients"] == 3 and body["vhost"]["streams"] == 1 and body["vhost"]["name"] == "__defaultVhost__"
    _, body = await api(server, "/api/v1/clients?start=1&count=1")
    assert body["total"] == 3 and len(body["clients"]) == 1
    _, body = await api(server, "/api/v1/clients")
    players = {c["protocol"]: c for c in body["clients"] if not c["publish"]}
    assert set(players) == {"flv", "ws-flv"}
    assert all(c["type"] == "flv-play" and c["stream"] == s["id"] and c["send_bytes"] > 0 for c in players.values())
    await viewers[1].close()
    await poll(server, f"/api/v1/streams/{s['id']}", lambda b: b["stream"]["clients"] == 2, "2 clients on the stream")
    _, body = await api(server, "/api/v1/clients")
    assert body["total"] == 2
    _, body = await api(server, f"/api/v1/vhosts/{s['vhost']}")
    assert body["vhost"]["clients"] == 2

    # Rates over (up to) 30 s: the stream receives at the source's bitrate; the viewer gets the same media.
    acct = server.api_service.sampler.account(stream_obj)
    await wait_until(lambda: acct.meter.samples and acct.meter.samples[-1][0] - acct.meter.samples[0][0] >= 11, 20,
                     "11 s of samples")
    _, body = await api(server, f"/api/v1/streams/{s['id']}")
    st = body["stream"]
    assert within(st["kbps"]["recv_30s"], source.kbps, 0.2), (st["kbps"], source.kbps)
    assert st["kbps"]["send_30s"] > 0 and st["send_bytes"] > 0 and st["recv_bytes"] > s["recv_bytes"]
    _, body = await api(server, f"/api/v1/clients/{players['flv']['id']}")
    viewer = body["client"]
    assert within(viewer["kbps"]["send_30s"], source.kbps, 0.2), (viewer["kbps"], source.kbps)
    assert viewer["send_bytes"] > players["flv"]["send_bytes"]
    _, body = await api(server, f"/api/v1/clients/{publisher['id']}")
    assert within(body["client"]["kbps"]["recv_30s"], source.kbps, 0.2), body["client"]["kbps"]
    _, body = await api(server, f"/api/v1/vhosts/{s['vhost']}")
    assert within(body["vhost"]["kbps"]["recv_30s"], source.kbps, 0.2) and body["vhost"]["recv_bytes"] > 0
    _, body = await api(server, "/api/v1/summaries")
    assert body["data"]["system"]["srs_recv_bytes"] >= st["recv_bytes"]
    # (CPU is a real measurement: see test_summaries_are_real_measurements. Over one sample second this process
    # may well use less than a clock tick, so 0.0 is a right answer here.)
    assert body["data"]["system"]["srs_send_bytes"] > 0 and body["data"]["self"]["cpu_percent"] >= 0
    assert pub.returncode is None
    await viewers[0].close()


async def test_kick_a_viewer_then_the_publisher(server, procs, source: Source) -> None:  # type: ignore[no-untyped-def]
    pub = await publish(procs, server, source.path)
    stream = next(iter(server.hub.streams.values()))
    kicked, stays = FlvViewer(flv_url(server)).start(), FlvViewer(flv_url(server), ws=True).start()
    await wait_until(lambda: kicked.keyframes_after(0) and stays.keyframes_after(0), 20, "the viewers to get media")
    _, body = await api(server, "/api/v1/clients")
    ids = {c["protocol"]: c["id"] for c in body["clients"]}

    status, body = await api(server, f"/api/v1/clients/{ids['flv']}", "DELETE")
    assert status == 200 and body["code"] == 0
    await asyncio.wait_for(kicked.ended.wait(), 5)
    mark = len(stays.tags)
    await wait_until(lambda: stays.keyframes_after(mark) >= 2, 10, "the other viewer to go on")
    assert not stays.ended.is_set() and list(stream.viewers) == [ids["ws-flv"]]
    status, body = await api(server, f"/api/v1/clients/{ids['flv']}", "DELETE")
    assert status == 404 and body["code"] == 2049

    # The SRS console kicks with JSONP: GET ...?callback=NAME&method=DELETE.
    status, body = await api(server, f"/api/v1/clients/{ids['rtmp']}?callback=cb&method=DELETE")
    assert status == 200 and body["code"] == 0
    await asyncio.wait_for(pub.wait(), 15)  # ffmpeg saw its connection closed and gave up
    _, body = await api(server, f"/api/v1/streams/{stream.extra['id']}")
    assert body["stream"]["publish"] == {"active": False} and body["stream"]["video"] is None
    assert not stays.ended.is_set()  # waiting for a publisher, within the grace period

    mark = len(stays.tags)
    await publish(procs, server, source.path)
    _, body = await api(server, f"/api/v1/streams/{stream.extra['id']}")  # the same stream, the same id
    assert body["stream"]["publish"]["active"] is True and body["stream"]["publish"]["cid"] != ids["rtmp"]
    await wait_until(lambda: stays.keyframes_after(mark) >= 2, 15, "the viewer to get the new publisher's media")
    await stays.close()


async def test_delete_a_stream(server, procs, source: Source) -> None:  # type: ignore[no-untyped-def]
    pub = await publish(procs, server, source.path)
    other = await publish(procs, server, source.path, "other")
    viewers = [FlvViewer(flv_url(server)).start(), FlvViewer(flv_url(server), ws=True).start(),
               FlvViewer(flv_url(server, "other")).start()]
    await wait_until(lambda: all(v.keyframes_after(0) for v in viewers), 20, "the viewers to get media")
    _, body = await api(server, "/api/v1/streams")
    ids = {s["name"]: s["id"] for s in body["streams"]}
    assert body["total"] == 2 and len(set(ids.values())) == 2

    status, body = await api(server, f"/api/v1/streams/{ids['test']}", "DELETE")
    assert status == 200 and body["code"] == 0
    await asyncio.wait_for(pub.wait(), 15)
    await asyncio.wait_for(asyncio.gather(viewers[0].ended.wait(), viewers[1].ended.wait()), 5)
    await wait_until(lambda: [s.key.stream for s in server.hub.streams.values()] == ["other"], 10,
                     "the stream to be removed")
    status, body = await api(server, f"/api/v1/streams/{ids['test']}")
    assert status == 404 and body["code"] == 2048
    _, body = await api(server, "/api/v1/clients")
    assert body["total"] == 2 and {c["stream"] for c in body["clients"]} == {ids["other"]}
    # The other stream never noticed.
    mark = len(viewers[2].tags)
    await wait_until(lambda: viewers[2].keyframes_after(mark) >= 2, 10, "the other stream to go on")
    assert other.returncode is None and not viewers[2].ended.is_set()
    await viewers[2].close()


CONF = """
listen 127.0.0.1:0;
http_server {{ enabled on; listen 127.0.0.1:0; }}
http_api {{ enabled on; listen 127.0.0.1:0; raw_api {{ enabled on; allow_reload on; }} }}
vhost __defaultVhost__ {{ http_remux {{ enabled on; }} play {{ gop_cache {gop}; }} }}
"""


async def test_reload_while_a_viewer_watches(tmp_path: Path, procs: Procs, source: Source) -> None:
    conf = tmp_path / "livesrv.conf"
    conf.write_text(CONF.format(gop="on"))
    app = App(load_config(conf, environ={}).config, config_path=str(conf))
    await app.start()
    try:
        pub = await publish(procs, app, source.path)
        stream = next(iter(app.hub.streams.values()))
        publisher = stream.publisher
        viewer = FlvViewer(flv_url(app)).start()
        await wait_until(lambda: viewer.keyframes_after(0), 20, "the viewer to get media")

        conf.write_text(CONF.format(gop="off"))
        status, body = await api(app, "/api/v1/raw?rpc=reload")
        assert status == 200 and body["code"] == 0 and body["data"]["restart_needed"] == []
        assert app.config.vhost("__defaultVhost__").play.gop_cache is False

        mark = len(viewer.tags)
        await wait_until(lambda: viewer.keyframes_after(mark) >= 3, 15, "the viewer to go on after the reload")
        assert not viewer.ended.is_set() and stream.publisher is publisher and pub.returncode is None
        assert stream.settings.gop_cache is True and stream.gop.gop  # the existing stream keeps its settings
        await publish(procs, app, source.path, "fresh")
        fresh = next(s for s in app.hub.streams.values() if s.key.stream == "fresh")
        assert fresh.settings.gop_cache is False and not fresh.gop.gop  # a new stream takes the new config
        await viewer.close()
    finally:
        await app.stop()


async def test_hls_players_and_http_ts_viewers_are_clients(make_server, procs, source: Source) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="hls { enabled on; hls_fragment 1; hls_window 10; hls_path ./objs/html; }")
    await publish(procs, app, source.path)
    stream = next(iter(app.hub.streams.values()))
    base = f"http://127.0.0.1:{app.port('http')}/live/test"
    async with aiohttp.ClientSession() as s:
        async def playlist() -> int:
            async with s.get(base + ".m3u8") as r:  # follows the hls_ctx redirect: a counted HLS player
                await r.read()
                return r.status

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await playlist() != 200:
            assert loop.time() < deadline, "no HLS playlist"
            await asyncio.sleep(0.2)
        received = bytearray()

        async def read_ts() -> None:
            async with s.get(base + ".ts") as r:
                async for chunk in r.content.iter_any():
                    received.extend(chunk)

        ts = asyncio.create_task(read_ts())  # an HTTP-TS viewer
        await wait_until(lambda: len(received) > 20_000, 20, "HTTP-TS bytes")
        assert received[0] == 0x47  # MPEG-TS sync byte
        body = await poll(app, "/api/v1/clients", lambda b: b["total"] == 3, "publisher, HLS player, HTTP-TS viewer")
        by_type = {c["type"]: c for c in body["clients"]}
        assert set(by_type) == {"fmle-publish", "hls-play", "ts-play"}
        assert by_type["ts-play"]["send_bytes"] > 0 and by_type["ts-play"]["protocol"] == "ts"
        hls = by_type["hls-play"]
        assert hls["stream"] == stream.extra["id"] and hls["ip"] == "127.0.0.1" and hls["publish"] is False
        _, one = await api(app, f"/api/v1/clients/{hls['id']}")
        assert one["client"]["type"] == "hls-play"
        _, body = await api(app, f"/api/v1/streams/{stream.extra['id']}")
        assert body["stream"]["clients"] == 3 and body["stream"]["hls"]["segments"] >= 1
        # A kicked HLS player: its session ends (gone from the registry) and its id is refused from then on.
        status, _ = await api(app, f"/api/v1/clients/{hls['id']}", "DELETE")
        assert status == 200 and hls["id"] not in app.hub.clients
        async with s.get(f"{base}.m3u8?hls_ctx={hls['id']}", allow_redirects=False) as r:
            assert r.status == 403
        status, _ = await api(app, f"/api/v1/clients/{by_type['ts-play']['id']}", "DELETE")
        assert status == 200
        await asyncio.wait_for(asyncio.gather(ts, return_exceptions=True), 5)  # its body ended
        await poll(app, "/api/v1/clients", lambda b: b["total"] == 1, "the HLS player and HTTP-TS viewer to be gone")
