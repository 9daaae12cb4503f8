"""Edge (``vhost { cluster { mode remote; origin ...; } }``), with real servers: an origin and an edge livesrv on
free ports, ffmpeg publishing to the origin, viewers of every kind on the edge (our HTTP-FLV reader, ffprobe over
RTMP, HTTP-FLV and HLS). One pull per stream whatever the viewers, gone from the origin after the linger;
an origin restart, a dead first origin, FLV upstream, edge publish; a seeded randomized test of viewers coming
and going around the linger and the pull's start and end.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import aiohttp
import pytest

from livesrv.app import App
from livesrv.clients.edge import EdgePull, metadata_of, origin_url, split_origin
from livesrv.codec import amf0
from livesrv.config import ClusterConfig, parse_text
from livesrv.hub.clients import PULLER, VIEWER
from livesrv.hub.keys import StreamKey
from tests.helpers import free_port, FlvViewer, Procs, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e

KEY = StreamKey("__defaultVhost__", "live", "test")
#: Fast retries for tests (production: 0.5 s doubling to 5 s).
RETRY = (0.1, 0.5)



async def start_app(config_text: str) -> App:
    result = parse_text(config_text, "<test>")
    assert not result.warnings, result.warnings
    app = App(result.config)
    await app.start()
    return app


def origin_config(rtmp_port: int) -> str:
    return f"""listen 127.0.0.1:{rtmp_port};
    http_server {{ enabled on; listen 127.0.0.1:0; }}
    http_api {{ enabled on; listen 127.0.0.1:0; }}
    vhost __defaultVhost__ {{ http_remux {{ enabled on; }} }}"""


async def make_edge(make_server, origins: str, extra: str = "", linger: float = 1.0, cluster: str = "") -> App:  # type: ignore[no-untyped-def]
    edge: App = await make_server(
        vhost=f"cluster {{ mode remote; origin {origins}; linger {linger:g}; {cluster} }} {extra}")
    edge.edge.retry = RETRY
    return edge


def origin_viewers(origin: App) -> list[object]:
    """The origin's viewers of the test stream (an edge's pull is one)."""
    return [c for c in origin.hub.clients.values() if c.kind == VIEWER and c.context.key == KEY]


async def api_clients(app: App) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('api')}/api/v1/clients") as resp:
            return (await resp.json())["clients"]


async def probe(procs: Procs, url: str) -> set[str]:
    """The codecs ffprobe finds when it plays ``url`` (it decodes the first frames to find them)."""
    code, out, err = await procs.run(
        require_tool("ffprobe"), "-v", "error", "-rw_timeout", "20000000", "-show_entries", "stream=codec_name",
        "-of", "json", url, timeout=60)
    assert code == 0, err.decode()[-2000:]
    return {s["codec_name"] for s in json.loads(out)["streams"]}


def flv_url(app: App) -> str:
    return f"http://127.0.0.1:{app.port('http')}/live/test.flv"


def got_video(viewer: FlvViewer) -> bool:
    return viewer.keyframes_after(0) >= 1


# ------------------------------------------------------------------------------------------- end to end


async def test_one_pull_for_many_viewers_gone_after_the_linger(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := origin.hub.get(KEY)) is not None and s.live and s.gop.gop, 20, "origin live")
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}")

    # Five HTTP-FLV viewers arriving together and one RTMP viewer (ffprobe decodes it): one pull.
    viewers = [FlvViewer(flv_url(edge)).start() for _ in range(5)]
    assert await probe(procs, f"rtmp://127.0.0.1:{edge.port('rtmp')}/live/test") == {"h264", "aac"}
    await wait_until(lambda: all(got_video(v) for v in viewers), 20, "every edge viewer to get video")
    assert all(v.status == 200 and v.error is None for v in viewers)
    assert len(origin_viewers(origin)) == 1
    listed = [c for c in await api_clients(origin) if not c["publish"]]
    assert len(listed) == 1 and listed[0]["ip"] == "127.0.0.1" and listed[0]["name"] == "test", listed
    pulls = [c for c in await api_clients(edge) if c["kind"] == PULLER]
    assert len(pulls) == 1 and pulls[0]["type"] == "rtmp-puller", pulls
    # The HTTP-FLV bytes the edge serves decode (ffprobe, a seventh viewer, on the same pull).
    assert await probe(procs, flv_url(edge)) == {"h264", "aac"}
    assert len(origin_viewers(origin)) == 1

    # Everyone leaves: the pull is gone from the origin after the linger (1 s), not before.
    left = time.monotonic()
    for v in viewers:
        await v.close()
    await wait_until(lambda: not origin_viewers(origin), 10, "the pull to leave the origin")
    assert time.monotonic() - left >= 0.9
    assert not edge.edge.pulls and not [c for c in edge.hub.clients.values() if c.kind == PULLER]
    await wait_until(lambda: edge.hub.get(KEY) is None, 10, "the edge's stream to be collected")


async def test_a_viewer_during_the_linger_keeps_the_pull(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}", linger=3)
    first = FlvViewer(flv_url(edge)).start()
    await wait_until(lambda: got_video(first), 20, "the first viewer's video")
    pull = edge.edge.pulls[KEY]
    await first.close()
    await wait_until(lambda: KEY in edge.edge._timers, 5, "the linger to start")
    second = FlvViewer(flv_url(edge)).start()
    await wait_until(lambda: got_video(second), 10, "the second viewer's video")
    assert edge.edge.pulls.get(KEY) is pull and pull.connects == 1  # the same pull, never reconnected
    assert KEY not in edge.edge._timers
    await second.close()


async def test_viewers_resume_after_the_origin_restarts(make_server, procs, sample_flv, log_lines) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    origin = await start_app(origin_config(port))
    try:
        publisher = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/test"))
        edge = await make_edge(make_server, f"127.0.0.1:{port}")
        viewer = FlvViewer(flv_url(edge)).start()
        await wait_until(lambda: got_video(viewer), 20, "video through the edge")

        await origin.stop()  # the origin goes away (its publisher with it)
        publisher.kill()
        await wait_until(lambda: (s := edge.hub.get(KEY)) is not None and not s.live, 10, "the edge to notice")
        seen = len(viewer.tags)
        origin = await start_app(origin_config(port))
        await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/test"))
        # The same HTTP connection gets the new session's media (fresh headers, a keyframe).
        await wait_until(lambda: viewer.keyframes_after(seen) >= 1, 30, "video again on the same connection")
        assert viewer.error is None and not viewer.ended.is_set()
        assert len(origin_viewers(origin)) == 1
        downs = log_lines.events("edge-pull-down")
        assert 1 <= len(downs) <= 2, downs  # logged once per state change, not per retry
        await viewer.close()
    finally:
        await origin.stop()


async def test_first_origin_down_the_second_serves(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    dead = free_port()  # nothing listens there
    edge = await make_edge(make_server, f"127.0.0.1:{dead} 127.0.0.1:{origin.port('rtmp')}")
    viewer = FlvViewer(flv_url(edge)).start()
    await wait_until(lambda: got_video(viewer), 20, "video from the second origin")
    assert edge.edge.pulls[KEY].url.startswith(f"rtmp://127.0.0.1:{origin.port('rtmp')}/")
    await viewer.close()


async def test_flv_upstream(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('http')}", cluster="protocol flv;")
    assert await probe(procs, flv_url(edge)) == {"h264", "aac"}
    pull = edge.edge.pulls[KEY]
    assert pull.protocol == "flv" and pull.url == f"http://127.0.0.1:{origin.port('http')}/live/test.flv"
    assert len(origin_viewers(origin)) == 1 and origin_viewers(origin)[0].protocol == "flv"


async def test_hls_on_the_edge_starts_the_pull(make_server, procs, sample_flv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    edge = await make_edge(
        make_server, f"127.0.0.1:{origin.port('rtmp')}",
        f"hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {tmp_path / 'hls'}; }}")
    edge.edge.hls_hold = 2.0
    # No stream on the edge yet: the playlist request pulls it and is answered once a segment exists.
    assert await probe(procs, f"http://127.0.0.1:{edge.port('http')}/live/test.m3u8") == {"h264", "aac"}
    assert KEY in edge.edge.pulls and len(origin_viewers(origin)) == 1
    assert [c.protocol for c in edge.hub.clients.values() if c.kind == VIEWER] == ["hls"]
    # The HLS session holds the pull; once it has expired (forced here: 30 s without a playlist request) and the
    # request's hold is over, the pull stops.
    await asyncio.sleep(0.5)
    assert KEY in edge.edge.pulls
    edge.hls.sessions.expire(now=time.monotonic() + 1000)
    await wait_until(lambda: not edge.edge.pulls and not origin_viewers(origin), 10, "the pull to stop")


async def test_a_publisher_on_the_edge_goes_to_the_origin(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    origin = await make_server()
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{edge.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := origin.hub.get(KEY)) is not None and s.live and s.gop.gop, 20,
                     "the origin to get the edge's publisher")
    assert await probe(procs, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test") == {"h264", "aac"}
    # Viewers on the edge play the local publisher; no pull starts for a stream published here.
    assert await probe(procs, flv_url(edge)) == {"h264", "aac"}
    assert not edge.edge.pulls
    publisher = origin.hub.get(KEY).publisher  # type: ignore[union-attr]
    assert publisher is not None and publisher.ip == "127.0.0.1"


async def test_a_local_publisher_takes_over_a_pull_and_the_pull_comes_back(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    # (takeover off at the origin: the edge forwards its local publisher there (edge publish), which with
    # takeover on would close the origin's own publisher, and the pull that comes back would find no media.)
    origin = await make_server(vhost="publish { takeover off; }")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}")
    viewer = FlvViewer(flv_url(edge)).start()
    await wait_until(lambda: got_video(viewer), 20, "video through the pull")
    # A local publisher of the same stream on the edge: it takes the stream, the pull ends.
    local = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{edge.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := edge.hub.get(KEY)) is not None and s.live
                     and not isinstance(s.publisher, EdgePull), 20, "the local publisher to take the stream")
    await wait_until(lambda: not edge.edge.pulls, 5, "the pull to end")
    # The local publisher leaves: the viewer still wants the stream, the pull comes back.
    seen = len(viewer.tags)
    local.kill()
    await wait_until(lambda: KEY in edge.edge.pulls and edge.edge.pulls[KEY].state == "up", 20, "the pull back")
    await wait_until(lambda: viewer.keyframes_after(seen) >= 1, 20, "video through the new pull")
    await viewer.close()


# ------------------------------------------------------------------------------------------- randomized


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_viewers_around_the_linger(make_server, procs, sample_flv, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Viewers arrive and leave at random around the linger and the pull's start and end. Checked all along
    (a sampler every few ms): never two pulls of the stream connected to the origin, and at every quiet point the
    origin sees at most one; with no viewer for longer than the linger, no pull is left anywhere."""
    rng = random.Random(seed)
    linger = 0.4
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := origin.hub.get(KEY)) is not None and s.live and s.gop.gop, 20, "origin live")
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}", linger=linger)
    violations: list[str] = []

    def connected_pulls() -> list[EdgePull]:
        pulls = [c for c in edge.hub.clients.values() if isinstance(c, EdgePull)]
        return [p for p in pulls if p._client is not None and not p._client.closed]

    async def sample() -> None:
        while True:
            if len(connected_pulls()) > 1:
                violations.append(f"{len(connected_pulls())} pulls connected at once")
            if len(edge.edge.pulls) > 1:
                violations.append("two pulls registered for one stream")
            await asyncio.sleep(0.003)

    sampler = asyncio.create_task(sample())
    open_viewers: list[tuple[FlvViewer, float]] = []
    long_lived = long_lived_ok = 0  # viewers that stayed over 4 s, and those of them that got video
    try:
        for _ in range(40):
            op = rng.random()
            if op < 0.45 or not open_viewers:
                open_viewers.append((FlvViewer(flv_url(edge)).start(), time.monotonic()))
            elif op < 0.85:
                viewer, since = open_viewers.pop(rng.randrange(len(open_viewers)))
                if time.monotonic() - since > 4:
                    long_lived += 1
                    long_lived_ok += got_video(viewer)
                await viewer.close()
            else:  # everyone leaves; sometimes a new viewer comes right around the linger's end
                for viewer, _ in open_viewers:
                    await viewer.close()
                open_viewers.clear()
                await asyncio.sleep(linger * rng.choice([0.5, 0.95, 1.05, 2.0]))
            await asyncio.sleep(rng.uniform(0, linger * 1.5))
            await wait_until(lambda: len(origin_viewers(origin)) <= 1, 3, "at most one pull at the origin")
        for viewer, since in open_viewers:
            if time.monotonic() - since > 4:
                long_lived += 1
                long_lived_ok += got_video(viewer)
            await viewer.close()
        assert long_lived_ok == long_lived, f"{long_lived - long_lived_ok} of {long_lived} viewers got no video"
        # Nobody left: after the linger no pull remains, on either side.
        await wait_until(lambda: not edge.edge.pulls and not connected_pulls(), linger + 5, "the pull to stop")
        await wait_until(lambda: not origin_viewers(origin), 5, "the origin to see the pull leave")
        assert not violations, violations[:5]
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


