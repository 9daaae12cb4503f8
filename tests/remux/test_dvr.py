"""The sans-IO DVR recorder: file cuts, timestamps, onMetaData written back, path templates."""

from __future__ import annotations

import struct
import time

import pytest

from livesrv.codec import amf0, flv
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket
from livesrv.remux.dvr import (
    AppendFile,
    CloseFile,
    DvrRecorder,
    OpenFile,
    dvr_applies,
    metadata_tag,
    render_dvr_path,
)

VSH = bytes([0x17, 0, 0, 0, 0]) + b"\x01\x64\x00\x1f\xff\xe1\x00\x00\x01\x00\x00"
ASH = bytes([0xAF, 0]) + b"\x12\x10"


def vkey(ts: int) -> MediaPacket:
    return MediaPacket(VIDEO, ts, bytes([0x17, 1, 0, 0, 0]) + b"key", keyframe=True)


def vinter(ts: int) -> MediaPacket:
    return MediaPacket(VIDEO, ts, bytes([0x27, 1, 0, 0, 0]) + b"inter")


def audio(ts: int) -> MediaPacket:
    return MediaPacket(AUDIO, ts, bytes([0xAF, 1]) + b"aac")


def meta() -> MediaPacket:
    return MediaPacket(DATA, 0, amf0.encode("onMetaData", amf0.ECMAArray(width=320.0, videocodecid=7.0,
                                                                          duration=99.0)))


def headers(start: int = 0) -> list[MediaPacket]:
    return [meta(), MediaPacket(VIDEO, start, VSH, True, True), MediaPacket(AUDIO, start, ASH, False, True)]


def run(rec: DvrRecorder, pkts: list[MediaPacket]) -> dict[int, bytearray]:
    """Feed, finish, and apply the actions to in-memory files (patches included); returns closed files."""
    files: dict[int, bytearray] = {}
    closed: dict[int, bytearray] = {}
    actions = []
    for p in pkts:
        actions += rec.feed(p, 1_700_000_000.0)
    actions += rec.finish()
    for a in actions:
        if isinstance(a, OpenFile):
            files[a.fid] = bytearray(a.data)
        elif isinstance(a, AppendFile):
            files[a.fid] += a.data
        else:
            assert isinstance(a, CloseFile)
            buf = files.pop(a.fid)
            assert len(buf) == a.size
            for off, data in a.patches:
                buf[off:off + len(data)] = data
            closed[a.fid] = buf
    assert not files
    return closed


def tags(data: bytes) -> list[flv.FLVTag]:
    events = flv.FLVDecoder().feed(data)
    assert isinstance(events[0], flv.FLVHeader)
    return [e for e in events if isinstance(e, flv.FLVTag)]


def recorder(**kw: object) -> DvrRecorder:
    return DvrRecorder(path="./rec/[app]/[stream].[timestamp].flv", vhost="v", app="live", stream="s", **kw)  # type: ignore[arg-type]


def test_session_file_starts_at_keyframe_at_zero_with_metadata_written_back() -> None:
    pkts = [*headers(), audio(1000), vinter(1000), vkey(1040), audio(1050)]
    pkts += [vinter(1040 + 40 * i) for i in range(1, 50)] + [audio(3000)]
    (data,) = run(recorder(), pkts).values()
    ts = tags(bytes(data))
    assert ts[0].tag_type == flv.SCRIPT
    name, arr = amf0.decode_all(ts[0].payload)
    assert name == "onMetaData" and list(arr)[:2] == ["duration", "filesize"]
    assert arr["duration"] == pytest.approx(1.96) and arr["filesize"] == len(data) and arr["width"] == 320
    assert [t.payload for t in ts[1:3]] == [VSH, ASH]  # sequence headers first, at 0
    assert ts[3].payload.endswith(b"key") and ts[3].timestamp == 0  # nothing before the keyframe
    stamps = [t.timestamp for t in ts if t.tag_type == flv.VIDEO]
    assert stamps == sorted(stamps) and stamps[-1] == 1960


def test_segment_plan_cuts_at_keyframes_after_duration() -> None:
    pkts = headers()
    for i in range(250):  # 10 s at 25 fps, a keyframe every second
        pkts.append(vkey(i * 40) if i % 25 == 0 else vinter(i * 40))
        pkts.append(audio(i * 40 + 5))
    files = run(recorder(plan="segment", duration=3.0), pkts)
    assert len(files) == 4  # 0-3, 3-6, 6-9, 9-10
    for data in files.values():
        ts = tags(bytes(data))
        assert [t.payload for t in ts[1:3]] == [VSH, ASH]
        first = next(t for t in ts[3:] if t.tag_type == flv.VIDEO)
        assert first.payload.endswith(b"key") and first.timestamp == 0
    durations = [amf0.decode_all(tags(bytes(d))[0].payload)[1]["duration"] for d in files.values()]
    assert durations[:3] == [pytest.approx(2.96, abs=0.05)] * 3


def test_segment_plan_without_wait_keyframe_cuts_on_any_frame() -> None:
    pkts = headers() + [vkey(0)] + [vinter(i * 40) for i in range(1, 200)]
    files = run(recorder(plan="segment", duration=2.0, wait_keyframe=False), pkts)
    assert len(files) == 4


def test_audio_only_stream_records_and_cuts() -> None:
    pkts = [MediaPacket(AUDIO, 0, ASH, False, True)] + [audio(i * 23) for i in range(500)]
    files = run(recorder(plan="segment", duration=5.0), pkts)
    assert len(files) == 3
    data = bytes(next(iter(files.values())))
    assert data[4] == 4  # FLV header: audio only


