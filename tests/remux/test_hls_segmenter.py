"""The sans-IO HLS segmenter: cutting rules, window and cleanup, lifecycle, names; then real ffprobe/ffmpeg.

Actions are applied to an in-memory disk that checks the ordering promises (a playlist only names complete
segments; appends are contiguous; only written files are deleted), or to tmp_path for the real tools.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec.hls_playlist import parse_media_playlist
from livesrv.config import HlsConfig
from livesrv.remux.hls import (
    AppendSegment,
    CloseSegment,
    DeleteFile,
    DeleteLeftovers,
    HlsAction,
    HlsSegmenter,
    WritePlaylist,
    render_template,
)
from tests.codec.test_mpegts import (
    A,
    Pkt,
    V,
    aac_frame,
    aac_sh,
    avc_sh,
    check_continuity,
    ffmpeg_decode_errors,
    ffprobe,
    flv_packets,
    inter_frame,
    key_frame,
    read_ts,
)


def hls(**kw: object) -> HlsConfig:
    return HlsConfig(enabled=True, **kw)  # type: ignore[arg-type]


class Disk:
    """In-memory hls_path that enforces the action-ordering promises."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | str] = {}
        self.parts: dict[str, bytearray] = {}  # open segments
        self.appends: dict[str, int] = {}  # appends per segment
        self.deleted: list[str] = []
        self.playlists: list[str] = []

    def apply(self, actions: Iterable[HlsAction]) -> None:
        for act in actions:
            if isinstance(act, AppendSegment):
                assert act.name not in self.files, f"segment {act.name} written twice"
                if act.offset == 0:
                    assert act.name not in self.parts, f"segment {act.name} restarted"
                    self.parts[act.name] = bytearray()
                part = self.parts[act.name]
                assert act.offset == len(part) and act.data, (act.name, act.offset, len(part))
                part += act.data
                self.appends[act.name] = self.appends.get(act.name, 0) + 1
            elif isinstance(act, CloseSegment):
                assert act.name not in self.files, f"segment {act.name} written twice"
                data = bytes(self.parts.pop(act.name))
                assert len(data) == act.size
                self.files[act.name] = data
            elif isinstance(act, WritePlaylist):
                pl = parse_media_playlist(act.text)
                base = act.name.rpartition("/")[0]
                for seg in pl.segments:
                    path = f"{base}/{seg.uri}" if base else seg.uri
                    assert _norm(path) in self.files, f"playlist names {path}, not written"
                self.files[act.name] = act.text
                self.playlists.append(act.text)
            elif isinstance(act, DeleteFile):
                if act.name in self.parts:  # an open segment: its part goes
                    del self.parts[act.name]
                    continue
                assert act.name in self.files, f"deleting {act.name}, never written"
                del self.files[act.name]
                self.deleted.append(act.name)
            else:
                assert isinstance(act, DeleteLeftovers)

    def segment(self, name: str) -> bytes:
        data = self.files[name]
        assert isinstance(data, bytes)
        return data


def _norm(path: str) -> str:
    import posixpath

    return posixpath.normpath(path)


def apply_to_dir(actions: Iterable[HlsAction], root: Path) -> None:
    """What the asyncio adapter does (without its thread)."""
    from livesrv.servers.hls.files import perform_actions

    acts = list(actions)
    assert perform_actions(str(root), acts) == [None] * len(acts)


def av_stream(
    seconds: float, *, start_ms: int = 0, gop_ms: int = 1000, fps: int = 25, audio: bool = True,
    video: bool = True, headers: bool = True,
) -> Iterator[Pkt]:
    """A synthetic publisher: sequence headers, then video and AAC frames interleaved by timestamp."""
    if headers:
        if video:
            yield V(start_ms, avc_sh())
        if audio:
            yield A(start_ms, aac_sh())
    frames: list[tuple[int, int, Pkt]] = []
    end = seconds * 1000
    if video:
        step = 1000 / fps
        n = 0
        while n * step < end:
            t = round(n * step)
            frames.append((start_ms + t, 1, V(start_ms + t, key_frame(size=50) if t % gop_ms == 0 else inter_frame(size=20))))
            n += 1
    if audio:
        n = 0
        while n * 1024 * 1000 / 44100 < end:
            t = start_ms + math.floor(n * 1024 * 1000 / 44100)
            frames.append((t, 0, A(t, aac_frame(bytes(30)))))
            n += 1
    frames.sort(key=lambda f: (f[0], f[1]))
    for _, _, p in frames:
        yield p


