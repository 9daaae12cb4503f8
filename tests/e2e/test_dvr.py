"""DVR with real clients: ffmpeg and PyAV publish, ffprobe/ffmpeg/PyAV read what was recorded.

One server records several streams at once (the publishes are real time, so they run concurrently): FLV and
MP4, session and segment plans, H.264+AAC from ffmpeg and HEVC over Enhanced RTMP from PyAV, a republish.
Then: a server killed with SIGKILL mid-recording leaves only playable files under final names; a directory
that cannot be written ends the recording with one logged reason while the stream plays on; the API shows the
recording and DELETE of the stream finishes its file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FFMPEG, HEVC_PUBLISHER, FlvViewer, Procs, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e

SECONDS = 15


@pytest.fixture(scope="module")
def long_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 s of H.264 (1 s GOP) + AAC in FLV."""
    path = tmp_path_factory.mktemp("dvr-media") / "long.flv"
    subprocess.run(
        [require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
         "-b:v", "200k", "-c:a", "aac", "-b:a", "48k", "-f", "flv", str(path)],
        check=True, timeout=120,
    )
    return path



PROBE = r"""
import json, sys, av
out = []
for path in sys.argv[1:]:
    with av.open(path) as c:
        streams = [(s.type, s.codec_context.name) for s in c.streams]
        last = {}
        mono = True
        first_video = None
        n = 0
        for pkt in c.demux():
            if pkt.dts is None:
                continue
            t = float(pkt.dts * pkt.time_base)
            if t < last.get(pkt.stream.index, -1):
                mono = False
            last[pkt.stream.index] = t
            if pkt.stream.type == "video" and first_video is None:
                first_video = bool(pkt.is_keyframe)
            n += 1
        out.append({"streams": streams, "duration": c.duration / 1e6 if c.duration else None,
                    "monotonic": mono, "first_video_key": first_video, "packets": n,
                    "end": max(last.values()) if last else 0})
print(json.dumps(out))
"""


def rtmp_url(app: object, path: str) -> str:
    return f"rtmp://127.0.0.1:{app.port('rtmp')}/{path}"  # type: ignore[attr-defined]