def test_time_jitter_off_keeps_stream_timestamps() -> None:
    pkts = [*headers(5000), vkey(5000), vinter(5040)]
    (data,) = run(recorder(time_jitter="off"), pkts).values()
    assert [t.timestamp for t in tags(bytes(data)) if t.tag_type == flv.VIDEO] == [5000, 5000, 5040]


def test_no_keyframe_no_file() -> None:
    assert run(recorder(), [*headers(), vinter(0), audio(10)]) == {}


def test_metadata_tag_offsets() -> None:
    body, dur, size = metadata_tag({"a": 1.0})
    assert struct.unpack(">d", body[dur:dur + 8])[0] == 0.0
    assert amf0.decode_all(body[:dur] + struct.pack(">d", 12.5) + body[dur + 8:])[1]["duration"] == 12.5
    assert amf0.decode_all(body[:size] + struct.pack(">d", 7.0) + body[size + 8:])[1]["filesize"] == 7.0


def test_apply() -> None:
    assert dvr_applies(("all",), "live", "s")
    assert dvr_applies(("live/a", "live/s"), "live", "s")
    assert not dvr_applies(("live/a",), "live", "s")


def test_path_template_variables() -> None:
    now = time.mktime((2024, 3, 5, 7, 8, 9, 0, 0, -1)) + 0.123
    out = render_dvr_path("./rec/[vhost]/[app]/[stream]-[2006][01][02]-[15][04][05].[999]-[timestamp].mp4",
                          vhost="v", app="live", stream="s", now=now)
    assert out == f"./rec/v/live/s-20240305-070809.123-{int(now * 1000)}.mp4"


def test_path_directory_gets_srs_file_name() -> None:
    assert render_dvr_path("/data/dvr", vhost="v", app="live", stream="s", now=1.5) == "/data/dvr/s.1500.flv"


@pytest.mark.parametrize("app,stream", [("..", "x"), ("live", "../../x"), ("../..", "y")])
def test_path_cannot_leave_its_directory(app: str, stream: str) -> None:
    with pytest.raises(ValueError):
        render_dvr_path("./rec/[app]/[stream].flv", vhost="v", app=app, stream=stream, now=0)
    with pytest.raises(ValueError):
        DvrRecorder(path="/srv/rec/[app]/[stream].flv", vhost="v", app=app, stream=stream)


def test_metadata_mid_file_is_written_at_its_place_and_header_keeps_final_values() -> None:
    second = MediaPacket(DATA, 0, amf0.encode("@setDataFrame", "onMetaData",
                                              amf0.ECMAArray(width=640.0, videocodecid=7.0, duration=5.0,
                                                             filesize=123.0, title="part two")))
    pkts = [*headers(), vkey(0), vinter(40), audio(50), second, vinter(80), vkey(1000), audio(1010)]
    (data,) = run(recorder(), pkts).values()
    ts = tags(bytes(data))
    scripts = [i for i, t in enumerate(ts) if t.tag_type == flv.SCRIPT]
    assert len(scripts) == 2 and scripts[0] == 0
    name, head = amf0.decode_all(ts[0].payload)
    assert head["duration"] == pytest.approx(1.01) and head["filesize"] == len(data)
    assert head["width"] == 320  # the header: the metadata the file started with, final duration and size
    mid = ts[scripts[1]]
    around = ts[scripts[1] - 3:scripts[1] + 2]  # in the order it came: key, inter, audio, METADATA, inter
    assert [(t.tag_type, t.timestamp) for t in around] == [(flv.VIDEO, 0), (flv.VIDEO, 40), (flv.AUDIO, 50),
                                                            (flv.SCRIPT, 0), (flv.VIDEO, 80)]
    assert mid.timestamp == 0  # (FFmpeg reads a later-stamped onMetaData as a subtitle packet)
    name, arr = amf0.decode_all(mid.payload)
    assert name == "onMetaData" and isinstance(arr, amf0.ECMAArray)
    assert dict(arr) == {"width": 640.0, "videocodecid": 7.0, "title": "part two"}  # no duration/filesize


def test_metadata_before_the_first_keyframe_or_between_files_goes_to_the_next_header() -> None:
    late = MediaPacket(DATA, 0, amf0.encode("onMetaData", amf0.ECMAArray(width=800.0, videocodecid=7.0)))
    pkts = [*headers(), vinter(0), late, vkey(40), vinter(80)]
    (data,) = run(recorder(), pkts).values()
    ts = tags(bytes(data))
    assert [t.tag_type for t in ts].count(flv.SCRIPT) == 1
    assert amf0.decode_all(ts[0].payload)[1]["width"] == 800
    # segment plan: a metadata change mid-file is in that file and in the header of the next one
    pkts = headers()
    for i in range(100):
        pkts.append(vkey(i * 40) if i % 25 == 0 else vinter(i * 40))
        if i == 30:
            pkts.append(late)
    files = list(run(recorder(plan="segment", duration=2.0), pkts).values())
    assert len(files) == 2
    first, second = (tags(bytes(d)) for d in files)
    assert [t.tag_type for t in first].count(flv.SCRIPT) == 2
    assert amf0.decode_all(first[0].payload)[1]["width"] == 320
    assert [t.tag_type for t in second].count(flv.SCRIPT) == 1
    assert amf0.decode_all(second[0].payload)[1]["width"] == 800
