"""The ingest bench's HLS side: which segments a window finished, and the transport-stream framing checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.hlscheck import (PlaylistWatch, Segment, check_continuity, check_segment, check_ts, hls_lag, parse_playlist,
                            sample_streams)
from tests.helpers import require_tool

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-TARGETDURATION:10
#EXTINF:10.000,
s-7.ts
#EXT-X-DISCONTINUITY
#EXTINF:9.967, no desc
s-8.ts?token=1
"""


def packet(pid: int, cc: int, payload: bool = True, sync: int = 0x47) -> bytes:
    return bytes((sync, (pid >> 8) & 0x1F, pid & 0xFF, (0x10 if payload else 0x20) | cc)) + bytes(184)


def stream(counters: dict[int, list[int]]) -> bytes:
    out = [packet(0, 0)]
    for pid, ccs in counters.items():
        out += [packet(pid, cc) for cc in ccs]
    return b"".join(out)


def test_parse_playlist() -> None:
    seq, entries = parse_playlist(PLAYLIST)
    assert seq == 7
    assert entries == [(10.0, "s-7.ts", False), (9.967, "s-8.ts?token=1", True)]


def test_check_ts_accepts_good_framing_and_names_what_is_wrong() -> None:
    good = stream({256: list(range(16)) + [0, 1], 257: [5, 6, 6, 7]})  # a repeated counter is allowed once
    assert check_ts(good) == []
    assert check_ts(good + packet(256, 9, payload=False)) == []  # no payload: the counter does not move
    assert check_ts(stream({256: [0, 1, 3]})) == ["1 continuity counter errors"]
    assert check_ts(good[:-1]) == [f"size {len(good) - 1} is not a multiple of 188"]
    assert check_ts(good + packet(256, 2, sync=0x48)) == ["lost sync: a packet does not start with 0x47"]
    assert check_ts(b"".join(packet(256, i) for i in range(3))) == ["no PAT"]
    assert check_ts(b"") == ["empty file"]


def test_watch_counts_only_what_the_window_finished_and_keeps_it(tmp_path: Path) -> None:
    root, keep = tmp_path / "hls", tmp_path / "kept"
    (root / "live").mkdir(parents=True)

    def publish(name: str, segs: list[int]) -> None:
        for n in segs:
            (root / "live" / f"{name}-{n}.ts").write_bytes(packet(0, n % 16))
        lines = ["#EXTM3U", f"#EXT-X-MEDIA-SEQUENCE:{segs[0]}"]
        for n in segs:
            lines += ["#EXTINF:2.000,", f"{name}-{n}.ts"]
        (root / "live" / f"{name}.m3u8").write_text("\n".join(lines) + "\n")

    publish("a", [0, 1])
    watch = PlaylistWatch(root, keep)
    assert watch.poll(in_window=False) == 2
    publish("a", [1, 2, 3])  # the server's sliding window dropped 0
    publish("b", [0])
    assert watch.poll(in_window=True) == 3
    for n in (1, 2, 3):  # clean-up on unpublish: the bench's links keep the data
        (root / "live" / f"a-{n}.ts").unlink()
    window = sorted((s.stream, s.uri, s.seq) for s in watch.window_segments())
    assert window == [("live/a", "a-2.ts", 2), ("live/a", "a-3.ts", 3), ("live/b", "b-0.ts", 0)]
    assert all(s.kept is not None and s.kept.read_bytes() == packet(0, s.seq % 16) for s in watch.window_segments())
    assert watch.playlists == {"live/a", "live/b"}


def test_a_segment_gone_before_it_was_kept_is_bad(tmp_path: Path) -> None:
    seg = Segment("live/a", "a-1.ts", 10.0, 1, True, kept=None)
    check_segment(seg, 10.0)
    assert seg.problems == ["gone before it could be kept"]


