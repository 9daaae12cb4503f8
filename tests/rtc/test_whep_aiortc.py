"""WHEP with aiortc as the player: a stream published over RTMP by real ffmpeg plays over WebRTC."""

from __future__ import annotations

import pytest

from tests.helpers import ffmpeg_publish_args, wait_until
from tests.rtc.helpers import RtcClient, post_sdp

pytestmark = pytest.mark.e2e


async def test_whep_plays_an_rtmp_stream(rtc_server, rtc_clients, procs, sample_flv):  # type: ignore[no-untyped-def]
    app = rtc_server
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    client = RtcClient()
    rtc_clients.append(client)
    assert await client.play(app.port("api")) == 201, getattr(client, "error", "")
    video = await client.frames("video", 30)
    assert {(f.width, f.height) for f in video} == {(320, 240)}
    audio = await client.frames("audio", 20)
    assert audio[0].sample_rate == 48000
    (viewer,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    assert viewer.kind == "viewer" and viewer.send_bytes > 0
    # a second viewer shares the stream's source: one Annex B conversion and one Opus encoder for both
    stream = next(iter(app.hub.streams.values()))
    source, worker = stream.extra["rtc"], stream.extra["rtc"].worker
    second = RtcClient()
    rtc_clients.append(second)
    assert await second.play(app.port("api")) == 201
    await second.frames("video", 5)
    await second.frames("audio", 5)
    assert stream.extra["rtc"] is source and source.worker is worker and len(source.viewers) == 2
    assert [o.name for o in stream.outputs].count("rtc") == 1
    await post_sdp(app.port("api"), second.location, b"", method="DELETE")
    await wait_until(lambda: len(source.viewers) == 1, 5, "the second viewer to go")
    assert stream.extra["rtc"] is source and source.worker is worker
    status, _, _ = await post_sdp(app.port("api"), client.location, b"", method="DELETE")
    assert status == 200
    await wait_until(lambda: not any(c.protocol == "rtc" for c in app.hub.clients.values()), 5, "the viewer to go")
    assert worker.closed  # no WebRTC viewer left: no more Opus for this stream
    assert "rtc" not in stream.extra and not [o for o in stream.outputs if o.name == "rtc"]


@pytest.fixture(scope="session")
def bframe_flv(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """4 s of H.264 main profile with B-frames (x264 -bf 2, b-pyramid) + AAC, made once per session."""
    import subprocess

    from tests.helpers import FFMPEG, require_tool

    path = tmp_path_factory.mktemp("rtc-media") / "bframes.flv"
    subprocess.run([require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-bf", "2",
                    "-x264-params", "b-pyramid=normal:b-adapt=0", "-g", "25", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-f", "flv", str(path)], check=True, timeout=120)
    return path


async def test_whep_drops_b_frames(rtc_server, rtc_clients, procs, bframe_flv, caplog):  # type: ignore[no-untyped-def]
    """SRS's bframe discard (keep_bframe off): B-frames are not sent, the I and P frames decode cleanly."""
    import logging

    app = rtc_server
    await procs.start(*ffmpeg_publish_args(bframe_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    client = RtcClient()
    rtc_clients.append(client)
    with caplog.at_level(logging.WARNING, logger="aiortc"):
        assert await client.play(app.port("api")) == 201
        video = await client.frames("video", 15)
    assert {(f.width, f.height) for f in video} == {(320, 240)}
    stream = next(iter(app.hub.streams.values()))
    source = stream.extra["rtc"]
    assert source.dropped_b > 0 and source.frames > 0
    assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]
