"""The DVR's file side without a server: the recorder's actions performed by DvrFiles (what the writer's worker
thread runs), FLV and MP4 (PyAV's remux), H.264 with MP3, names already taken, a directory that cannot exist."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import av
import pytest

from livesrv.codec import amf0, flv
from livesrv.media.packet import MediaPacket
from livesrv.remux.dvr import DvrRecorder
from livesrv.servers.dvr.files import DvrFiles, DvrWriter
from tests.helpers import FFMPEG, require_tool


@pytest.fixture(scope="module")
def mp3_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of H.264 + MP3 in FLV."""
    path = tmp_path_factory.mktemp("dvr-files") / "mp3.flv"
    subprocess.run(
        [require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
         "-c:a", "libmp3lame", "-ar", "44100", "-f", "flv", str(path)],
        check=True, timeout=60,
    )
    return path


def packets(path: Path) -> list[MediaPacket]:
    out = []
    for e in flv.FLVDecoder().feed(path.read_bytes()):
        if isinstance(e, flv.FLVTag):
            out.append(MediaPacket.from_payload(e.tag_type, e.timestamp, e.payload))
    return out


def record(path_template: str, pkts: list[MediaPacket], files: DvrFiles | None = None) -> tuple[list[str], str | None]:
    rec = DvrRecorder(path=path_template, vhost="v", app="live", stream="s")
    files = files or DvrFiles()
    actions = []
    for p in pkts:
        actions += rec.feed(p, 1_700_000_000.0)
    actions += rec.finish()
    done, failed = files.perform(actions)
    return [path for _, path in done], failed


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_h264_mp3_recorded(mp3_flv: Path, ext: str) -> None:
    (path,), failed = record(f"./rec/[stream].{ext}", packets(mp3_flv))
    assert failed is None and path == f"./rec/s.{ext}"
    assert not list(Path("rec").glob("*.tmp"))
    with av.open(path) as c:
        assert sorted(s.codec_context.name for s in c.streams) == ["h264", "mp3float"]  # (FFmpeg's MP3 decoder)
        assert abs(c.duration / 1e6 - 3.0) <= 0.2
        frames = sum(1 for _ in c.decode(video=0))
    assert frames >= 70


def test_name_taken_gets_a_variant(sample_flv: Path) -> None:
    pkts = packets(sample_flv)[:80]
    first, _ = record("./rec/[stream].flv", pkts)
    second, _ = record("./rec/[stream].flv", pkts)
    assert (first, second) == (["./rec/s.flv"], ["./rec/s-1.flv"])  # (SRS would overwrite the first)


def test_directory_that_cannot_exist_fails_once_without_leftovers(sample_flv: Path) -> None:
    Path("rec").write_text("a file where the directory should be")
    done, failed = record("./rec/[stream].flv", packets(sample_flv)[:80])
    assert done == [] and failed is not None and "rec" in failed
    assert Path("rec").read_text().startswith("a file")


async def test_writer_reports_files_and_failure_on_the_loop(sample_flv: Path) -> None:
    closed: list[str] = []
    failures: list[str] = []
    writer = DvrWriter("t", lambda act, path: closed.append(path), failures.append)
    rec = DvrRecorder(path="./rec/[stream].[timestamp].flv", vhost="v", app="live", stream="s", plan="segment",
                      duration=2.0)
    for p in packets(sample_flv):
        writer.submit(rec.feed(p, asyncio.get_running_loop().time()))
    writer.submit(rec.finish())
    writer.close()
    await asyncio.wait_for(writer.task, 20)
    assert len(closed) == 3 and failures == [] and writer.queued == 0
    assert writer.written == sum(Path(p).stat().st_size for p in closed)


def test_names_holds_the_name_really_written_while_open(sample_flv: Path) -> None:
    Path("rec").mkdir()
    Path("rec/s.flv").write_bytes(b"taken")
    rec = DvrRecorder(path="./rec/[stream].flv", vhost="v", app="live", stream="s")
    files = DvrFiles()
    actions = []
    for p in packets(sample_flv)[:80]:
        actions += rec.feed(p, 1_700_000_000.0)
    assert rec.current_path == "./rec/s.flv" and rec.current_fid is not None
    assert files.names == {}  # nothing on disk yet
    files.perform(actions)
    assert files.names == {rec.current_fid: "./rec/s-1.flv"} and Path("rec/s-1.flv.tmp").is_file()
    done, failed = files.perform(rec.finish())
    assert failed is None and [path for _, path in done] == ["./rec/s-1.flv"] and files.names == {}


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_full_disk_keeps_what_is_on_disk_as_a_finished_file(sample_flv: Path, tmpfs, ext: str) -> None:  # type: ignore[no-untyped-def]
    """A 128 KiB disk fills after about 3 s of the sample: the recording fails once, with ENOSPC in the reason;
    an FLV keeps what was flushed under its final name (playable, onMetaData duration and size right); an
    MP4 cannot be remuxed on the full disk, so it stays as its .tmp FLV, never under its final name."""
    disk = tmpfs(128 * 1024)
    rec = DvrRecorder(path=f"{disk}/rec/[stream].{ext}", vhost="v", app="live", stream="s")
    files = DvrFiles()
    done: list[str] = []
    failed = None
    for p in packets(sample_flv):
        d, failed = files.perform(rec.feed(p, 1_700_000_000.0))  # a batch per packet, as a writer under load
        done += [path for _, path in d]
        if failed:
            break
    assert failed is not None and "ENOSPC No space left on device" in failed, failed
    final, tmp = Path(f"{disk}/rec/s.{ext}"), Path(f"{disk}/rec/s.{ext}.tmp")
    kept = final if ext == "flv" else tmp
    assert failed.endswith(f" s kept in {kept}")
    assert sorted(p.name for p in Path(disk, "rec").iterdir()) == [kept.name]  # (no .mux.tmp either)
    assert done == ([str(final)] if ext == "flv" else [])
    data = kept.read_bytes()
    tags = [e for e in flv.FLVDecoder().feed(data) if isinstance(e, flv.FLVTag)]
    _, meta = amf0.decode_all(tags[0].payload)
    last = max(t.timestamp for t in tags) / 1000
    assert meta["filesize"] == len(data) and meta["duration"] == pytest.approx(last) and last >= 1.0
    with av.open(str(kept), format="flv") as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames >= 25 * last - 1  # every frame kept decodes