def feed_all(seg: HlsSegmenter, pkts: Iterable[Pkt], disk: Disk | None = None) -> list[HlsAction]:
    actions: list[HlsAction] = []
    for p in pkts:
        actions += seg.feed(p)
    if disk is not None:
        disk.apply(actions)
    return actions


def durations(seg: HlsSegmenter) -> list[float]:
    return [s.duration for s in seg.segments]


# --------------------------------------------------------------------------- cutting rules


def test_cuts_on_keyframes_once_the_fragment_is_reached() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=2, hls_window=60), "__defaultVhost__", "live", "test")
    assert seg.playlist_name == "live/test.m3u8"
    feed_all(seg, av_stream(7), disk)
    assert durations(seg) == [2.0, 2.0, 2.0]
    disk.apply(seg.finish())
    # The last one ends with its last frame: audio at 6.989 s + 23 ms, after the last video frame's end (7.0 s).
    assert durations(seg)[:3] == [2.0, 2.0, 2.0] and durations(seg)[3] == pytest.approx(1.012, abs=0.002)
    assert [s.name for s in seg.segments] == [f"live/test-{i}.ts" for i in range(4)]
    assert [s.uri for s in seg.segments] == [f"test-{i}.ts" for i in range(4)]
    assert disk.files["live/test.m3u8"] == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n"
        "#EXTINF:2.000,\ntest-0.ts\n#EXTINF:2.000,\ntest-1.ts\n#EXTINF:2.000,\ntest-2.ts\n"
        f"#EXTINF:{seg.segments[3].duration:.3f},\ntest-3.ts\n"
    )
    cc: dict[int, int] = {}
    for s in seg.segments:
        data = disk.segment(s.name)
        assert s.size == len(data)
        ts = read_ts(data)
        assert [p.pid for p in ts.packets[:2]] == [0, 0x1000]  # PAT/PMT first in every segment
        video = ts.pes_of(0x100)
        assert video[0].random_access and video[0].dts == s.start_ms * 90
        assert len(video) == round(25 * s.duration)
        assert all(p.pts is not None and s.start_ms * 90 - 3000 <= p.pts for p in ts.pes_of(0x101))
        cc = check_continuity(data, cc)  # segments continue each other's counters


def test_wait_keyframe_keeps_long_gops_whole() -> None:
    seg = HlsSegmenter(hls(hls_fragment=2, hls_td_ratio=1.2, hls_wait_keyframe=True), "v", "live", "s")
    feed_all(seg, av_stream(10, gop_ms=3000))
    assert durations(seg) == [3.0, 3.0, 3.0]


def test_without_wait_keyframe_a_long_segment_is_cut_at_the_td_ratio() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=2, hls_td_ratio=1.5, hls_wait_keyframe=False), "v", "live", "s")
    feed_all(seg, av_stream(10, gop_ms=10_000), disk)
    assert durations(seg) == [3.0, 3.0, 3.0]
    later = read_ts(disk.segment(seg.segments[1].name)).pes_of(0x100)
    assert not later[0].random_access  # cut between keyframes, as asked
    # ... but keyframes still cut at the fragment.
    seg = HlsSegmenter(hls(hls_fragment=2, hls_td_ratio=1.5, hls_wait_keyframe=False), "v", "live", "s")
    feed_all(seg, av_stream(7, gop_ms=1000))
    assert durations(seg) == [2.0, 2.0, 2.0]


