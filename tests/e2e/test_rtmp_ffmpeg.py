"""RTMP publish and play with real clients: ffmpeg/ffprobe, rtmpdump (librtmp), PyAV (Enhanced RTMP HEVC)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from livesrv.codec import flv
from tests.helpers import HEVC_PUBLISHER, Procs, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e


def url(app, path: str = "live/test") -> str:  # type: ignore[no-untyped-def]
    return f"rtmp://127.0.0.1:{app.port('rtmp')}/{path}"


async def start_publisher(procs: Procs, app, src: Path, path: str = "live/test"):  # type: ignore[no-untyped-def]
    proc = await procs.start(*ffmpeg_publish_args(src, url(app, path)))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()) or proc.returncode is not None,
                     20, "the publisher to go live")
    assert proc.returncode is None, "ffmpeg publisher exited early"
    return proc


def parse_framemd5(text: str) -> dict[int, list[int]]:
    """stream index -> dts list from ffmpeg's framemd5 output."""
    out: dict[int, list[int]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        out.setdefault(int(fields[0]), []).append(int(fields[1]))
    return out


async def test_ffmpeg_publish_ffprobe_and_ffmpeg_play(server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    await start_publisher(procs, server, sample_flv)
    code, out, err = await procs.run(
        require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", url(server), timeout=30
    )
    assert code == 0, err.decode()
    streams = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["sample_rate"]) == 44100 and streams["audio"]["channels"] == 2

    # Play 3 s: every packet of both streams arrives with monotonic timestamps ...
    code, out, err = await procs.run(
        require_tool("ffmpeg"), "-hide_banner", "-v", "error", "-i", url(server), "-t", "3",
        "-map", "0", "-c", "copy", "-f", "framemd5", "-", timeout=30,
    )
    assert code == 0, err.decode()
    dts = parse_framemd5(out.decode())
    assert len(dts) == 2 and all(len(v) > 20 for v in dts.values()), dts.keys()
    for stream_dts in dts.values():
        assert stream_dts == sorted(stream_dts), "timestamps went backwards"
    # ... and decodes without a single error.
    code, _, err = await procs.run(
        require_tool("ffmpeg"), "-hide_banner", "-v", "error", "-i", url(server), "-t", "3", "-f", "null", "-", timeout=30
    )
    assert code == 0 and not err.strip(), err.decode()


def read_flv(path: Path) -> list[flv.FLVTag]:
    dec = flv.FLVDecoder()
    return [ev for ev in dec.feed(path.read_bytes()) if isinstance(ev, flv.FLVTag)]


async def test_rtmpdump_plays(server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await start_publisher(procs, server, sample_flv)
    out_file = tmp_path / "dump.flv"
    # rtmpdump ignores --stop on live streams: let it record ~150 kB (about 3 s), then stop it as a user would.
    dumper = await procs.start(require_tool("rtmpdump"), "-q", "--live", "-r", url(server), "-o", str(out_file))
    await wait_until(lambda: out_file.exists() and out_file.stat().st_size > 150_000 or dumper.returncode is not None,
                     30, "rtmpdump to record")
    dumper.terminate()
    await asyncio.wait_for(dumper.wait(), 10)
    tags = read_flv(out_file)
    video = [t for t in tags if t.tag_type == flv.VIDEO]
    audio = [t for t in tags if t.tag_type == flv.AUDIO]
    assert video and audio
    assert flv.is_sequence_header(video[0].payload) and flv.is_keyframe(video[1].payload)
    assert flv.is_audio_sequence_header(audio[0].payload)
    for kind in (video, audio):
        ts = [t.timestamp for t in kind]
        assert ts == sorted(ts)
    code, out, err = await procs.run(
        require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", str(out_file), timeout=30
    )
    assert code == 0, err.decode()
    assert {s["codec_name"] for s in json.loads(out)["streams"]} == {"h264", "aac"}


async def test_second_publisher_is_refused_when_takeover_is_off(make_server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(vhost="publish { takeover off; }")
    await start_publisher(procs, server, sample_flv)
    first = next(iter(server.hub.streams.values())).publisher
    code, _, err = await procs.run(*ffmpeg_publish_args(sample_flv, url(server), loop=False), timeout=30)
    assert code != 0
    stream = next(iter(server.hub.streams.values()))
    assert stream.live and stream.publisher is first  # the first publisher is untouched
    assert "Stream already exists or busy" in caplog.text


async def test_second_publisher_takes_over_by_default(server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    first = await start_publisher(procs, server, sample_flv)
    stream = next(iter(server.hub.streams.values()))
    old = stream.publisher
    second = await procs.start(*ffmpeg_publish_args(sample_flv, url(server)))
    await wait_until(lambda: stream.publisher is not None and stream.publisher is not old and stream.live, 20,
                     "the second publisher to take over")
    assert "taken over by client" in caplog.text
    assert second.returncode is None
    await asyncio.wait_for(first.wait(), 20)  # the stale publisher was closed



HEVC_PLAYER = r"""
import sys, av
c = av.open(sys.argv[1], options={"rw_timeout": "15000000"})
s = c.streams.video[0]
n = 0
for frame in c.decode(s):
    n += 1
    if n >= 20:
        break
print(s.codec_context.name, s.codec_context.width, s.codec_context.height, n)
"""


async def test_hevc_over_enhanced_rtmp_passes_through(server, procs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PyAV's bundled FFmpeg (>= 6.1) publishes HEVC with Enhanced RTMP (FourCC hvc1); a player decodes it."""
    pub_script = tmp_path / "pub.py"
    pub_script.write_text(HEVC_PUBLISHER)
    play_script = tmp_path / "play.py"
    play_script.write_text(HEVC_PLAYER)
    player = await procs.start(sys.executable, str(play_script), url(server, "live/hevc"), stdout=-1)
    await wait_until(lambda: any(s.viewers for s in server.hub.streams.values()), 20, "the player to attach")
    publisher = await procs.start(sys.executable, str(pub_script), url(server, "live/hevc"), "4")
    out, err = await asyncio.wait_for(player.communicate(), 60)
    assert player.returncode == 0, err.decode()
    name, w, h, n = out.decode().split()
    assert (name, w, h, n) == ("hevc", "320", "240", "20")
    await asyncio.wait_for(publisher.wait(), 60)