# ------------------------------------------------------------------------------------------- units


def test_origin_urls_as_srs_builds_them() -> None:
    cluster = ClusterConfig(mode="remote", origin=("10.0.0.1", "[::1]:1940"))
    assert split_origin("10.0.0.1", "rtmp") == ("10.0.0.1", 1935)
    assert split_origin("10.0.0.1", "flv") == ("10.0.0.1", 80)
    assert split_origin("[::1]:1940", "rtmp") == ("::1", 1940)
    key = StreamKey("v.example", "live", "cam")
    assert origin_url(cluster, "10.0.0.1", key, "?token=x", "rtmp") == \
        "rtmp://10.0.0.1:1935/live/cam?token=x&vhost=v.example"
    assert origin_url(cluster, "[::1]:1940", KEY, "", "http") == "http://[::1]:1940/live/test.flv"
    other = ClusterConfig(mode="remote", origin=("o",), vhost="origin.vhost")
    assert origin_url(other, "o", KEY, "", "rtmp") == "rtmp://o:1935/live/test?vhost=origin.vhost"


def test_cluster_config_forms() -> None:
    config = parse_text("vhost a { cluster { mode remote; origin 127.0.0.1:1936 h2 [::1]:5; protocol FLV; } }"
                        " vhost b { mode remote; origin x; }", "<t>").config
    a = config.vhost("a").cluster
    assert a.edge and a.origin == ("127.0.0.1:1936", "h2", "[::1]:5") and a.protocol == "flv" and a.linger == 5
    assert config.vhost("b").cluster.edge  # SRS 1/2's vhost-level spelling
    assert not config.vhost("__defaultVhost__").cluster.edge
    with pytest.raises(Exception):
        parse_text("vhost a { cluster { mode remote; origin rtmp://x/live; } }", "<t>")