def test_pure_audio_is_cut_on_time() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=2), "v", "radio", "s")
    feed_all(seg, av_stream(9, video=False), disk)
    starts = [s.start_ms for s in seg.segments]
    assert len(starts) == 4
    assert all(2000 <= d * 1000 < 2000 + 24 for d in durations(seg))
    assert [b - a for a, b in zip(starts, starts[1:])] == [round(d * 1000) for d in durations(seg)[:-1]]
    ts = read_ts(disk.segment(seg.segments[1].name))
    assert ts.pmt[0]["pcr_pid"] == 0x101 and ts.pes_of(0x101)[0].pts == starts[1] * 90


def test_waits_for_the_first_keyframe() -> None:
    seg = HlsSegmenter(hls(hls_fragment=1), "v", "live", "s")
    pkts = [V(0, avc_sh()), A(0, aac_sh()), A(0, aac_frame()), V(0, inter_frame()), V(40, inter_frame()),
            A(40, aac_frame())]
    assert feed_all(seg, pkts) == [] and seg.segments == ()
    feed_all(seg, av_stream(2.5, start_ms=80, headers=False))
    assert seg.segments[0].start_ms == 80


# --------------------------------------------------------------------------- window and cleanup


def test_window_removes_and_deletes_old_segments() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=3), "v", "live", "s")
    actions = feed_all(seg, av_stream(10))
    # Deletions come after the playlist that stopped naming them.
    for i, act in enumerate(actions):
        if isinstance(act, DeleteFile):
            assert isinstance(actions[i - 1], (WritePlaylist, DeleteFile))
    disk.apply(actions)
    assert [s.sequence for s in seg.segments] == [5, 6, 7, 8]  # 4 x 1 s: the 4th crosses the 3 s window
    assert disk.deleted == [f"live/s-{i}.ts" for i in range(5)]
    assert sorted(disk.files) == sorted(["live/s.m3u8"] + [f"live/s-{i}.ts" for i in range(5, 9)])
    pl = parse_media_playlist(disk.playlists[-1])
    assert pl.media_sequence == 5 and [s.uri for s in pl.segments] == [f"s-{i}.ts" for i in range(5, 9)]
    for text in disk.playlists:
        d = [s.duration for s in parse_media_playlist(text).segments]
        assert sum(d[1:]) <= 3


def test_without_cleanup_old_segments_stay_on_disk() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=2, hls_cleanup=False), "v", "live", "s")
    feed_all(seg, av_stream(8), disk)
    assert disk.deleted == [] and len(seg.segments) == 3
    assert sum(1 for name in disk.files if name.endswith(".ts")) == 7
    disk.apply(seg.dispose())  # dispose deletes what the playlist names, and the playlist
    assert sorted(disk.files) == [f"live/s-{i}.ts" for i in range(4)]


def test_dispose_deletes_everything() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=30), "v", "live", "s")
    feed_all(seg, av_stream(3.5), disk)
    disk.apply(seg.finish())
    disk.apply(seg.dispose())
    assert disk.files == {} and seg.segments == ()
    assert seg.dispose() == []
    # A new publisher after dispose starts a fresh playlist (no discontinuity), numbers go on.
    feed_all(seg, av_stream(2.5), disk)
    assert seg.segments[0].sequence == 4 and not seg.segments[0].discontinuity
    assert "#EXT-X-DISCONTINUITY\n" not in disk.playlists[-1]


# --------------------------------------------------------------------------- lifecycle


def test_republish_marks_a_discontinuity() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=60), "v", "live", "s")
    feed_all(seg, av_stream(2.5), disk)
    assert len(seg.segments) == 2
    acts = seg.discontinuity()  # a new publisher takes over without an unpublish in between
    assert [type(a) for a in acts] == [AppendSegment, CloseSegment, WritePlaylist]
    disk.apply(acts)
    assert durations(seg)[-1] == 0.52
    feed_all(seg, av_stream(2.5, start_ms=0), disk)  # its clock starts at 0 again
    disk.apply(seg.finish())
    flags = [s.discontinuity for s in seg.segments]
    assert flags == [False, False, False, True, False, False]
    assert all(d > 0 for d in durations(seg))
    text = disk.playlists[-1]
    assert "#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\ns-3.ts\n" in text
    pcrs = [p for p in read_ts(disk.segment("live/s-3.ts")).packets if p.pcr is not None]
    assert pcrs[0].discontinuity