async def probe(procs: Procs, tmp_path: Path, files: list[Path]) -> list[dict[str, object]]:
    """PyAV's FFmpeg (recent enough for Enhanced RTMP HEVC in FLV) reads every packet of each file."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    code, out, err = await procs.run(sys.executable, str(script), *map(str, files), timeout=60)
    assert code == 0, err.decode()[-2000:]
    return json.loads(out)  # type: ignore[no-any-return]


async def ffprobe_duration(procs: Procs, path: Path) -> tuple[float, list[str]]:
    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_entries",
                                     "format=duration:stream=codec_name", "-of", "json", str(path))
    assert code == 0, err.decode()
    info = json.loads(out)
    return float(info["format"]["duration"]), sorted(s["codec_name"] for s in info["streams"])


async def plays(procs: Procs, path: Path) -> None:
    """ffmpeg decodes the whole file without one error."""
    code, _, err = await procs.run(require_tool(FFMPEG), "-hide_banner", "-v", "error", "-i", str(path),
                                   "-f", "null", "-", timeout=60)
    assert code == 0 and not err.strip(), f"{path}: {err.decode()[-2000:]}"


def files(root: Path, suffix: str) -> list[Path]:
    return sorted(root.rglob(f"*{suffix}"), key=lambda p: p.name)


DVR_VHOSTS = """
vhost mp4 { dvr { enabled on; dvr_path ./rec/mp4/[app]/[stream].[timestamp].mp4; } }
vhost seg { dvr { enabled on; dvr_plan segment; dvr_duration 5; dvr_path ./rec/seg/[stream]-[timestamp].mp4; } }
"""


async def test_record_flv_mp4_session_segment_h264_hevc_republish(
    make_server, procs, hook_server, long_flv, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    app = await make_server(
        extra=DVR_VHOSTS.replace("dvr {", f"http_hooks {{ enabled on; on_dvr {hook_server.url('on_dvr')}; }} dvr {{"),
        vhost=f"""dvr {{ enabled on; dvr_path ./rec/flv/[app]/[stream].[timestamp].flv; }}
                  http_hooks {{ enabled on; on_dvr {hook_server.url('on_dvr')}; }}""",
    )
    hevc = tmp_path / "hevc.py"
    hevc.write_text(HEVC_PUBLISHER)
    pubs = [
        await procs.start(*ffmpeg_publish_args(long_flv, rtmp_url(app, "live/a"), loop=False)),
        await procs.start(*ffmpeg_publish_args(long_flv, rtmp_url(app, "live?vhost=mp4/b"), loop=False)),
        await procs.start(*ffmpeg_publish_args(long_flv, rtmp_url(app, "live?vhost=seg/c"), loop=False)),
    ]
    # HEVC over Enhanced RTMP, to FLV and MP4, twice to the same stream: a republish starts a new file.
    for n in (1, 2):
        h = [await procs.start(sys.executable, str(hevc), rtmp_url(app, "live/h"), "3"),
             await procs.start(sys.executable, str(hevc), rtmp_url(app, "live?vhost=mp4/h"), "3")]
        for p in h:
            assert await asyncio.wait_for(p.wait(), 60) == 0
        # The period ended (its file is complete) before the next publish: a publisher arriving sooner would
        # take the stream over, and what the server had not read yet of the old one (up to the merged-read
        # interval, more on a loaded machine) would not be recorded.
        await wait_until(lambda n=n: len([p for p in files(Path("rec/flv/live"), ".flv") if p.name.startswith("h.")]) >= n
                         and len([p for p in files(Path("rec/mp4/live"), ".mp4") if p.name.startswith("h.")]) >= n,
                         20, "the hevc files of this period")
    # HEVC, segment plan: 12 s cut into files of about 5 s.
    hs = await procs.start(sys.executable, str(hevc), rtmp_url(app, "live?vhost=seg/hs"), "12")
    assert await asyncio.wait_for(hs.wait(), 60) == 0
    for p in pubs:
        assert await asyncio.wait_for(p.wait(), 60) == 0
    await wait_until(lambda: len(hook_server.calls_for("on_dvr")) >= 2 + 2 + 2 + 3 + 3, 30, "on_dvr for every file")

    root = Path("rec")
    assert not list(root.rglob("*.tmp")), "a temporary file was left"
    (flv_a,) = [p for p in files(root / "flv/live", ".flv") if p.name.startswith("a.")]
    (mp4_b,) = [p for p in files(root / "mp4/live", ".mp4") if p.name.startswith("b.")]
    segs = [p for p in files(root / "seg", ".mp4") if p.name.startswith("c-")]
    hevc_segs = [p for p in files(root / "seg", ".mp4") if p.name.startswith("hs-")]
    hevc_flv = [p for p in files(root / "flv/live", ".flv") if p.name.startswith("h.")]
    hevc_mp4 = [p for p in files(root / "mp4/live", ".mp4") if p.name.startswith("h.")]
    assert len(hevc_flv) == 2 and len(hevc_mp4) == 2  # a republish starts a new file

    # H.264 + AAC, as ffprobe and ffmpeg (the system's) see them.
    for path in (flv_a, mp4_b):
        duration, codecs = await ffprobe_duration(procs, path)
        assert codecs == ["aac", "h264"]
        assert abs(duration - SECONDS) <= 0.5, (path, duration)
        await plays(procs, path)
    assert 3 <= len(segs) <= 4
    seg_durations = [(await ffprobe_duration(procs, p))[0] for p in segs]
    assert all(4.5 <= d <= 6.0 for d in seg_durations[:-1]), seg_durations
    assert abs(sum(seg_durations) - SECONDS) <= 0.5 * len(segs), seg_durations
    for p in segs:
        await plays(procs, p)

    infos = await probe(procs, tmp_path, [flv_a, mp4_b, *segs, *hevc_flv, *hevc_mp4])
    for path, info in zip([flv_a, mp4_b, *segs, *hevc_flv, *hevc_mp4], infos):
        assert info["monotonic"], path
        assert info["first_video_key"], path  # every file starts with a keyframe
    for info in infos[-4:]:
        assert sorted(info["streams"]) == [["audio", "aac"], ["video", "hevc"]]  # type: ignore[arg-type]
        assert abs(info["duration"] - 3.0) <= 0.5, info  # type: ignore[operator]
    for path in (*hevc_mp4, *hevc_segs):
        await plays(procs, path)  # (the system's ffmpeg reads HEVC in MP4; in FLV only PyAV's newer one)
    assert len(hevc_segs) == 3
    seg_infos = await probe(procs, tmp_path, hevc_segs)
    for path, info in zip(hevc_segs, seg_infos):
        assert info["monotonic"] and info["first_video_key"], path
        assert ["video", "hevc"] in info["streams"], info  # type: ignore[operator]
    hevc_durations = [info["duration"] for info in seg_infos]
    assert all(abs(d - 5.0) <= 0.5 for d in hevc_durations[:2]), hevc_durations  # type: ignore[operator]
    assert abs(sum(hevc_durations) - 12.0) <= 0.5, hevc_durations  # type: ignore[arg-type]

    # on_dvr: SRS's payload, once per file, each naming a complete file.
    calls = hook_server.calls_for("on_dvr")
    named = [c.payload["file"] for c in calls]
    assert len(named) == len(set(named)) == 1 + 1 + len(segs) + 4 + len(hevc_segs)
    for c in calls:
        body = c.payload
        assert body["action"] == "on_dvr" and body["cwd"] == os.getcwd()
        assert Path(body["cwd"], body["file"]).is_file()
    assert any(c.payload["stream"] == "a" and c.payload["app"] == "live" and c.payload["file"].startswith("./rec/flv/")
               for c in calls)


SIGKILL_CONF = """
listen 127.0.0.1:{rtmp};
daemon off;
srs_log_tank console;
vhost __defaultVhost__ {{
    dvr {{ enabled on; dvr_path ./rec/[stream].[timestamp].{ext}; dvr_plan segment; dvr_duration 4; }}
}}
"""


@pytest.mark.parametrize("ext", ["flv", "mp4"])
async def test_sigkill_leaves_only_playable_files_under_final_names(procs, long_flv, tmp_path, ext: str) -> None:  # type: ignore[no-untyped-def]
    from tests.hooks.hook_server import unused_port

    port = unused_port()
    conf = tmp_path / "kill.conf"
    conf.write_text(SIGKILL_CONF.format(rtmp=port, ext=ext))
    server = await procs.start(sys.executable, "-m", "livesrv", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL)
    url = f"rtmp://127.0.0.1:{port}/live/k"
    pub = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while pub is None or pub.returncode is not None:  # the server may not listen yet
        assert loop.time() < deadline, "could not publish"
        pub = await procs.start(*ffmpeg_publish_args(long_flv, url))
        await asyncio.sleep(0.3)
    await wait_until(lambda: len(files(Path("rec"), f".{ext}")) >= 1, 30, "a finished file")
    await wait_until(lambda: any(p.stat().st_size > 40_000 for p in files(Path("rec"), ".tmp")), 30,
                     "a file half written")
    server.send_signal(signal.SIGKILL)
    await asyncio.wait_for(server.wait(), 10)
    finished = files(Path("rec"), f".{ext}")
    leftovers = files(Path("rec"), ".tmp")
    assert finished and leftovers  # the file being written stays under its temporary name
    for path in finished:
        await plays(procs, path)
    # What a crash leaves is an FLV that plays up to its last complete tag (see the README).
    for path in leftovers:
        code, _, err = await procs.run(require_tool(FFMPEG), "-hide_banner", "-v", "fatal", "-f", "flv", "-i", str(path),
                                       "-f", "null", "-", timeout=60)
        assert code == 0, err.decode()


async def test_unwritable_directory_ends_recording_stream_plays_on(
    make_server, procs, sample_flv, caplog  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    Path("blocked").write_bytes(b"a file where the directory should be")
    app = await make_server(vhost="dvr { enabled on; dvr_path ./blocked/[app]/[stream].[timestamp].flv; }")
    viewer = FlvViewer(f"http://127.0.0.1:{app.port('http')}/live/x.flv").start()
    await procs.start(*ffmpeg_publish_args(sample_flv, rtmp_url(app, "live/x")))
    await wait_until(lambda: "event=dvr-failed" in caplog.text, 20, "the recording to fail")
    await wait_until(lambda: viewer.keyframes_after(0) >= 3, 20, "the viewer to go on playing")
    stream = next(iter(app.hub.streams.values()))
    assert stream.live and stream.outputs  # the stream lives on; the output stays, it just records nothing
    assert caplog.text.count("event=dvr-failed") == 1
    assert not [c for c in app.hub.clients.values() if c.kind == "recorder"]
    assert "Traceback" not in caplog.text
    await viewer.close()


async def api_streams(app: object) -> list[dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('api')}/api/v1/streams/") as r:  # type: ignore[attr-defined]
            return (await r.json())["streams"]  # type: ignore[no-any-return]


async def wait_api_dvr_file(app: object) -> list[dict[str, Any]]:
    """The API's streams once the first one shows the file its recording writes (null until the file exists)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        streams = await api_streams(app)
        if streams and (streams[0]["dvr"] or {}).get("file"):
            return streams
        assert loop.time() < deadline, f"no dvr file in the API: {streams}"
        await asyncio.sleep(0.05)


