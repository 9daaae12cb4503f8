"""Streams with only video or only audio (issue: FLV header flags from the real tracks).

Real ffmpeg publishes ``-an`` and ``-vn`` streams; real ffprobe must read each over HTTP-FLV within seconds with
exactly its one track (it waits for ever for a track the FLV header announces and never comes), also when it
connected before the publisher; RTMP, HTTP-TS and HLS viewers get the one track too.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from livesrv.codec import flv
from livesrv.hub.keys import StreamKey
from tests.helpers import FFMPEG, FlvViewer, Procs, ffmpeg_publish_args, require_tool, wait_until
from tests.servers.rtmp_client import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, RTMPClient, aac_frame, inter_frame, keyframe

pytestmark = pytest.mark.e2e

KEY = StreamKey("__defaultVhost__", "live", "test")
VIDEO_ONLY = 0x01
AUDIO_ONLY = 0x04
BOTH = 0x05


def _strip(src: Path, dst: Path, drop: str) -> Path:
    subprocess.run([require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy",
                    drop, "-f", "flv", str(dst)], check=True, timeout=60)
    return dst


@pytest.fixture(scope="session")
def video_only_flv(sample_flv: Path) -> Path:
    return _strip(sample_flv, sample_flv.with_name("video-only.flv"), "-an")


@pytest.fixture(scope="session")
def audio_only_flv(sample_flv: Path) -> Path:
    return _strip(sample_flv, sample_flv.with_name("audio-only.flv"), "-vn")


async def ffprobe_types(procs: Procs, url: str, timeout: float = 20) -> list[str]:
    """The codec types ffprobe finds in a live URL; fails when it does not answer within ``timeout``."""
    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type",
                                     "-of", "json", url, timeout=timeout)
    assert code == 0, err.decode(errors="replace")
    return sorted(s["codec_type"] for s in json.loads(out)["streams"])


def flv_url(app: Any, ext: str = "flv") -> str:
    return f"http://127.0.0.1:{app.port('http')}/live/test.{ext}"


async def publish(app: Any, procs: Procs, src: Path) -> None:
    await procs.start(*ffmpeg_publish_args(src, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: (s := app.hub.get(KEY)) is not None and s.live and s.gop.gop, 20, "the stream to go live")


def kinds(viewer: FlvViewer) -> set[int]:
    return {t.tag_type for t in viewer.tags}


@pytest.mark.parametrize("which,flags,types", [("video", VIDEO_ONLY, ["video"]), ("audio", AUDIO_ONLY, ["audio"])])
async def test_single_track_stream_plays_over_http_flv(make_server, procs, video_only_flv, audio_only_flv,  # type: ignore[no-untyped-def]
                                                       which: str, flags: int, types: list[str]) -> None:
    app = await make_server()
    await publish(app, procs, video_only_flv if which == "video" else audio_only_flv)
    assert await ffprobe_types(procs, flv_url(app)) == types
    viewer = FlvViewer(flv_url(app)).start()
    await wait_until(lambda: len(viewer.tags) >= 10, 15, "tags at the viewer")
    assert viewer.raw[:3] == b"FLV" and viewer.raw[4] == flags
    assert kinds(viewer) == {flv.SCRIPT, flv.VIDEO if which == "video" else flv.AUDIO}
    await viewer.close()


@pytest.mark.parametrize("which,types", [("video", ["video"]), ("audio", ["audio"])])
async def test_viewer_before_publisher_gets_the_header_with_the_first_media(make_server, procs, video_only_flv,  # type: ignore[no-untyped-def]
                                                                            audio_only_flv, which: str,
                                                                            types: list[str]) -> None:
    app = await make_server()
    viewer = FlvViewer(flv_url(app)).start()
    ws_viewer = FlvViewer(flv_url(app), ws=True).start()
    probe = asyncio.ensure_future(ffprobe_types(procs, flv_url(app), timeout=40))
    await wait_until(lambda: (s := app.hub.get(KEY)) is not None and len(s.viewers) == 3, 15, "three waiting viewers")
    assert viewer.status == 200 and not viewer.raw  # nothing is known yet: no header
    await publish(app, procs, video_only_flv if which == "video" else audio_only_flv)
    assert await asyncio.wait_for(probe, 40) == types
    flags = VIDEO_ONLY if which == "video" else AUDIO_ONLY
    for v in (viewer, ws_viewer):
        await wait_until(lambda v=v: len(v.tags) >= 5, 15, "tags at the waiting viewer")
        assert v.raw[4] == flags
    await viewer.close()
    await ws_viewer.close()


async def test_has_audio_off_gives_a_video_only_flv(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="http_remux { enabled on; has_audio off; }")
    await publish(app, procs, sample_flv)
    viewer = FlvViewer(flv_url(app)).start()
    await wait_until(lambda: viewer.keyframes_after(0) >= 2, 15, "two keyframes at the viewer")
    assert viewer.raw[4] == VIDEO_ONLY
    assert kinds(viewer) == {flv.SCRIPT, flv.VIDEO}  # drop_if_not_match: no audio tag
    await viewer.close()
    assert await ffprobe_types(procs, flv_url(app)) == ["video"]


async def test_guess_off_announces_the_configured_tracks_at_once(make_server, procs, video_only_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="http_remux { enabled on; guess_has_av off; has_audio on; has_video on; }")
    viewer = FlvViewer(flv_url(app)).start()
    await wait_until(lambda: len(viewer.raw) >= 13, 10, "the FLV header before any publisher")
    assert viewer.raw[4] == BOTH  # as configured (SRS's behaviour with guessing off)
    await viewer.close()


async def test_a_late_track_is_not_sent_to_viewers_told_otherwise(server) -> None:  # type: ignore[no-untyped-def]
    """Audio starting after video: a viewer whose header said "video only" keeps getting video only (players
    break on the other tag), a viewer arriving once the audio flows is told both and gets both."""
    port = server.port("rtmp")
    pub = await RTMPClient.open(port)
    try:
        await pub.publish("test", port=port)
        pub.send_media(flv.VIDEO, 0, AVC_SEQUENCE_HEADER)
        pub.send_media(flv.VIDEO, 0, keyframe(0))
        await pub.drain()
        await wait_until(lambda: (s := server.hub.get(KEY)) is not None and s.gop.gop, 10, "the first keyframe")
        early = FlvViewer(flv_url(server)).start()
        await wait_until(lambda: len(early.tags) >= 2, 10, "the early viewer's first tags")
        assert early.raw[4] == VIDEO_ONLY
        pub.send_media(flv.AUDIO, 40, AAC_SEQUENCE_HEADER)
        for i in range(1, 60):
            ts = i * 40
            pub.send_media(flv.AUDIO, ts, aac_frame(i))
            pub.send_media(flv.VIDEO, ts, keyframe(i) if i % 25 == 0 else inter_frame(i))
        await pub.drain()
        await wait_until(lambda: early.keyframes_after(0) >= 3, 10, "the later keyframes at the early viewer")
        assert flv.AUDIO not in kinds(early)
        late = FlvViewer(flv_url(server)).start()
        await wait_until(lambda: len(late.tags) >= 5, 10, "the late viewer's first tags")
        assert late.raw[4] == BOTH and flv.AUDIO in kinds(late)
        await early.close()
        await late.close()
    finally:
        await pub.close()


@pytest.mark.parametrize("which,types", [("video", ["video"]), ("audio", ["audio"])])
async def test_rtmp_http_ts_and_hls_play_single_track_streams(make_server, procs, video_only_flv, audio_only_flv,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path, which: str, types: list[str]) -> None:
    app = await make_server(vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 10; hls_path {tmp_path}; }}")
    await publish(app, procs, video_only_flv if which == "video" else audio_only_flv)
    assert await ffprobe_types(procs, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test") == types
    assert await ffprobe_types(procs, flv_url(app, "ts")) == types
    await wait_until(lambda: (tmp_path / "live" / "test.m3u8").exists(), 20, "the HLS playlist")
    assert await ffprobe_types(procs, flv_url(app, "m3u8")) == types