def test_finish_then_republish() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=2, hls_window=60), "v", "live", "s")
    feed_all(seg, av_stream(3), disk)
    acts = seg.finish()
    assert [type(a) for a in acts] == [AppendSegment, CloseSegment, WritePlaylist]
    disk.apply(acts)
    assert durations(seg) == [2.0, pytest.approx(1.018, abs=0.002)]
    assert seg.finish() == [WritePlaylist("live/s.m3u8", disk.files["live/s.m3u8"])]  # idempotent
    assert not seg.muxer.has_video  # the publisher's codecs are forgotten
    disk.apply(seg.discontinuity())
    feed_all(seg, av_stream(3, audio=False), disk)
    disk.apply(seg.finish())
    assert [s.discontinuity for s in seg.segments] == [False, False, True, False]
    ts = read_ts(disk.segment(seg.segments[2].name))
    assert ts.pmt[0]["streams"] == [(0x1B, 0x100)]  # the new publisher has no audio


def test_discontinuity_before_anything_is_a_no_op() -> None:
    seg = HlsSegmenter(hls(hls_fragment=1), "v", "live", "s")
    assert seg.discontinuity() == [] and seg.finish() == []
    feed_all(seg, av_stream(1.5))
    assert not seg.segments[0].discontinuity


def test_timestamp_jumps_start_a_new_segment_with_a_discontinuity() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=2, hls_window=60), "v", "live", "s")
    feed_all(seg, av_stream(3, start_ms=50_000), disk)
    feed_all(seg, av_stream(3, start_ms=0, headers=False), disk)  # clock reset, nobody told us
    feed_all(seg, av_stream(3, start_ms=900_000, headers=False), disk)  # and a huge jump forward
    disk.apply(seg.finish())
    assert durations(seg) == [2.0, pytest.approx(1.018, abs=0.002)] * 3
    assert [s.discontinuity for s in seg.segments] == [False, False, True, False, True, False]


def test_audio_offset_from_video_is_not_a_jump() -> None:
    """Encoders whose audio clock runs 1.5 s behind video (A/V sync offsets) must not cause discontinuities."""
    video = [p for p in av_stream(7, start_ms=5000, audio=False)]
    audio = [A(p.timestamp - 1500, p.payload) for p in av_stream(7, start_ms=5000, video=False)]
    pkts = sorted(video + audio, key=lambda p: p.timestamp + (1500 if p.kind == 8 else 0))
    seg = HlsSegmenter(hls(hls_fragment=2), "v", "live", "s")
    feed_all(seg, pkts)
    assert durations(seg) == [2.0, 2.0, 2.0] and not any(s.discontinuity for s in seg.segments)


def test_video_the_muxer_cannot_carry_leaves_an_audio_only_stream() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1), "v", "live", "s")
    pkts = [V(0, b"\x90av01\x81\x00\x0c\x00")]
    for i, p in enumerate(av_stream(2.5, video=False)):
        pkts.append(p)
        if i % 2:
            pkts.append(V(p.timestamp, b"\x91av01\x12\x00"))
    feed_all(seg, pkts, disk)
    assert len(seg.segments) == 2 and seg.muxer.skipped == sum(1 for p in pkts if p.kind == 9)
    assert read_ts(disk.segment(seg.segments[0].name)).pmt[0]["streams"] == [(0x0F, 0x101)]


def test_discontinuity_sequence_counts_discontinuities_that_left_the_window() -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=2), "v", "live", "s")
    feed_all(seg, av_stream(2.5), disk)
    disk.apply(seg.discontinuity())
    feed_all(seg, av_stream(6, start_ms=0), disk)
    pl = parse_media_playlist(disk.playlists[-1])
    assert pl.discontinuity_sequence == 1 and not any(s.discontinuity for s in pl.segments)


