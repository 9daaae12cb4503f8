"""HTTP callbacks and security rules end to end: real ffmpeg/ffprobe clients, a real hook server."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tests.helpers import FlvViewer, ffmpeg_publish_args, require_tool, wait_until
from tests.hooks.hook_server import HANG, REJECT_CODE1, HookServer, unused_port

pytestmark = pytest.mark.e2e

ALL_HOOKS = ("on_connect", "on_close", "on_publish", "on_unpublish", "on_play", "on_stop")


def hooks_block(hs: HookServer, timeout: float | None = None) -> str:
    lines = " ".join(f"{h} {hs.url(h)};" for h in ALL_HOOKS)
    return f"http_hooks {{ enabled on; {lines} }}"


async def hook_app(make_server, hs: HookServer, extra: str = "hooks_timeout 1;", vhost: str = ""):  # type: ignore[no-untyped-def]
    return await make_server(extra=extra, vhost=hooks_block(hs) + vhost)


async def test_publish_play_and_every_hook_payload(make_server, hook_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await hook_app(make_server, hook_server)
    rtmp = f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, rtmp + "?token=abc"))
    await wait_until(lambda: (s := app.hub.streams) and next(iter(s.values())).live, 20, "the publish")
    call = await hook_server.wait_call("on_publish")
    p = call.payload
    assert p["action"] == "on_publish" and p["app"] == "live" and p["stream"] == "test"
    assert p["vhost"] == "__defaultVhost__" and p["ip"] == "127.0.0.1" and p["param"] == "?token=abc"
    assert p["tcUrl"].startswith("rtmp://127.0.0.1:") and p["stream_url"] == "/live/test"
    assert p["client_id"] == next(iter(app.hub.streams.values())).publisher.cid
    assert p["server_id"] and p["service_id"]
    connect = (await hook_server.wait_call("on_connect")).payload
    assert connect["action"] == "on_connect" and connect["client_id"] == p["client_id"]

    code, _, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_streams", rtmp + "?k=v", timeout=30)
    assert code == 0, err.decode()
    play = (await hook_server.wait_call("on_play")).payload
    assert play["action"] == "on_play" and play["param"] == "?k=v" and play["stream"] == "test"
    stop = (await hook_server.wait_call("on_stop")).payload
    assert stop["client_id"] == play["client_id"]

    viewer = FlvViewer(f"http://127.0.0.1:{app.port('http')}/live/test.flv?t=1").start()
    await wait_until(lambda: viewer.keyframes_after(0), 20, "the HTTP-FLV viewer to play")
    assert len(hook_server.calls_for("on_play")) == 2
    await viewer.close()
    await hook_server.wait_call("on_stop", 2)

    pub.kill()
    unpublish = (await hook_server.wait_call("on_unpublish")).payload
    assert unpublish["client_id"] == p["client_id"] and unpublish["action"] == "on_unpublish"
    await wait_until(lambda: not app.hub.streams, 10, "the stream to be gone")
    await hook_server.wait_call("on_close", 2)  # the RTMP connections: publisher and ffprobe
    # exactly once each
    await asyncio.sleep(0)
    assert len(hook_server.calls_for("on_unpublish")) == 1
    assert len(hook_server.calls_for("on_stop")) == 2
    closes = [c.payload["client_id"] for c in hook_server.calls_for("on_close")]
    assert len(closes) == len(set(closes))


async def test_rejected_publish_and_play(make_server, hook_server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    hook_server.set_answer(REJECT_CODE1, stream="secret", hook="on_publish")
    hook_server.set_answer(REJECT_CODE1, stream="noplay", hook="on_play")
    app = await hook_app(make_server, hook_server)
    base = f"rtmp://127.0.0.1:{app.port('rtmp')}/live"
    code, _, _ = await procs.run(*ffmpeg_publish_args(sample_flv, base + "/secret", loop=False), timeout=30)
    assert code != 0
    assert "on_publish refused" in caplog.text and "code 1" in caplog.text
    assert not app.hub.streams  # the claim was released

    pub = await procs.start(*ffmpeg_publish_args(sample_flv, base + "/noplay"))
    await wait_until(lambda: app.hub.streams and next(iter(app.hub.streams.values())).live, 20, "the publish")
    code, _, _ = await procs.run(require_tool("ffprobe"), "-v", "error", base + "/noplay", timeout=30)
    assert code != 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('http')}/live/noplay.flv") as resp:
            assert resp.status == 403
    stream = next(iter(app.hub.streams.values()))
    await wait_until(lambda: not stream.viewers, 10, "refused viewers to be gone")
    pub.kill()
    await wait_until(lambda: not app.hub.streams, 10, "everything released")


async def test_slow_and_down_hook_servers_reject_without_blocking_others(make_server, hook_server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    hook_server.set_answer(HANG, stream="slow", hook="on_publish")
    app = await hook_app(make_server, hook_server)  # hooks_timeout 1
    base = f"rtmp://127.0.0.1:{app.port('rtmp')}/live"
    slow = await procs.start(*ffmpeg_publish_args(sample_flv, base + "/slow"))
    await hook_server.wait_in_flight(1)
    # Meanwhile another stream publishes and plays normally.
    ok = await procs.start(*ffmpeg_publish_args(sample_flv, base + "/ok"))
    await wait_until(lambda: any(s.key.stream == "ok" and s.live for s in app.hub.streams.values()), 20, "ok live")
    await asyncio.wait_for(slow.wait(), 20)
    assert slow.returncode != 0
    assert "timeout after 1s" in caplog.text
    assert not any(s.key.stream == "slow" for s in app.hub.streams.values())
    hook_server.release()
    ok.kill()

    down = await make_server(extra="hooks_timeout 1;",
                             vhost=f"http_hooks {{ enabled on; on_publish http://127.0.0.1:{unused_port()}/x; }}")
    code, _, _ = await procs.run(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{down.port('rtmp')}/live/a",
                                                      loop=False), timeout=30)
    assert code != 0
    assert "cannot connect to 127.0.0.1" in caplog.text
    assert not down.hub.streams


async def test_clients_vanishing_during_hooks_leave_nothing_behind(make_server, hook_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    hook_server.set_answer(HANG, stream="pending", hook="on_publish")
    hook_server.set_answer(HANG, stream="live", hook="on_play")
    app = await hook_app(make_server, hook_server, extra="hooks_timeout 30;")
    base = f"rtmp://127.0.0.1:{app.port('rtmp')}/live"
    pending = await procs.start(*ffmpeg_publish_args(sample_flv, base + "/pending"))
    await hook_server.wait_in_flight(1)
    stream = next(iter(app.hub.streams.values()))
    assert stream.state.value == "starting"  # the claim is held while the hook is awaited
    pending.kill()  # the publisher vanishes during on_publish
    await wait_until(lambda: not app.hub.streams, 10, "the pending claim to be released")

    pub = await procs.start(*ffmpeg_publish_args(sample_flv, base + "/live"))
    await wait_until(lambda: app.hub.streams and next(iter(app.hub.streams.values())).live, 20, "the publish")
    live = next(iter(app.hub.streams.values()))
    viewer = FlvViewer(f"http://127.0.0.1:{app.port('http')}/live/live.flv").start()
    await wait_until(lambda: len(live.viewers) == 1, 10, "the viewer to be registered during on_play")
    await viewer.close()  # it vanishes during on_play
    await wait_until(lambda: not live.viewers, 10, "the viewer to be gone")
    pub.kill()
    await wait_until(lambda: not app.hub.streams, 10, "nothing left")
    hook_server.release()


async def test_security_deny_play_end_to_end(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="security { enabled on; allow publish 127.0.0.1; deny play 127.0.0.0/8; allow play all; }")
    base = f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, base))
    await wait_until(lambda: app.hub.streams and next(iter(app.hub.streams.values())).live, 20, "the publish")
    code, _, _ = await procs.run(require_tool("ffprobe"), "-v", "error", base, timeout=30)
    assert code != 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('http')}/live/test.flv") as resp:
            assert resp.status == 403
    assert not next(iter(app.hub.streams.values())).viewers
    pub.kill()


async def test_tokens_are_masked_in_logs(make_server, hook_server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="livesrv")
    app = await hook_app(make_server, hook_server)
    rtmp = f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test?token=supersecret"
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, rtmp))
    await hook_server.wait_call("on_publish")
    await wait_until(lambda: app.hub.streams and next(iter(app.hub.streams.values())).live, 20, "the publish")
    pub.kill()
    await hook_server.wait_call("on_unpublish")
    assert "supersecret" not in caplog.text
    assert hook_server.calls_for("on_publish")[0].payload["param"] == "?token=supersecret"


async def test_hls_and_http_ts_viewers_pass_the_same_gates(make_server, hook_server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hook_server.set_answer(REJECT_CODE1, stream="test", hook="on_play")
    app = await hook_app(make_server, hook_server,
                         vhost=f" hls {{ enabled on; hls_fragment 1; hls_path {tmp_path}; }}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    m3u8 = tmp_path / "live" / "test.m3u8"
    await wait_until(lambda: m3u8.exists(), 20, "the playlist")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('http')}/live/test.m3u8") as resp:
            assert resp.status == 403  # after the hls_ctx redirect, on_play refused the new HLS viewer
        async with session.get(f"http://127.0.0.1:{app.port('http')}/live/test.ts") as resp:
            assert resp.status == 403
    plays = hook_server.calls_for("on_play")
    assert len(plays) == 2 and all(c.payload["stream"] == "test" for c in plays)
    stream = next(iter(app.hub.streams.values()))
    assert not stream.viewers


async def test_on_hls_for_every_segment(make_server, hook_server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost=f"hls {{ enabled on; hls_fragment 1; hls_path {tmp_path}; }} "
                                  f"http_hooks {{ enabled on; on_hls {hook_server.url('on_hls')}; }}")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test?k=v"))
    call = await hook_server.wait_call("on_hls", 2, timeout=20)
    p = call.payload
    assert p["action"] == "on_hls" and p["stream"] == "test" and p["param"] == "?k=v"
    assert p["seq_no"] == 1 and 0.5 < p["duration"] < 3
    assert p["file"].endswith("live/test-1.ts") and p["m3u8_url"] == "/live/test.m3u8"
    assert (tmp_path / "live" / "test-1.ts").exists()


async def test_stopping_the_server_still_sends_the_closing_hooks(hook_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    """A server that stops (SIGTERM's fast quit, or the end of a graceful one) with a publisher and a viewer
    connected: on_unpublish (awaited in the stream's drain, which shutdown lets finish, bounded), on_stop and
    on_close still reach the hook server."""
    from livesrv.app import App
    from tests.conftest import server_config

    hooks = " ".join(f"{h} {hook_server.url(h)};" for h in ("on_unpublish", "on_stop", "on_close"))
    app = App(server_config(vhost=f"http_hooks {{ enabled on; {hooks} }}"))
    await app.start()
    try:
        await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/down"))
        await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
        viewer = await procs.start(require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i",
                                   f"rtmp://127.0.0.1:{app.port('rtmp')}/live/down", "-f", "null", "-")
        await wait_until(lambda: len(app.hub.clients) == 2, 20, "the viewer to play")
    finally:
        await app.stop()
    assert [c.payload["stream"] for c in hook_server.calls_for("on_unpublish")] == ["down"]
    assert [c.payload["stream"] for c in hook_server.calls_for("on_stop")] == ["down"]
    assert len(hook_server.calls_for("on_close")) == 2  # the publisher's and the viewer's connections
    await asyncio.wait_for(viewer.wait(), 10)
