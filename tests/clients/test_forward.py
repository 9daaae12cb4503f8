"""Forward (``vhost { forward { ... } }``), with real servers: ffmpeg publishes to livesrv A, which pushes to
nginx-rtmp (started here on a free port) and to a second livesrv B; ffprobe plays the stream from both. B is
stopped and started again on the same port: the forward comes back by itself. The ``backend`` form asks a
real hook server. Units: the destination URL, the backend answer, the bounded queue.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from livesrv.app import App
from livesrv.clients.forward import Forwarder, backend_urls, destination_url
from livesrv.config import ForwardDestination, parse_text
from livesrv.hub.clients import FORWARDER, HookContext
from livesrv.hub.hub import Hub
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import Stream, StreamSettings
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from tests.helpers import free_port, Procs, can_connect, ffmpeg_publish_args, require_tool, wait_until
from tests.hooks.hook_server import Answer, HookServer

pytestmark = pytest.mark.e2e

NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")  # Debian's libnginx-mod-rtmp
#: Fast retries for tests (production: 1 s doubling to 30 s).
RETRY = (0.2, 1.0)




@pytest.fixture
async def nginx_rtmp(tmp_path: Path, procs: Procs) -> AsyncIterator[int]:
    """nginx with libnginx-mod-rtmp on a free port (``daemon off; master_process off;``, killed at teardown);
    yields its RTMP port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"  # (/usr/sbin is not on every PATH)
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed: run scripts/test, which installs nginx and libnginx-mod-rtmp")
    if not NGINX_RTMP_MODULE.exists():
        pytest.fail(f"{NGINX_RTMP_MODULE} missing: run scripts/test, which installs libnginx-mod-rtmp")
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{ live on; }}
    }}
}}
""")
    proc = await procs.start(nginx, "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf))
    deadline = asyncio.get_running_loop().time() + 20
    while not await can_connect(port):
        assert proc.returncode is None, f"nginx exited: {(work / 'error.log').read_text()[-2000:]}"
        assert asyncio.get_running_loop().time() < deadline, "nginx did not listen within 20 s"
        await asyncio.sleep(0.05)
    yield port
    proc.kill()


def plain_config(port: int, extra_vhost: str = "", extra: str = ""):  # -> Config
    result = parse_text(f"listen 127.0.0.1:{port}; {extra} vhost __defaultVhost__ {{ {extra_vhost} }}", "<b>")
    assert not result.warnings, result.warnings
    return result.config


async def start_b(port: int) -> App:
    app = App(plain_config(port))
    await app.start()
    return app


async def probe(procs: Procs, url: str) -> set[str]:
    """The codecs ffprobe finds when it plays ``url``."""
    code, out, err = await procs.run(
        require_tool("ffprobe"), "-v", "error", "-rw_timeout", "15000000", "-show_entries", "stream=codec_name",
        "-of", "json", url, timeout=40)
    assert code == 0, err.decode()[-2000:]
    return {s["codec_name"] for s in json.loads(out)["streams"]}


def forwarders(app: App) -> list[Forwarder]:
    return [c for c in app.hub.clients.values() if c.kind == FORWARDER]  # type: ignore[misc]


async def api_clients(app: App) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('api')}/api/v1/clients") as resp:
            return (await resp.json())["clients"]


# ------------------------------------------------------------------------------------------- end to end


async def test_forward_to_nginx_and_livesrv_survives_a_destination_restart(
    make_server, nginx_rtmp, procs, sample_flv, log_lines  # type: ignore[no-untyped-def]
) -> None:
    b_port = free_port()
    b = await start_b(b_port)
    try:
        a = await make_server(vhost=f"forward {{ enabled on; destination 127.0.0.1:{nginx_rtmp} 127.0.0.1:{b_port}; }}")
        a.forward.retry = RETRY
        pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"))
        await wait_until(lambda: len(forwarders(a)) == 2 and all(f.state == "up" for f in forwarders(a)), 20,
                         "both forwards up")
        key = StreamKey("__defaultVhost__", "live", "test")
        await wait_until(lambda: (s := b.hub.get(key)) is not None and s.live and s.gop.gop, 20, "B to get the stream")
        assert await probe(procs, f"rtmp://127.0.0.1:{nginx_rtmp}/live/test") == {"h264", "aac"}
        assert await probe(procs, f"rtmp://127.0.0.1:{b_port}/live/test") == {"h264", "aac"}

        # The API lists both forwarders with their destination and counters.
        listed = [c for c in await api_clients(a) if c["kind"] == "forwarder"]
        assert sorted(c["destination"] for c in listed) == sorted(
            [f"rtmp://127.0.0.1:{nginx_rtmp}/live/test", f"rtmp://127.0.0.1:{b_port}/live/test"])
        assert all(c["send_bytes"] > 10_000 and c["type"] == "rtmp-forwarder" and c["name"] == "test"
                   and c["tcUrl"] == c["destination"] and c["state"] == "up" and c["connects"] == 1 for c in listed)

        # B goes away: its forward goes down (logged once however many retries), nginx's goes on untouched.
        to_b = next(f for f in forwarders(a) if f.target.port == b_port)
        to_nginx = next(f for f in forwarders(a) if f.target.port == nginx_rtmp)
        await b.stop()
        await wait_until(lambda: to_b.state == "down", 20, "the forward to B to go down")
        sent, tried = to_nginx.send_bytes, to_b.attempts
        await wait_until(lambda: to_b.attempts >= tried + 3, 20, "three more attempts to reach B")
        assert to_b.state == "down" and to_nginx.state == "up" and to_nginx.send_bytes > sent
        assert a.hub.get(key) is not None and a.hub.get(key).live  # type: ignore[union-attr]
        downs = [e for e in log_lines.events("forward-down") if e["client"] == to_b.cid]
        assert len(downs) == 1, downs

        # B comes back on the same port: the forward resumes by itself, same forwarder, a new connection.
        b = await start_b(b_port)
        await wait_until(lambda: to_b.state == "up" and to_b.connects == 2, 20, "the forward to B to come back")
        assert await probe(procs, f"rtmp://127.0.0.1:{b_port}/live/test") == {"h264", "aac"}
        ups = [e for e in log_lines.events("forward-up") if e["client"] == to_b.cid]
        assert len(ups) == 2

        # The publisher leaves: the forwards end and unregister; a republish starts new ones.
        pub.kill()
        await wait_until(lambda: not forwarders(a), 20, "the forwards to end")
        assert to_b.state == to_nginx.state == "stopped"
        await wait_until(lambda: b.hub.get(key) is None or not b.hub.get(key).live, 20, "B to see the unpublish")
        await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"))
        await wait_until(lambda: len(forwarders(a)) == 2 and all(f.state == "up" for f in forwarders(a)), 20,
                         "both forwards up again after the republish")
        assert {to_b, to_nginx}.isdisjoint(forwarders(a))
        await wait_until(lambda: (s := b.hub.get(key)) is not None and s.live, 20, "B to get the republished stream")
        assert not log_lines.events("output-detached") and not log_lines.events("drain-error")
    finally:
        await b.stop()


async def test_forward_kick_stops_one_destination_only(
    make_server, procs, sample_flv  # type: ignore[no-untyped-def]
) -> None:
    b = await make_server()
    dests = f"127.0.0.1:{b.port('rtmp')}/one 127.0.0.1:{b.port('rtmp')}/two/renamed"
    a = await make_server(vhost=f"forward {{ enabled on; destination {dests}; }}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/s?token=t"))
    await wait_until(lambda: len(forwarders(a)) == 2 and all(f.state == "up" for f in forwarders(a)), 20,
                     "both forwards up")
    one, two = StreamKey("__defaultVhost__", "one", "s"), StreamKey("__defaultVhost__", "two", "renamed")
    await wait_until(lambda: all((s := b.hub.get(k)) is not None and s.live for k in (one, two)), 20,
                     "B to get both streams")
    assert b.hub.get(one).publisher.context.param == "?token=t"  # type: ignore[union-attr]
    victim = next(f for f in forwarders(a) if f.target.app == "one")
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"http://127.0.0.1:{a.port('api')}/api/v1/clients/{victim.cid}") as resp:
            assert resp.status == 200
    await wait_until(lambda: victim not in forwarders(a) and victim.state == "stopped", 10, "the kicked forward to end")
    await wait_until(lambda: (s := b.hub.get(one)) is None or not s.live, 10, "B to see that stream unpublished")
    assert len(forwarders(a)) == 1 and b.hub.get(two).live  # type: ignore[union-attr]
    assert a.hub.get(StreamKey("__defaultVhost__", "live", "s")).live  # type: ignore[union-attr]


async def test_backend_urls_are_pushed_to(
    make_server, hook_server: HookServer, procs, sample_flv  # type: ignore[no-untyped-def]
) -> None:
    b = await make_server()
    target = f"rtmp://127.0.0.1:{b.port('rtmp')}/other/renamed?k=v"
    hook_server.set_answer(Answer(200, json.dumps({"code": 0, "data": {"urls": ["", target]}}).encode()),
                           hook="on_forward")
    backend = hook_server.url("on_forward")
    a = await make_server(vhost=f"forward {{ enabled on; destination 127.0.0.1:1; backend {backend}; }}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test?token=abc"))
    call = await hook_server.wait_call("on_forward")
    publisher = a.hub.get(StreamKey("__defaultVhost__", "live", "test")).publisher  # type: ignore[union-attr]
    assert list(call.payload) == ["action", "server_id", "service_id", "client_id", "ip", "vhost", "app", "tcUrl",
                                  "stream", "param"]
    assert call.payload["action"] == "on_forward" and call.payload["client_id"] == publisher.cid
    assert (call.payload["app"], call.payload["stream"], call.payload["param"]) == ("live", "test", "?token=abc")
    assert call.payload["tcUrl"] == f"rtmp://127.0.0.1:{a.port('rtmp')}/live"
    # Only the backend's URL: the destination is ignored when a backend is set (as SRS).
    await wait_until(lambda: len(forwarders(a)) == 1 and forwarders(a)[0].state == "up", 20, "the forward up")
    assert forwarders(a)[0].destination == f"rtmp://127.0.0.1:{b.port('rtmp')}/other/renamed?k=***"
    assert await probe(procs, f"rtmp://127.0.0.1:{b.port('rtmp')}/other/renamed") == {"h264", "aac"}


@pytest.mark.parametrize("answer", ["code1", "status500", "no_urls", "bad_url", "hang"])
async def test_failing_backend_leaves_the_publish_alone(
    make_server, hook_server: HookServer, procs, sample_flv, log_lines, answer: str  # type: ignore[no-untyped-def]
) -> None:
    """livesrv differs from SRS here: the publish goes on, without forwards (SRS refuses it, and before #4631's
    fix left the stream busy). It is never held by the backend: it is live before the backend answers."""
    hook_server.answers["no_urls"] = Answer(200, b'{"code":0,"data":{}}')
    hook_server.answers["bad_url"] = Answer(200, b'{"code":0,"data":{"urls":["rtmp://127.0.0.1:1/a/b","http://x/y"]}}')
    a = await make_server(extra="hooks_timeout 1;",
                          vhost=f"forward {{ enabled on; backend {hook_server.url('on_forward', answer=answer)}; }}")
    key = StreamKey("__defaultVhost__", "live", "test")
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"))
    await hook_server.wait_call("on_forward")
    await wait_until(lambda: (s := a.hub.get(key)) is not None and s.live, 20, "the stream live")
    if answer == "hang":
        assert hook_server.in_flight == 1  # live while the backend has not answered
    await wait_until(lambda: log_lines.events("forward-backend-failed"), 10, "the backend failure to be logged")
    assert not forwarders(a) and a.hub.get(key).live  # type: ignore[union-attr]
    assert await probe(procs, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test") == {"h264", "aac"}
    # Nothing is left behind: the publisher leaves and comes back at once, the stream is not busy.
    pub.kill()
    await wait_until(lambda: (s := a.hub.get(key)) is None or not s.live, 10, "the unpublish")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := a.hub.get(key)) is not None and s.live, 20, "the republish")
    await hook_server.wait_call("on_forward", 2)
    assert not forwarders(a)
    assert not log_lines.events("output-detached") and not log_lines.events("drain-error")


async def test_unpublish_while_the_backend_thinks(
    make_server, hook_server: HookServer, procs, sample_flv  # type: ignore[no-untyped-def]
) -> None:
    """The period ends before the backend answers: no forward starts afterwards."""
    b = await make_server()
    hook_server.answers["late"] = Answer(
        200, json.dumps({"code": 0, "data": {"urls": [f"rtmp://127.0.0.1:{b.port('rtmp')}/live/x"]}}).encode(),
        hold=True)
    a = await make_server(vhost=f"forward {{ enabled on; backend {hook_server.url('on_forward', answer='late')}; }}")
    key = StreamKey("__defaultVhost__", "live", "test")
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"))
    await hook_server.wait_in_flight(1)
    await wait_until(lambda: (s := a.hub.get(key)) is not None and s.live, 20, "live while the backend thinks")
    pub.kill()
    await wait_until(lambda: a.hub.get(key) is None, 10, "the stream to be collected")
    hook_server.release()
    await asyncio.sleep(0.3)  # the (cancelled) answer would have started a forward by now
    assert not forwarders(a) and b.hub.get(StreamKey("__defaultVhost__", "live", "x")) is None


# ------------------------------------------------------------------------------------------------- units


def test_destination_url_is_srs_s() -> None:
    ctx = HookContext("c1", "1.2.3.4", "__defaultVhost__", "live", "s", "?token=x", "rtmp://h/live")
    assert destination_url(ForwardDestination("10.0.0.1", 1935), ctx) == "rtmp://10.0.0.1:1935/live/s?token=x"
    assert destination_url(ForwardDestination("::1", 19350, "app2"), ctx) == "rtmp://[::1]:19350/app2/s?token=x"
    other = HookContext("c1", "1.2.3.4", "v.example.com", "live", "s", "", "rtmp://v.example.com/live")
    assert destination_url(ForwardDestination("h", 1935, "a", "b"), other) == "rtmp://h:1935/a/b?vhost=v.example.com"


@pytest.mark.parametrize("answer,expected", [
    ({"code": 0, "data": {"urls": []}}, []),
    ({"code": 0, "data": {"urls": ["", "rtmp://h/a/b"]}}, ["rtmp://h/a/b"]),
    ({"code": 0, "data": {"urls": ["rtmp://h/a/b", "rtmp://h"]}}, ValueError),  # all or nothing
    ({"code": 0, "data": {"urls": [1]}}, ValueError),
    ({"code": 0, "data": {}}, ValueError),
    ({"code": 0}, ValueError),
    (0, ValueError),
    ({"code": 0, "data": {"urls": ["rtmp://h/a/b"] * 65}}, ValueError),
])
def test_backend_answer(answer, expected) -> None:  # type: ignore[no-untyped-def]
    if expected is ValueError:
        with pytest.raises(ValueError):
            backend_urls(answer)
    else:
        assert backend_urls(answer) == expected


def test_a_slow_destination_costs_a_bounded_queue_and_resumes_at_a_keyframe() -> None:
    stream = Stream(StreamKey("__defaultVhost__", "live", "s"), StreamSettings())
    ctx = HookContext("p", "1.2.3.4", "__defaultVhost__", "live", "s")
    fwd = Forwarder(Hub(), stream, "rtmp://127.0.0.1:1/live/s", ctx, max_queue_bytes=10_000)
    stream.has_video = True
    header = MediaPacket(VIDEO, 0, b"\x17\x00" + b"h" * 10, True, True)
    stream.gop.add(header)
    fwd._sending = True  # as when connected
    for i in range(100):
        fwd.push(MediaPacket(VIDEO, i * 40, b"\x27\x01" + b"x" * 1000))
        assert fwd._queued <= 10_000 + 1002
    assert fwd.dropped > 0 and fwd._need_keyframe
    fwd.push(MediaPacket(AUDIO, 4000, b"\xaf\x01aa"))  # not a random access point of a video stream
    assert not fwd._queue
    key = MediaPacket(VIDEO, 4040, b"\x17\x01" + b"k" * 100, True)
    fwd.push(key)
    assert [p.payload for p in fwd._queue] == [header.payload, key.payload]  # fresh headers, then the keyframe
    assert fwd._queue[0].timestamp == 4040


async def test_takeover_moves_the_forward_to_the_new_publisher(
    make_server, procs, sample_flv, log_lines  # type: ignore[no-untyped-def]
) -> None:
    """A second publisher takes the stream over: the first period's forward ends, the new one's takes its
    place at the destination (which may refuse it until the old connection is gone: then it retries)."""
    b = await make_server()
    a = await make_server(vhost=f"forward {{ enabled on; destination 127.0.0.1:{b.port('rtmp')}; }}")
    a.forward.retry = RETRY
    url = f"rtmp://127.0.0.1:{a.port('rtmp')}/live/test"
    await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await wait_until(lambda: len(forwarders(a)) == 1 and forwarders(a)[0].state == "up", 20, "the forward up")
    first = forwarders(a)[0]
    stream = a.hub.get(StreamKey("__defaultVhost__", "live", "test"))
    assert stream is not None
    await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await wait_until(lambda: stream.generation == 2 and stream.live, 20, "the takeover")
    await wait_until(lambda: first.state == "stopped" and len(forwarders(a)) == 1
                     and forwarders(a)[0].state == "up" and forwarders(a)[0].generation == 2, 20,
                     "the new period's forward up, the old one gone")
    key = StreamKey("__defaultVhost__", "live", "test")
    await wait_until(lambda: (s := b.hub.get(key)) is not None and s.live and s.gop.gop, 20, "B to get the new period")
    assert not log_lines.events("output-detached") and not log_lines.events("drain-error")


async def test_priming_sends_headers_and_the_cached_gop_first() -> None:
    """On each (re)connect the destination gets metadata, sequence headers and the cached GOP, in order."""

    class Recorder:
        closed = False
        error = None

        def __init__(self) -> None:
            self.sent: list[tuple[str, int, bytes]] = []

        def send_metadata(self, metadata: dict) -> None:
            self.sent.append(("meta", 0, b""))

        def send_media(self, kind: int, ts: int, payload: bytes) -> None:
            self.sent.append(("media", ts, payload))

        async def drain(self, *, timeout: float | None = None) -> None:
            raise asyncio.CancelledError  # stop after the first batch

    stream = Stream(StreamKey("__defaultVhost__", "live", "s"), StreamSettings())
    stream.metadata = {"width": 320}
    stream.has_video = True
    vh, ah = MediaPacket(VIDEO, 0, b"\x17\x00vh", True, True), MediaPacket(AUDIO, 0, b"\xaf\x00ah", False, True)
    gop = [MediaPacket(VIDEO, 1000, b"\x17\x01k", True), MediaPacket(AUDIO, 1010, b"\xaf\x01a"),
           MediaPacket(VIDEO, 1040, b"\x27\x01p")]
    for pkt in (vh, ah, *gop):
        stream.gop.add(pkt)
    fwd = Forwarder(Hub(), stream, "rtmp://127.0.0.1:1/live/s", HookContext("p", "1.2.3.4", "__defaultVhost__",
                                                                               "live", "s"))
    rec = Recorder()
    with pytest.raises(asyncio.CancelledError):
        await fwd._send(rec)  # type: ignore[arg-type]
    assert rec.sent == [("meta", 0, b""), ("media", 1000, vh.payload), ("media", 1000, ah.payload),
                        *[("media", p.timestamp, p.payload) for p in gop]]
    assert fwd._queued == 0 and not fwd._need_keyframe