def test_malformed_packets_are_counted_and_skipped() -> None:
    seg = HlsSegmenter(hls(hls_fragment=1), "v", "live", "s")
    pkts = list(av_stream(2.5))
    pkts.insert(10, V(pkts[10].timestamp, b"\x27\x01\x00\x00\x00\x00\x00\x00\x09\x41"))
    pkts.insert(5, A(0, b"\xaf\x00\x12"))  # truncated ASC
    feed_all(seg, pkts)
    assert seg.dropped == 2 and durations(seg) == [1.0, 1.0]


# --------------------------------------------------------------------------- names


def test_templates() -> None:
    assert render_template("[vhost]/[app]/[stream]-[seq]-[timestamp].ts", vhost="v", app="a", stream="s", seq=3,
                           timestamp=99) == "v/a/s-3-99.ts"
    seg = HlsSegmenter(
        hls(hls_fragment=1, hls_m3u8_file="[vhost]/[app]/[stream].m3u8", hls_ts_file="[vhost]/[app]/[stream]/[timestamp]-[seq].ts"),
        "example.com", "live", "cam",
    )
    acts: list[HlsAction] = []
    for p in av_stream(2.5):
        acts += seg.feed(p, now_ms=1_700_000_000_000 + p.timestamp)
    Disk().apply(acts)
    assert seg.playlist_name == "example.com/live/cam.m3u8"
    assert [s.name for s in seg.segments] == ["example.com/live/cam/1700000000000-0.ts",
                                              "example.com/live/cam/1700000001000-1.ts"]
    assert seg.segments[0].uri == "cam/1700000000000-0.ts"
    # Without a wall clock, [timestamp] is the segment's stream time.
    seg = HlsSegmenter(hls(hls_fragment=1, hls_ts_file="[app]/[stream]-[timestamp].ts"), "v", "live", "s")
    feed_all(seg, av_stream(2.5, start_ms=5000))
    assert [s.name for s in seg.segments] == ["live/s-5000.ts", "live/s-6000.ts"]


def test_segments_outside_the_playlist_directory() -> None:
    seg = HlsSegmenter(hls(hls_fragment=1, hls_m3u8_file="m3u8/[stream].m3u8", hls_ts_file="ts/[app]/[stream]-[seq].ts"),
                       "v", "live", "s")
    feed_all(seg, av_stream(1.5))
    assert seg.segments[0].uri == "../ts/live/s-0.ts"
    flat = HlsSegmenter(hls(hls_fragment=1, hls_m3u8_file="[stream].m3u8", hls_ts_file="[stream]-[seq].ts"), "v", "a", "s")
    feed_all(flat, av_stream(1.5))
    assert flat.playlist_name == "s.m3u8" and flat.segments[0].uri == "s-0.ts"


@pytest.mark.parametrize(("app", "stream"), [("..", "s"), ("live", "../../etc/passwd"), ("a/../..", "s")])
def test_names_cannot_leave_hls_path(app: str, stream: str) -> None:
    with pytest.raises(ValueError):
        HlsSegmenter(hls(), "v", app, stream)


def test_leading_slash_stays_inside_hls_path() -> None:
    seg = HlsSegmenter(hls(hls_m3u8_file="/[app]/[stream].m3u8"), "v", "live", "s")
    assert seg.playlist_name == "live/s.m3u8"


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fragment=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
    window=st.sampled_from([1.0, 2.5, 4.0, 10.0]),
    gop_ms=st.sampled_from([400, 1000, 2000, 5000]),
    wait=st.booleans(),
    ratio=st.sampled_from([1.0, 1.5, 2.0]),
    audio=st.booleans(),
    seconds=st.floats(0.5, 12),
)
def test_property_segments_and_window(
    fragment: float, window: float, gop_ms: int, wait: bool, ratio: float, audio: bool, seconds: float
) -> None:
    disk = Disk()
    seg = HlsSegmenter(hls(hls_fragment=fragment, hls_window=window, hls_wait_keyframe=wait, hls_td_ratio=ratio),
                       "v", "live", "s")
    feed_all(seg, av_stream(seconds, gop_ms=gop_ms, audio=audio), disk)
    disk.apply(seg.finish())
    written = [name for name in disk.files if name.endswith(".ts")] + disk.deleted
    assert len(set(written)) == len(written)
    for text in disk.playlists:
        pl = parse_media_playlist(text)
        d = [s.duration for s in pl.segments]
        assert sum(d[1:]) <= window + 1e-9
        assert pl.target_duration == max(1, max(math.ceil(float(f"{x:.3f}")) for x in d))
    frag_ms, force_ms = fragment * 1000, fragment * ratio * 1000
    for s in seg.segments[:-1]:  # the last one was closed by finish(), not cut
        ms = round(s.duration * 1000)
        keyframe_cut = (s.start_ms + ms) % gop_ms == 0 and frag_ms <= ms < frag_ms + gop_ms
        forced_cut = force_ms <= ms < force_ms + 40
        assert keyframe_cut or (forced_cut and not wait)
        video = read_ts(disk.segment(s.name)).pes_of(0x100)
        assert video[0].dts == s.start_ms * 90
        assert video[0].random_access or not wait
    assert disk.playlists[-1] == seg.playlist.render()