def test_metadata_of_data_messages() -> None:
    assert metadata_of(amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"width": 640.0}))) == \
        {"width": 640.0}
    assert metadata_of(amf0.encode("onMetaData", {"height": 360.0})) == {"height": 360.0}
    assert metadata_of(amf0.encode("onCuePoint", {"x": 1.0})) is None
    assert metadata_of(b"\x02\x00\x05") is None  # truncated: no exception



async def test_hooks_on_the_edge(make_server, procs, sample_flv, hook_server) -> None:  # type: ignore[no-untyped-def]
    """The edge's viewers go through its on_play/on_stop; its pull sends no on_publish nor on_unpublish (as SRS:
    the pull is not a client). A client's publish on the edge does send them."""
    origin = await make_server()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{origin.port('rtmp')}/live/test"))
    hooks = " ".join(f"{h} {hook_server.url(h)};" for h in ("on_publish", "on_unpublish", "on_play", "on_stop"))
    edge = await make_edge(make_server, f"127.0.0.1:{origin.port('rtmp')}", f"http_hooks {{ enabled on; {hooks} }}",
                           linger=0.2)
    viewer = FlvViewer(flv_url(edge)).start()
    await wait_until(lambda: got_video(viewer), 20, "video through the edge")
    play = await hook_server.wait_call("on_play")
    assert play.payload["stream"] == "test"
    await viewer.close()
    await hook_server.wait_call("on_stop")
    await wait_until(lambda: edge.hub.get(KEY) is None, 10, "the pull to end and the stream to go")
    assert not hook_server.calls_for("on_publish") and not hook_server.calls_for("on_unpublish")
    # A client publishing on the edge: both hooks, once each.
    local = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{edge.port('rtmp')}/live/mine"))
    await hook_server.wait_call("on_publish")
    local.kill()
    await hook_server.wait_call("on_unpublish")
    assert [c.payload["stream"] for c in hook_server.calls_for("on_unpublish")] == ["mine"]