def test_continuity_between_consecutive_segments() -> None:
    def seg(seq: int, extinf: float, pts: float) -> Segment:
        s = Segment("live/a", f"a-{seq}.ts", extinf, seq, True)
        s.probe = {"first_video_pts": pts}
        return s

    segs = [seg(1, 10.0, 1.4), seg(2, 10.0, 11.4), seg(3, 10.0, 23.4), seg(5, 10.0, 50.0)]
    assert check_continuity(segs) == 1
    assert segs[2].problems == ["starts 12.000 s after the previous segment, whose #EXTINF is 10.000"]
    assert segs[1].problems == [] and segs[3].problems == []  # 4 is missing: 5 is not compared with 3


def test_sample_streams_spreads_over_the_names() -> None:
    names = [f"s{i:02d}" for i in range(10)]
    assert sample_streams(names, 0) == names
    assert sample_streams(names, 3) == ["s00", "s04", "s09"]
    assert sample_streams(names, 1) == ["s00"]
    assert sample_streams(names, 20) == names


def test_check_segment_passes_a_good_segment_and_catches_broken_ones(tmp_path: Path) -> None:
    """A real 2 s segment (1 s GOP) from ffmpeg, then the same cut, mislabelled, and without its start."""
    require_tool("ffprobe")
    good = tmp_path / "good.ts"
    subprocess.run(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-f", "mpegts", str(good)],
        check=True, timeout=60, stdin=subprocess.DEVNULL)

    def check(path: Path, extinf: float = 2.0, fragment: float = 2.0) -> list[str]:
        seg = Segment("live/a", path.name, extinf, 0, True, kept=path)
        check_segment(seg, fragment)
        return seg.problems

    assert check(good) == []
    assert any("far from the 10 s fragment" in p for p in check(good, fragment=10.0))
    assert any("#EXTINF 3.000" in p for p in check(good, extinf=3.0))  # duration and frame count disagree
    data = good.read_bytes()
    headless = tmp_path / "headless.ts"
    headless.write_bytes(data[188 * (len(data) // 188 // 3):])  # starts mid-GOP
    assert "does not start with a video keyframe" in check(headless)
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2 + 100])
    assert any("not a multiple of 188" in p for p in check(cut))


def test_hls_lag_is_media_sent_minus_media_in_finished_segments(tmp_path: Path) -> None:
    root = tmp_path / "hls"
    root.mkdir()
    (root / "a.m3u8").write_text("#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:10.0,\na-1.ts\n#EXTINF:10.0,\na-2.ts\n")
    (root / "b.m3u8").write_text("#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nb-0.ts\n")
    watch = PlaylistWatch(root, tmp_path / "kept", fragment=10.0)
    watch.poll(in_window=True)
    assert watch.covered() == {"a": 30.0, "b": 10.0}  # a-0 left the playlist before the first read
    lag = hls_lag(watch, {"a": 100.0, "b": 100.0, "c": 130.0}, at=135.0, gop=2.0)
    # a: 35 s sent, 30 finished (5 in the open segment); b: 25 s, one segment overdue; c: 5 s, none finished yet
    assert lag["hls_lag_max_s"] == 25.0 and lag["hls_lag_median_s"] == 5.0 and lag["hls_lag_p90_s"] == 25.0
    assert lag["streams_hls_behind"] == 1 and lag["hls_behind_limit_s"] == 14.0


def test_audio_may_shift_between_segments_but_not_go_missing() -> None:
    def seg(seq: int, frames: int) -> Segment:
        s = Segment("live/a", f"a-{seq}.ts", 1.0, seq, True)
        s.probe = {"first_video_pts": float(seq), "audio": {"codec": "aac", "packets": frames}}
        return s

    shifted = [seg(0, 35), seg(1, 48), seg(2, 46)]  # nginx-rtmp: audio carried over, 129 = 3 x 43
    assert check_continuity(shifted) == 0
    lost = [seg(0, 35), seg(1, 35), seg(2, 35), seg(3, 35)]  # 140 instead of 172
    assert check_continuity(lost) == 1
    assert lost[3].problems == ["140 AAC frames in segments 0-3, 172 expected"]