# --------------------------------------------------------------------------- real tools


def test_sample_flv_to_hls_plays_in_ffmpeg(sample_flv: Path, tmp_path: Path) -> None:
    """Segments written incrementally (a small buffer: each ~75 kB segment in several appends) read back in
    ffprobe with the durations the playlist says, and play through in ffmpeg."""
    root = tmp_path / "html"
    seg = HlsSegmenter(hls(hls_fragment=2, hls_window=60), "__defaultVhost__", "live", "test", buffer_bytes=16 * 1024)
    acts: list[HlsAction] = []
    for p in flv_packets(sample_flv):
        acts += seg.feed(p)
    acts += seg.finish(endlist=True)  # so that ffmpeg stops at the end instead of polling for more
    appends = [a.name for a in acts if isinstance(a, AppendSegment)]
    assert all(appends.count(s.name) >= 3 for s in seg.segments), appends
    apply_to_dir(acts, root)
    playlist = root / "live" / "test.m3u8"
    pl = parse_media_playlist(playlist.read_text())
    assert pl.endlist
    assert [s.uri for s in pl.segments] == ["test-0.ts", "test-1.ts", "test-2.ts"]
    assert sum(s.duration for s in pl.segments) == pytest.approx(6.0, abs=0.1)

    info = ffprobe(playlist)
    streams = {s["codec_type"]: s for s in info["streams"]}
    v, a = streams["video"], streams["audio"]
    assert (v["codec_name"], v["width"], v["height"]) == ("h264", 320, 240)
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("aac", "44100", 2)
    assert 0 <= float(v["start_time"]) < 0.2 and 0 <= float(a["start_time"]) < 0.2
    assert ffmpeg_decode_errors(playlist) == ""
    for s in pl.segments:
        probed = float(ffprobe(root / "live" / s.uri)["format"]["duration"])
        assert probed <= pl.target_duration + 0.1
        assert probed == pytest.approx(s.duration, abs=0.1)


def test_sample_flv_to_hls_with_a_small_window(sample_flv: Path, tmp_path: Path) -> None:
    root = tmp_path / "html"
    seg = HlsSegmenter(hls(hls_fragment=1, hls_window=2), "__defaultVhost__", "live", "test")
    acts: list[HlsAction] = []
    for p in flv_packets(sample_flv):
        acts += seg.feed(p)
    acts += seg.finish()
    apply_to_dir(acts, root)
    playlist = root / "live" / "test.m3u8"
    pl = parse_media_playlist(playlist.read_text())
    on_disk = sorted(p.name for p in (root / "live").glob("*.ts"))
    assert on_disk == sorted(s.uri for s in pl.segments)  # everything outside the window was deleted
    d = [s.duration for s in pl.segments]
    assert sum(d[1:]) <= 2 < sum(d)  # SRS's rule: the newest segments within the window, plus the one crossing it
    assert pl.media_sequence == 6 - len(d) and not pl.endlist
    assert all(s.duration <= pl.target_duration for s in pl.segments)
    # A live playlist: ffmpeg polls it again, once, before deciding it ended.
    assert ffmpeg_decode_errors(playlist, "-m3u8_hold_counters", "1", "-live_start_index", "0") == ""
    info = ffprobe(playlist)
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}