async def test_api_shows_recording_and_delete_finishes_file(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="dvr { enabled on; dvr_path ./rec/[stream].flv; }")
    await procs.start(*ffmpeg_publish_args(sample_flv, rtmp_url(app, "live/api")))
    api = f"http://127.0.0.1:{app.port('api')}/api/v1"

    def get(path: str) -> dict[str, object]:
        with urllib.request.urlopen(api + path, timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    (s,) = await wait_api_dvr_file(app)  # the recording started: its file exists
    assert s["dvr"]["file"] == "./rec/api.flv" and Path("rec/api.flv.tmp").is_file()
    loop = asyncio.get_running_loop()
    clients = (await loop.run_in_executor(None, get, "/clients/"))["clients"]
    assert any(c["kind"] == "recorder" and c["type"] == "dvr-recorder" for c in clients)  # type: ignore[index]

    def delete() -> int:
        req = urllib.request.Request(f"{api}/streams/{s['id']}", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status  # type: ignore[no-any-return]

    assert await loop.run_in_executor(None, delete) == 200
    await wait_until(lambda: Path("rec/api.flv").exists(), 20, "the file to be finished")
    await plays(procs, Path("rec/api.flv"))


async def test_api_shows_the_name_really_written_when_the_template_name_is_taken(
    make_server, procs, sample_flv, hook_server  # type: ignore[no-untyped-def]
) -> None:
    Path("rec").mkdir()
    Path("rec/col.flv").write_bytes(b"an earlier recording")  # the template's name is taken: -1 is used
    app = await make_server(vhost=f"""dvr {{ enabled on; dvr_path ./rec/[stream].flv; }}
                                     http_hooks {{ enabled on; on_dvr {hook_server.url('on_dvr')}; }}""")
    await procs.start(*ffmpeg_publish_args(sample_flv, rtmp_url(app, "live/col")))
    streams = await wait_api_dvr_file(app)
    assert streams[0]["dvr"]["file"] == "./rec/col-1.flv"  # the real name, not the template's ./rec/col.flv
    assert Path("rec/col-1.flv.tmp").is_file()
    # The same file is the one reported when it is complete (kicking the recorder finishes its file).
    import aiohttp

    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.port('api')}/api/v1/clients/{streams[0]['dvr']['cid']}"
        async with session.delete(url) as r:
            assert r.status == 200
    call = await hook_server.wait_call("on_dvr", timeout=20)
    assert call.payload["file"] == "./rec/col-1.flv" and Path("rec/col-1.flv").is_file()
    assert Path("rec/col.flv").read_bytes() == b"an earlier recording"
    assert (await api_streams(app))[0]["dvr"] is None  # no recording any more


async def test_shutdown_finishes_the_file(procs, sample_flv, hook_server) -> None:  # type: ignore[no-untyped-def]
    from livesrv.app import App
    from tests.conftest import server_config

    app = App(server_config(vhost=f"""dvr {{ enabled on; dvr_path ./rec/[stream].mp4; }}
                                     http_hooks {{ enabled on; on_dvr {hook_server.url('on_dvr')}; }}"""))
    await app.start()
    try:
        await procs.start(*ffmpeg_publish_args(sample_flv, rtmp_url(app, "live/down")))
        await wait_until(lambda: Path("rec/down.mp4.tmp").exists() and Path("rec/down.mp4.tmp").stat().st_size > 50_000,
                         20, "the recording to run")
    finally:
        await app.stop()
    assert Path("rec/down.mp4").is_file() and not Path("rec/down.mp4.tmp").exists()
    await plays(procs, Path("rec/down.mp4"))
    assert not app.hub.clients
    (call,) = hook_server.calls_for("on_dvr")  # delivered before the hook client closed
    assert call.payload["file"] == "./rec/down.mp4"


async def test_takeover_finishes_the_old_file_and_starts_a_new_one(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="dvr { enabled on; dvr_path ./rec/[stream].[timestamp].flv; }")
    url = rtmp_url(app, "live/t")
    first = await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await wait_until(lambda: any(p.stat().st_size > 30_000 for p in files(Path("rec"), ".tmp")), 20, "recording")
    await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await asyncio.wait_for(first.wait(), 20)  # taken over
    await wait_until(lambda: len(files(Path("rec"), ".flv")) == 1, 20, "the first file finished")
    await wait_until(lambda: any(p.stat().st_size > 30_000 for p in files(Path("rec"), ".tmp")), 20, "a new file")
    recorders = [c for c in app.hub.clients.values() if c.kind == "recorder"]
    assert len(recorders) == 1
    await plays(procs, files(Path("rec"), ".flv")[0])


async def test_metadata_sent_mid_recording_is_written_into_the_file(make_server, procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    """The publisher (the project's RTMP client, real H.264/AAC from the sample) sends @setDataFrame onMetaData
    again half way: the FLV has it there, and its header's onMetaData still has the final duration and size."""
    from livesrv.codec import amf0, flv
    from tests.servers.rtmp_client import RTMPClient

    app = await make_server(vhost="dvr { enabled on; dvr_path ./rec/[stream].flv; }")
    port = app.port("rtmp")
    tags = [e for e in flv.FLVDecoder().feed(sample_flv.read_bytes()) if isinstance(e, flv.FLVTag)]
    first_meta = dict(amf0.decode_all(tags[0].payload)[1])
    media = [t for t in tags if t.tag_type != flv.SCRIPT]
    pub = await RTMPClient.open(port)
    try:
        await pub.publish("meta", port=port)
        pub.send_metadata({**first_meta, "title": "first half"})
        sent_second = False
        for t in media:
            if not sent_second and t.timestamp >= 3000:
                pub.send_metadata({**first_meta, "title": "second half", "duration": 99.0, "filesize": 1.0})
                sent_second = True
            pub.send_media(t.tag_type, t.timestamp, t.payload)
            await pub.drain()
        await pub.barrier()  # the server has read everything
    finally:
        await pub.close()
    path = Path("rec/meta.flv")
    await wait_until(path.exists, 20, "the file to be finished")

    data = path.read_bytes()
    out = [e for e in flv.FLVDecoder().feed(data) if isinstance(e, flv.FLVTag)]
    scripts = [i for i, t in enumerate(out) if t.tag_type == flv.SCRIPT]
    assert len(scripts) == 2 and scripts[0] == 0
    name, head = amf0.decode_all(out[0].payload)
    assert name == "onMetaData" and head["title"] == "first half"
    assert head["filesize"] == len(data) and abs(head["duration"] - 6.0) <= 0.1
    name, mid = amf0.decode_all(out[scripts[1]].payload)
    assert name == "onMetaData" and mid["title"] == "second half"
    assert "duration" not in mid and "filesize" not in mid  # the header has this file's
    before = [t.timestamp for t in out[1:scripts[1]] if t.tag_type == flv.VIDEO]
    after = [t.timestamp for t in out[scripts[1] + 1:] if t.tag_type == flv.VIDEO]
    assert before and after and max(before) < 3000 <= min(after)  # at its place in the stream

    duration, codecs = await ffprobe_duration(procs, path)
    assert codecs == ["aac", "h264"]  # no data or subtitle stream made of the second onMetaData
    assert abs(duration - 6.0) <= 0.1
    await plays(procs, path)
