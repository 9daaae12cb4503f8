"""A really full disk: DVR and HLS write to a small tmpfs while real ffmpeg publishes until it fills.

The recording ends with exactly one logged reason (ENOSPC), what it had on disk is kept as a finished file (an
FLV under its final name; an MP4 that cannot be remuxed on the full disk stays as its ``.tmp`` FLV), nothing
half written ever carries a final name, HLS logs its failures once, and the server, the stream and its
HTTP-FLV viewer go on as if nothing happened.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import aiohttp
import pytest

from livesrv.codec import amf0, flv
from livesrv.hub.keys import StreamKey
from tests.e2e.test_dvr import plays, rtmp_url
from tests.helpers import FFMPEG, LOG_LINE, FlvViewer, ffmpeg_publish_args, require_tool, wait_until

pytestmark = pytest.mark.e2e

#: DVR (about 45 KB/s of the sample) and HLS (a little more) fill it in about 4 s.
DISK_BYTES = 384 * 1024
KEY = StreamKey("__defaultVhost__", "live", "full")


def fill(disk: Path) -> int:
    """Take every byte left on ``disk`` (so that nothing frees up behind the test's back); the bytes taken."""
    taken = 0
    with open(disk / "filler", "ab", buffering=0) as f:
        while True:
            try:
                taken += f.write(bytes(16 * 1024))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return taken


async def flv_meta(procs: object, path: Path) -> tuple[float, dict[str, object], float]:
    """ffprobe's duration of an FLV file, its header onMetaData and the last timestamp of its tags (s)."""
    data = path.read_bytes()
    tags = [e for e in flv.FLVDecoder().feed(data) if isinstance(e, flv.FLVTag)]
    name, meta = amf0.decode_all(tags[0].payload)
    assert name == "onMetaData"
    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-f", "flv", "-show_entries",  # type: ignore[attr-defined]
                                     "format=duration", "-of", "json", str(path))
    assert code == 0, err.decode()
    return float(json.loads(out)["format"]["duration"]), meta, max(t.timestamp for t in tags) / 1000


@pytest.mark.parametrize("ext,plan", [("flv", "session"), ("mp4", "segment")])
async def test_full_disk_ends_the_recording_once_and_everything_else_goes_on(
    tmpfs, make_server, procs, log_lines, sample_flv, ext: str, plan: str  # type: ignore[no-untyped-def]
) -> None:
    disk = tmpfs(DISK_BYTES)
    app = await make_server(vhost=f"""
        dvr {{ enabled on; dvr_plan {plan}; dvr_duration 1; dvr_path {disk}/rec/[stream].[timestamp].{ext}; }}
        hls {{ enabled on; hls_fragment 1; hls_window 600; hls_path {disk}/hls; }}
    """)
    viewer = FlvViewer(f"http://127.0.0.1:{app.port('http')}/live/full.flv").start()
    await procs.start(*ffmpeg_publish_args(sample_flv, rtmp_url(app, "live/full")))
    text = log_lines.buffer.getvalue
    await wait_until(lambda: "event=dvr-failed" in text(), 60, "the disk to fill up")

    # The recording is over; take whatever its end freed, so the disk stays full from now on.
    fill(disk)
    hls_writer = app.hls.state(KEY).writer
    hls_errors_then = hls_writer.errors
    hls_lines_then = [e["event"] for e in log_lines.events() if e["event"].startswith("hls-write-")]
    tags_then = len(viewer.tags)
    await wait_until(lambda: viewer.keyframes_after(tags_then) >= 4 and hls_writer.errors >= hls_errors_then + 6,
                     30, "the viewer to go on playing while HLS fails on the full disk")
    (stream,) = app.hub.streams.values()
    assert stream.live and viewer.error is None and not viewer.ended.is_set()

    # DVR: one line, with the stream, the recorder's client id and ENOSPC.
    (start,) = log_lines.events("dvr-start")
    (failed,) = log_lines.events("dvr-failed")
    assert failed["stream"] == "/live/full" and failed["client"] == start["client"]
    assert "ENOSPC No space left on device" in failed["reason"], failed
    assert not log_lines.events("dvr-stop")  # (the unpublish to come adds nothing)
    # Files: every final name is a finished file that plays and was reported; nothing half written has one.
    rec = disk / "rec"
    reported = [Path(e["file"]) for e in log_lines.events("dvr-file")]
    finals = sorted(rec.glob(f"*.{ext}"))
    temps = sorted(rec.glob("*.tmp"))
    assert finals == sorted(reported)
    for path in finals:
        await plays(procs, path)
    if ext == "flv":  # the session's file: what was on disk, finished, under its final name
        assert not temps and len(finals) == 1 and failed["reason"].endswith(f" s kept in {finals[0]}")
        duration, meta, last = await flv_meta(procs, finals[0])
        assert meta["filesize"] == finals[0].stat().st_size and meta["duration"] == pytest.approx(last)
        assert last >= 1.0 and abs(duration - last) <= 0.1
    else:  # segments finished before the disk filled are MP4s; the one it cut is its .tmp FLV, or nothing
        assert finals, "no segment was finished before the disk filled up"
        assert all(not p.name.endswith(".mux.tmp") for p in temps)
        if temps:
            (tmp,) = temps
            assert tmp.name.endswith(f".{ext}.tmp")
            assert failed["reason"].endswith(f" s kept in {tmp}")
            assert not Path(str(tmp)[:-len(".tmp")]).exists()
            code, _, err = await procs.run(require_tool(FFMPEG), "-v", "error", "-f", "flv", "-i", str(tmp),
                                           "-f", "null", "-")
            assert code == 0 and not err.strip(), err.decode()
        else:
            assert "kept in" not in failed["reason"]

    # HLS on the same disk: failures logged once per run (a run ends when a segment is on disk again); on the
    # disk that stays full, at most the line that starts the run, whatever number of writes fail.
    hls_lines = [e for e in log_lines.events() if e["event"].startswith("hls-write-")]
    kinds = [e["event"] for e in hls_lines]
    assert kinds[::2] == ["hls-write-error"] * len(kinds[::2])
    assert kinds[1::2] == ["hls-write-recovered"] * len(kinds[1::2])
    assert kinds and kinds[-1] == "hls-write-error" and hls_writer.failing
    assert len(kinds) - len(hls_lines_then) <= 1
    assert all("ENOSPC" in e["reason"] for e in hls_lines if e["event"] == "hls-write-error"), hls_lines

    # Nothing crashed: no other error, no output detached, the API answers and shows no recording.
    errors = [m["message"] for m in map(LOG_LINE.fullmatch, log_lines.lines()) if m and m["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("event=dvr-failed "), errors
    assert "Traceback" not in text() and "output-detached" not in text()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.port('api')}/api/v1/streams/") as r:
            (s,) = (await r.json())["streams"]
    assert s["name"] == "full" and s["publish"]["active"] and s["dvr"] is None
    assert not [c for c in app.hub.clients.values() if c.kind == "recorder"]
    await viewer.close()