# --------------------------------------------------------------------------- incremental segments


def run_segmenter(pkts: Iterable[Pkt], buffer_bytes: int, **kw: object) -> tuple[list[HlsAction], HlsSegmenter]:
    """A publish, a republish after a clock reset, and the finish: every way a segment is closed."""
    pkts = list(pkts)
    seg = HlsSegmenter(hls(hls_window=60, **kw), "v", "live", "s", buffer_bytes=buffer_bytes)
    acts: list[HlsAction] = []
    for p in pkts:
        acts += seg.feed(p)
    acts += seg.discontinuity()
    for p in pkts[: len(pkts) // 2]:
        acts += seg.feed(p)
    acts += seg.finish()
    return acts, seg


#: The old path: nothing is handed out before the segment closes, then ONE append holds ``b"".join`` of every
#: chunk the muxer produced for it (what WriteSegment used to carry).
WHOLE: int = 1 << 62


@pytest.mark.parametrize("buffer_bytes", [1, 188, 5000, 64 * 1024])
def test_incremental_segments_are_byte_identical_to_whole_ones(sample_flv: Path, buffer_bytes: int) -> None:
    for pkts, kw in [(flv_packets(sample_flv), {"hls_fragment": 2}),
                     (av_stream(9, gop_ms=2000), {"hls_fragment": 3}),
                     (av_stream(7, video=False), {"hls_fragment": 2})]:
        pkts = list(pkts)
        ref_acts, ref = run_segmenter(pkts, WHOLE, **kw)
        acts, seg = run_segmenter(pkts, buffer_bytes, **kw)
        ref_disk, disk = Disk(), Disk()
        ref_disk.apply(ref_acts)
        disk.apply(acts)
        assert set(ref_disk.appends.values()) == {1}  # the reference really is the whole-segment path
        assert len(disk.files) == len(ref_disk.files) >= 6
        assert disk.files == ref_disk.files  # every segment byte for byte, and the playlist
        assert disk.playlists == ref_disk.playlists and seg.segments == ref.segments
        # ... and really incremental: segments went out in several appends, each bounded.
        big = max(len(d) for d in disk.files.values())
        assert max(disk.appends.values()) >= min(big // (buffer_bytes + 2000), 5)
        assert all(len(a.data) < buffer_bytes + 20_000 for a in acts if isinstance(a, AppendSegment))  # + a frame
        # The real writer puts the same bytes on disk (appends, then the rename).
        with tempfile.TemporaryDirectory() as root:
            apply_to_dir([a for a in acts if not isinstance(a, DeleteFile)], Path(root))
            for name, data in ref_disk.files.items():
                on_disk = Path(root, name).read_bytes() if name.endswith(".ts") else Path(root, name).read_text()
                assert on_disk == data, name
            assert not [p for p in Path(root).rglob(".*")]  # no part left


def high_bitrate(seconds: int, *, kbit: int, gop_s: int = 2, fps: int = 25) -> Iterator[Pkt]:
    """Video only, ``kbit`` kbit/s: enough bytes to show what a long segment would cost if held."""
    yield V(0, avc_sh())
    size = kbit * 1000 // 8 // fps
    for n in range(seconds * fps):
        t = n * 1000 // fps
        yield V(t, key_frame(size=size) if n % (gop_s * fps) == 0 else inter_frame(size=size))


def test_open_segment_memory_is_bounded_however_long_the_fragment() -> None:
    """hls_fragment 60 at 4 Mbit/s: a 29 MB segment goes out in appends while the segmenter holds < 128 KiB."""
    import tracemalloc

    from livesrv.remux.hls import SEGMENT_BUFFER_BYTES

    seg = HlsSegmenter(hls(hls_fragment=60), "v", "live", "s")
    out = 0
    peak = 0
    pkts = high_bitrate(59, kbit=4000)
    for p in pkts:  # the first segment: warm up (muxer tables, allocator)
        for a in seg.feed(p):
            if isinstance(a, AppendSegment):
                out += len(a.data)
        peak = max(peak, seg.buffered)
        if p.timestamp >= 2000:
            break
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        grew = 0
        for p in pkts:
            for a in seg.feed(p):  # what the writer gets is written and dropped
                if isinstance(a, AppendSegment):
                    out += len(a.data)
            peak = max(peak, seg.buffered)
            if p.timestamp % 1000 == 0:
                grew = max(grew, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert seg.segments == () and out > 28_000_000  # all of it still the open segment
    assert 0 < peak < SEGMENT_BUFFER_BYTES
    assert grew < SEGMENT_BUFFER_BYTES + 256 * 1024, grew  # the bound, plus a frame and the interpreter's noise
    acts = seg.finish()
    assert [type(a) for a in acts] == [AppendSegment, CloseSegment, WritePlaylist]
    assert acts[1].size == out + len(acts[0].data) == seg.segments[0].size  # type: ignore[union-attr]


def test_a_playlist_another_worker_wrote_is_continued() -> None:
    """``workers N``: the stream moved to another process, whose output continues the playlist on disk: the old
    segments stay in the window (and are deleted as they leave it), the numbers go on, a discontinuity marks
    the new timeline."""
    from livesrv.codec.hls_playlist import parse_media_playlist
    from livesrv.remux.hls import DeleteFile, WritePlaylist

    first = HlsSegmenter(hls(hls_fragment=1, hls_window=3), "__defaultVhost__", "live", "s")
    acts = feed_all(first, av_stream(4.5)) + first.finish()
    written = [a.text for a in acts if isinstance(a, WritePlaylist)][-1]
    old = parse_media_playlist(written)
    assert old.segments and old.media_sequence > 0

    second = HlsSegmenter(hls(hls_fragment=1, hls_window=3), "__defaultVhost__", "live", "s")
    second.continue_after(old)
    assert [s.name for s in second.segments] == [f"live/{s.uri}" for s in old.segments]
    acts = feed_all(second, av_stream(6, start_ms=0))
    new = parse_media_playlist([a.text for a in acts if isinstance(a, WritePlaylist)][-1])
    assert new.media_sequence >= old.media_sequence
    numbers = [new.media_sequence + i for i in range(len(new.segments))]
    assert numbers[-1] > old.media_sequence + len(old.segments) - 1  # (went on after the old ones)
    deleted = {a.name for a in acts if isinstance(a, DeleteFile)}
    assert {f"live/{s.uri}" for s in old.segments} <= deleted  # (they left the window: deleted by the new owner)
    first_new = next(i for i, s in enumerate(second.segments) if s.sequence >= old.media_sequence + len(old.segments))
    assert second.segments[first_new].discontinuity or new.discontinuity_sequence > old.discontinuity_sequence

    # Names outside hls_path are never taken over (only the numbering goes on).
    odd = HlsSegmenter(hls(hls_fragment=1), "__defaultVhost__", "live", "s")
    odd.continue_after(parse_media_playlist("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-TARGETDURATION:1\n"
                                            "#EXTINF:1.000,\n../../etc/x.ts\n"))
    assert odd.segments == () and odd.playlist.media_sequence == 8


def test_appends_carry_the_muxers_pieces_unchanged_after_they_are_handed_out() -> None:
    """An append's pieces are what the muxer produced, not joined: their sizes add up to its ``size`` and the
    offsets follow, and nothing fed later changes the bytes of an append already handed out."""
    seg = HlsSegmenter(hls(hls_fragment=2), "v", "live", "s", buffer_bytes=4096)
    seen: list[tuple[AppendSegment, bytes]] = []
    offsets: dict[str, int] = {}
    for pkt in av_stream(9):
        for act in seg.feed(pkt):
            if isinstance(act, AppendSegment):
                assert act.size == sum(len(p) for p in act.pieces) > 0
                assert act.offset == offsets.get(act.name, 0)
                offsets[act.name] = act.offset + act.size
                seen.append((act, bytes(act.data)))
    seg.finish()
    assert len(seen) > 10 and any(len(a.pieces) > 1 for a, _ in seen)
    assert all(a.data == snapshot for a, snapshot in seen)
