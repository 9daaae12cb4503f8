"""FLV container and tag-inspection tests: hand-built bytes, split-feeding properties, fuzzing."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec import flv
from livesrv.codec.errors import FLVError, ProtocolError
from livesrv.codec.flv import FLVDecoder, FLVHeader, FLVTag

# --------------------------------------------------------------------------- container


def test_constants() -> None:
    assert (flv.AUDIO, flv.VIDEO, flv.SCRIPT) == (8, 9, 18)


@pytest.mark.parametrize(
    ("audio", "video", "flags"), [(True, True, 5), (True, False, 4), (False, True, 1), (False, False, 0)]
)
def test_file_header(audio: bool, video: bool, flags: int) -> None:
    assert flv.file_header(audio, video) == b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09" + b"\x00" * 4


def test_encode_tag_layout() -> None:
    tag = flv.encode_tag(flv.VIDEO, 0x12345678, b"\xaa\xbb\xcc", stream_id=0x010203)
    assert tag == (
        b"\x09"  # type
        + b"\x00\x00\x03"  # data size
        + b"\x34\x56\x78"  # timestamp, lower 24 bits
        + b"\x12"  # timestamp extended (upper 8 bits)
        + b"\x01\x02\x03"  # stream id
        + b"\xaa\xbb\xcc"
        + b"\x00\x00\x00\x0e"  # previous tag size = 11 + 3
    )
    assert flv.encode_tag(flv.AUDIO, 0, b"") == b"\x08" + b"\x00" * 10 + b"\x00\x00\x00\x0b"


def test_encode_tag_timestamp_wraps_and_size_limit() -> None:
    assert flv.encode_tag(8, 2**32 + 5, b"") == flv.encode_tag(8, 5, b"")
    with pytest.raises(ValueError):
        flv.encode_tag(9, 0, bytes(0x1000000))


def test_encode_tag_parts_matches_encode_tag() -> None:
    payload = b"hello"
    head, tail = flv.encode_tag_parts(flv.SCRIPT, 123456789, len(payload), 7)
    assert head + payload + tail == flv.encode_tag(flv.SCRIPT, 123456789, payload, 7)


def _stream(tags: list[tuple[int, int, bytes, int]]) -> bytes:
    return flv.file_header() + b"".join(flv.encode_tag(t, ts, p, sid) for t, ts, p, sid in tags)


SAMPLE_TAGS = [
    (flv.SCRIPT, 0, b"\x02\x00\x0aonMetaData\x05", 0),
    (flv.VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f", 0),
    (flv.AUDIO, 0, b"\xaf\x00\x12\x10", 0),
    (flv.VIDEO, 0xFFFFFFFF, b"\x27\x01\x00\x00\x00" + bytes(100), 0),
]


def test_decoder_whole_stream() -> None:
    dec = FLVDecoder()
    events = dec.feed(_stream(SAMPLE_TAGS))
    assert events == [FLVHeader(1, True, True, 9)] + [FLVTag(*t) for t in SAMPLE_TAGS]
    assert dec.prev_tag_size_mismatches == 0


def test_decoder_byte_by_byte() -> None:
    dec = FLVDecoder()
    events: list[FLVHeader | FLVTag] = []
    for i, b in enumerate(_stream(SAMPLE_TAGS)):
        events += dec.feed(bytes([b]) if i % 2 else memoryview(bytes([b])))
    assert events == [FLVHeader(1, True, True, 9)] + [FLVTag(*t) for t in SAMPLE_TAGS]


def test_decoder_emits_tag_before_its_previous_tag_size() -> None:
    # Live HTTP-FLV: a tag must be delivered as soon as its payload is complete.
    data = _stream(SAMPLE_TAGS[:1])
    dec = FLVDecoder()
    assert len(dec.feed(data[:-4])) == 2
    assert dec.feed(data[-4:]) == []


def test_decoder_without_header() -> None:
    dec = FLVDecoder(expect_header=False)
    data = b"".join(flv.encode_tag(*t) for t in SAMPLE_TAGS)
    assert dec.feed(data) == [FLVTag(*t) for t in SAMPLE_TAGS]


def test_decoder_tolerates_wrong_previous_tag_size() -> None:
    good = _stream(SAMPLE_TAGS[:2])
    bad = bytearray(good)
    bad[9:13] = b"\x00\x00\x00\x07"  # PreviousTagSize0 should be 0
    bad[-4:] = b"\xde\xad\xbe\xef"
    dec = FLVDecoder()
    assert dec.feed(bytes(bad)) == dec.__class__().feed(good)
    assert dec.prev_tag_size_mismatches == 2


def test_decoder_skips_extended_header() -> None:
    header = b"FLV\x01\x01\x00\x00\x00\x0c" + b"xyz"  # DataOffset 12: three padding bytes
    data = header + b"\x00\x00\x00\x00" + flv.encode_tag(*SAMPLE_TAGS[1])
    dec = FLVDecoder()
    events: list[FLVHeader | FLVTag] = []
    for i in range(0, len(data), 5):
        events += dec.feed(data[i : i + 5])
    assert events == [FLVHeader(1, False, True, 12), FLVTag(*SAMPLE_TAGS[1])]


def test_decoder_unknown_and_filtered_tag_types_returned_as_is() -> None:
    data = flv.file_header() + flv.encode_tag(0x28, 1, b"enc") + flv.encode_tag(0x1F, 2, b"?")
    tags = FLVDecoder().feed(data)[1:]
    assert [(t.tag_type, t.timestamp, t.payload) for t in tags] == [(0x28, 1, b"enc"), (0x1F, 2, b"?")]


@pytest.mark.parametrize("data", [b"FLX\x01\x05\x00\x00\x00\x09", b"flv", b"\x00", b"GIF89a"])
def test_decoder_bad_signature(data: bytes) -> None:
    with pytest.raises(FLVError):
        FLVDecoder().feed(data)


def test_decoder_bad_signature_detected_early_and_sticky() -> None:
    dec = FLVDecoder()
    assert dec.feed(b"FL") == []
    with pytest.raises(FLVError):
        dec.feed(b"X")
    with pytest.raises(FLVError):
        dec.feed(_stream(SAMPLE_TAGS))


def test_decoder_bad_data_offset() -> None:
    with pytest.raises(FLVError):
        FLVDecoder().feed(b"FLV\x01\x05\x00\x00\x00\x08")


def test_decoder_max_tag_size() -> None:
    dec = FLVDecoder(max_tag_size=16)
    ok = flv.encode_tag(flv.AUDIO, 0, bytes(16))
    assert len(dec.feed(flv.file_header() + ok)) == 2
    # Rejected from the 11-byte header alone, before the payload arrives.
    with pytest.raises(FLVError):
        dec.feed(flv.encode_tag(flv.AUDIO, 0, bytes(17))[:11])


def test_decoder_large_tag_in_small_chunks_is_linear() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    data = _stream([(flv.VIDEO, 1, payload, 0)])
    dec = FLVDecoder()
    events: list[FLVHeader | FLVTag] = []
    t0 = time.perf_counter()
    for i in range(0, len(data), 1024):
        events += dec.feed(data[i : i + 1024])
    assert time.perf_counter() - t0 < 2.0
    assert events[1] == FLVTag(flv.VIDEO, 1, payload, 0)


tag_strategy = st.tuples(
    st.sampled_from([flv.AUDIO, flv.VIDEO, flv.SCRIPT, 0]),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
    st.integers(0, 2**24 - 1),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(tag_strategy, max_size=8), st.data())
def test_roundtrip_split_anywhere(tags: list[tuple[int, int, bytes, int]], data: st.DataObject) -> None:
    stream = _stream(tags)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FLVDecoder()
    events: list[FLVHeader | FLVTag] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events += dec.feed(stream[prev:cut])
        prev = cut
    assert events == [FLVHeader(1, True, True, 9)] + [FLVTag(*t) for t in tags]
    assert dec.prev_tag_size_mismatches == 0


# --------------------------------------------------------------------------- video

AVCC = bytes.fromhex("01 64 001f ffe1 0019 6764001facd9405005bb011000003e90000ea600f183196001000568ebecb22c")
HVCC = bytes.fromhex("01 01 60000000 900000000000 5d f000 fc fd f8 f8 00 00 0f 03")
AV1C = bytes.fromhex("81 08 0c 00 0a0b0000000042ab bfc3 71")
VPCC = bytes.fromhex("01 000000 00 1f 80 02 02 02 0000")
NALU = b"\x00\x00\x00\x05\x65\x88\x84\x00\x33"
OBUS = b"\x12\x00\x32\x05\x10\x00\x00\x00\x00"


def ex(frame_type: int, packet_type: int) -> bytes:
    return bytes([0x80 | frame_type << 4 | packet_type])


# (id, payload, expected (codec, frame_type, keyframe, seq_header, seq_end, enhanced, packet_type, cts, offset))
VIDEO_CASES: list[tuple[str, bytes, tuple[str, int, bool, bool, bool, bool, int, int, int]]] = [
    ("avc-seq-header", b"\x17\x00\x00\x00\x00" + AVCC, ("avc", 1, True, True, False, False, 0, 0, 5)),
    ("avc-keyframe", b"\x17\x01\x00\x00\x28" + NALU, ("avc", 1, True, False, False, False, 1, 40, 5)),
    ("avc-inter", b"\x27\x01\xff\xff\xf6" + NALU, ("avc", 2, False, False, False, False, 1, -10, 5)),
    ("avc-disposable", b"\x37\x01\x00\x00\x00" + NALU, ("avc", 3, False, False, False, False, 1, 0, 5)),
    ("avc-end-of-seq", b"\x17\x02\x00\x00\x00", ("avc", 1, True, False, True, False, 2, 0, 5)),
    ("avc-cts-max", b"\x27\x01\x7f\xff\xff" + NALU, ("avc", 2, False, False, False, False, 1, 0x7FFFFF, 5)),
    ("avc-cts-min", b"\x27\x01\x80\x00\x00" + NALU, ("avc", 2, False, False, False, False, 1, -0x800000, 5)),
    ("hevc12-seq-header", b"\x1c\x00\x00\x00\x00" + HVCC, ("hevc", 1, True, True, False, False, 0, 0, 5)),
    ("hevc12-keyframe", b"\x1c\x01\x00\x00\x50" + NALU, ("hevc", 1, True, False, False, False, 1, 80, 5)),
    ("hevc12-inter", b"\x2c\x01\x00\x00\x00" + NALU, ("hevc", 2, False, False, False, False, 1, 0, 5)),
    ("h263", b"\x22\x00\x00\x84", ("h263", 2, False, False, False, False, 1, 0, 1)),
    ("vp6-key", b"\x14\x00\x00", ("vp6", 1, True, False, False, False, 1, 0, 1)),
    ("legacy-id13", b"\x1d\x00", ("id13", 1, True, False, False, False, 1, 0, 1)),
    ("hvc1-seq-start", ex(1, 0) + b"hvc1" + HVCC, ("hevc", 1, True, True, False, True, 0, 0, 5)),
    ("hvc1-coded-key", ex(1, 1) + b"hvc1" + b"\x00\x00\x21" + NALU, ("hevc", 1, True, False, False, True, 1, 33, 8)),
    ("hvc1-coded-inter", ex(2, 1) + b"hvc1" + b"\xff\xff\xff" + NALU, ("hevc", 2, False, False, False, True, 1, -1, 8)),
    ("hvc1-codedx-key", ex(1, 3) + b"hvc1" + NALU, ("hevc", 1, True, False, False, True, 3, 0, 5)),
    ("hvc1-codedx-inter", ex(2, 3) + b"hvc1" + NALU, ("hevc", 2, False, False, False, True, 3, 0, 5)),
    ("hvc1-seq-end", ex(1, 2) + b"hvc1", ("hevc", 1, True, False, True, True, 2, 0, 5)),
    ("avc1-coded-key", ex(1, 1) + b"avc1" + b"\x00\x00\x10" + NALU, ("avc", 1, True, False, False, True, 1, 16, 8)),
    ("av01-seq-start", ex(1, 0) + b"av01" + AV1C, ("av1", 1, True, True, False, True, 0, 0, 5)),
    ("av01-coded-key", ex(1, 1) + b"av01" + OBUS, ("av1", 1, True, False, False, True, 1, 0, 5)),
    ("av01-coded-inter", ex(2, 1) + b"av01" + OBUS, ("av1", 2, False, False, False, True, 1, 0, 5)),
    ("av01-mpeg2ts-seq-start", ex(1, 5) + b"av01" + b"\x80\x00", ("av1", 1, True, True, False, True, 5, 0, 5)),
    ("vp09-seq-start", ex(1, 0) + b"vp09" + VPCC, ("vp9", 1, True, True, False, True, 0, 0, 5)),
    ("vp09-coded-key", ex(1, 1) + b"vp09" + b"\x82\x49\x83", ("vp9", 1, True, False, False, True, 1, 0, 5)),
    ("vp09-coded-inter", ex(2, 1) + b"vp09" + b"\x86\x00", ("vp9", 2, False, False, False, True, 1, 0, 5)),
    ("vp08-codedx", ex(1, 3) + b"vp08" + b"\x10\x02\x00", ("vp8", 1, True, False, False, True, 3, 0, 5)),
    ("unknown-fourcc", ex(1, 1) + b"xyz1" + b"..", ("xyz1", 1, True, False, False, True, 1, 0, 5)),
    # Metadata: frame type is ignored (may even be a reserved value) and never a keyframe.
    ("hvc1-metadata", ex(1, 4) + b"hvc1" + b"\x02\x00\x09colorInfo\x03\x00\x00\x09",
     ("hevc", 1, False, False, False, True, 4, 0, 5)),
    ("metadata-frame-type-0", ex(0, 4) + b"av01" + b"\x05", ("av1", 0, False, False, False, True, 4, 0, 5)),
    # ModEx (TimestampOffsetNano, 3 bytes) wrapping hvc1 CodedFrames.
    ("modex-hvc1-coded", ex(1, 7) + b"\x02\x00\x01\x02" + b"\x01" + b"hvc1" + b"\x00\x00\x05" + NALU,
     ("hevc", 1, True, False, False, True, 1, 5, 13)),
    ("modex-16bit-size", ex(2, 7) + b"\xff\x00\x00" + bytes(1) + b"\x03" + b"av01" + OBUS,
     ("av1", 2, False, False, False, True, 3, 0, 10)),
    ("multitrack-one-track", ex(1, 6) + b"\x00" + b"av01" + b"\x00" + AV1C,
     ("av1", 1, True, True, False, True, 0, 0, 7)),
    ("multitrack-many-tracks", ex(1, 6) + b"\x11" + b"hvc1" + b"\x00\x00\x00\x0c" + b"\x00\x00\x02" + NALU,
     ("hevc", 1, True, False, False, True, 1, 2, 13)),
    ("multitrack-many-codecs", ex(2, 6) + b"\x23" + b"vp09" + b"\x01\x00\x00\x02" + b"\x86\x00",
     ("vp9", 2, False, False, False, True, 3, 0, 10)),
]
VIDEO_IDS = [c[0] for c in VIDEO_CASES]


@pytest.mark.parametrize(("name", "payload", "expected"), VIDEO_CASES, ids=VIDEO_IDS)
def test_parse_video(name: str, payload: bytes, expected: tuple[object, ...]) -> None:
    info = flv.parse_video(payload)
    got = (
        info.codec,
        info.frame_type,
        info.keyframe,
        info.sequence_header,
        info.sequence_end,
        info.enhanced,
        info.packet_type,
        info.composition_time,
        info.data_offset,
    )
    assert got == expected
    assert flv.parse_video(memoryview(payload)) == info
    assert info.command is None
    assert info.multitrack == name.startswith("multitrack")
    if info.enhanced:
        assert len(info.fourcc) == 4


@pytest.mark.parametrize(("name", "payload", "expected"), VIDEO_CASES, ids=VIDEO_IDS)
def test_fast_video_helpers_agree(name: str, payload: bytes, expected: tuple[object, ...]) -> None:
    info = flv.parse_video(payload)
    assert flv.is_keyframe(payload) is info.keyframe
    assert flv.is_sequence_header(payload) is info.sequence_header


def test_video_data_offset_points_at_codec_data() -> None:
    assert (p := b"\x17\x00\x00\x00\x00" + AVCC)[flv.parse_video(p).data_offset :] == AVCC
    assert (p := ex(1, 0) + b"hvc1" + HVCC)[flv.parse_video(p).data_offset :] == HVCC
    assert (p := ex(1, 1) + b"hvc1\x00\x00\x01" + NALU)[flv.parse_video(p).data_offset :] == NALU
    assert (p := ex(1, 1) + b"av01" + OBUS)[flv.parse_video(p).data_offset :] == OBUS


def test_command_frames() -> None:
    legacy = flv.parse_video(b"\x57\x01")
    assert (legacy.codec, legacy.frame_type, legacy.command, legacy.keyframe) == ("avc", 5, 1, False)
    assert legacy.packet_type == flv.PACKET_NONE and not legacy.sequence_header
    enhanced = flv.parse_video(ex(5, 0) + b"\x00")
    assert (enhanced.codec, enhanced.command, enhanced.keyframe, enhanced.sequence_header) == ("", 0, False, False)
    assert enhanced.data_offset == 2
    for p in (b"\x57\x01", b"\x57\x00\x00\x00\x00", ex(5, 0) + b"\x00\x00\x00\x00", ex(5, 1) + b"\x01"):
        assert not flv.is_keyframe(p)
        assert not flv.is_sequence_header(p)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x17",
        b"\x17\x00\x00\x00",  # truncated AVC header
        b"\x27\x01\x00",
        b"\x1c\x01",
        b"\x17\x03\x00\x00\x00",  # invalid AVCPacketType
        b"\x07\x01\x00\x00\x00",  # reserved frame type 0
        b"\x67\x01\x00\x00\x00",  # reserved frame type 6
        b"\x57",  # command frame without command
        ex(1, 0),
        ex(1, 0) + b"hvc",
        ex(1, 1) + b"hvc1\x00\x00",  # missing composition time
        ex(1, 8) + b"hvc1",  # reserved packet type
        ex(0, 1) + b"hvc1\x00\x00\x00",  # reserved frame type 0
        ex(7, 3) + b"av01",
        ex(5, 0),
        ex(1, 7),  # ModEx without size
        ex(1, 7) + b"\x05\x00",  # ModEx data cut short
        ex(1, 7) + b"\xff\x00",  # 16-bit ModEx size cut short
        ex(1, 7) + b"\x00\x00",  # ModEx without following packet type
        ex(1, 6),
        ex(1, 6) + b"\x00av01",  # missing track id
        ex(1, 6) + b"\x16hvc1\x00\x00\x00\x00",  # nested multitrack
        ex(1, 6) + b"\x30av01\x00\x00\x00\x00",  # reserved multitrack type
        ex(1, 6) + b"\x20av01\x00\x00\x00",  # many codecs: size cut short
    ],
)
def test_parse_video_errors(payload: bytes) -> None:
    with pytest.raises(FLVError):
        flv.parse_video(payload)
    flv.is_keyframe(payload)  # never raises
    flv.is_sequence_header(payload)


def test_fast_helpers_on_short_payloads() -> None:
    assert not flv.is_keyframe(b"")
    assert not flv.is_sequence_header(b"")
    assert not flv.is_sequence_header(b"\x17")
    assert not flv.is_audio_sequence_header(b"")
    assert not flv.is_audio_sequence_header(b"\xaf")
    assert not flv.is_sequence_header(ex(1, 6) + b"\x00")


# --------------------------------------------------------------------------- audio


def bits(spec: str) -> bytes:
    """Bytes from a bit string such as ``"00010 0100 0010 000"`` (zero-padded to a byte)."""
    b = spec.replace(" ", "")
    b += "0" * (-len(b) % 8)
    return int(b, 2).to_bytes(len(b) // 8, "big")


ASC_LC_44K_STEREO = bits("00010 0100 0010 000")  # 0x12 0x10
ASC_HE_48K_MONO = bits("00101 0011 0001 0011 00010")  # explicit SBR: extension rate index, core object type
ASC_ESCAPED_AOT = bits("11111 001010 0100 0010")  # object type 32 + 10 = 42
ASC_EXPLICIT_RATE = bits("00010 1111 " + format(24000, "024b") + " 0001")
ASC_7_1 = bits("00010 0011 0111 000")
OPUS_HEAD = b"OpusHead" + bytes([1, 6]) + struct.pack("<HIhB", 312, 44100, 0, 1) + b"\x04\x02\x00\x04\x01\x02\x03"
FLAC_STREAMINFO = (
    b"fLaC"
    + b"\x80\x00\x00\x22"
    + struct.pack(">HH", 4096, 4096)
    + b"\x00\x00\x10\x00\x20\x00"
    + ((96000 << 44) | (5 << 41) | (23 << 36) | 123456).to_bytes(8, "big")
    + bytes(16)
)
AC3_FRAME = b"\x0b\x77\x00\x00"


def aex(packet_type: int) -> bytes:
    return bytes([0x90 | packet_type])


# (id, payload, expected (sound_format, codec, seq_header, sample_rate, channels, data_offset, packet_type, enhanced))
AUDIO_CASES: list[tuple[str, bytes, tuple[int, str, bool, int, int, int, int, bool]]] = [
    ("aac-seq-header", b"\xaf\x00" + ASC_LC_44K_STEREO, (10, "aac", True, 44100, 2, 2, 0, False)),
    ("aac-seq-header-he-mono", b"\xaf\x00" + ASC_HE_48K_MONO, (10, "aac", True, 48000, 1, 2, 0, False)),
    ("aac-raw", b"\xaf\x01\x21\x10\x04", (10, "aac", False, 44100, 2, 2, 1, False)),
    ("aac-raw-mono-header", b"\xae\x01\x21", (10, "aac", False, 44100, 1, 2, 1, False)),
    ("mp3-44k-stereo", b"\x2f\xff\xfb\x90\x64", (2, "mp3", False, 44100, 2, 1, 1, False)),
    ("mp3-22k-mono", b"\x2a\xff\xf3", (2, "mp3", False, 22050, 1, 1, 1, False)),
    ("mp3-8k", b"\xe2\xff\xf3", (14, "mp3", False, 8000, 1, 1, 1, False)),
    ("pcm-11k", b"\x06\x00\x00", (0, "pcm", False, 11025, 1, 1, 1, False)),
    ("speex", b"\xb2\x00", (11, "speex", False, 16000, 1, 1, 1, False)),
    ("g711-alaw", b"\x72\xd5", (7, "alaw", False, 8000, 1, 1, 1, False)),
    ("g711-mulaw", b"\x82\xff", (8, "mulaw", False, 8000, 1, 1, 1, False)),
    ("nellymoser-8k", b"\x52\x00", (5, "nellymoser", False, 8000, 1, 1, 1, False)),
    ("reserved-format-13", b"\xd2\x00", (13, "id13", False, 5512, 1, 1, 1, False)),
    ("mp4a-seq-start", aex(0) + b"mp4a" + ASC_LC_44K_STEREO, (9, "aac", True, 44100, 2, 5, 0, True)),
    ("mp4a-coded", aex(1) + b"mp4a" + b"\x21\x10", (9, "aac", False, 0, 0, 5, 1, True)),
    ("opus-seq-start", aex(0) + b"Opus" + OPUS_HEAD, (9, "opus", True, 48000, 6, 5, 0, True)),
    ("opus-seq-start-empty", aex(0) + b"Opus", (9, "opus", True, 48000, 0, 5, 0, True)),
    ("opus-coded", aex(1) + b"Opus" + b"\xfc\xff\xfe", (9, "opus", False, 0, 0, 5, 1, True)),
    ("flac-seq-start", aex(0) + b"fLaC" + FLAC_STREAMINFO, (9, "flac", True, 96000, 6, 5, 0, True)),
    ("mp3-ex-coded", aex(1) + b".mp3" + b"\xff\xfb\x90", (9, "mp3", False, 0, 0, 5, 1, True)),
    ("ac3-coded", aex(1) + b"ac-3" + AC3_FRAME, (9, "ac3", False, 0, 0, 5, 1, True)),
    ("eac3-seq-start", aex(0) + b"ec-3", (9, "eac3", True, 0, 0, 5, 0, True)),
    ("mp4a-seq-end", aex(2) + b"mp4a", (9, "aac", False, 0, 0, 5, 2, True)),
    ("opus-multichannel-config", aex(4) + b"Opus" + b"\x01\x06\x00\x00\x00\x3f",
     (9, "opus", False, 0, 0, 5, 4, True)),
    ("modex-opus-coded", aex(7) + b"\x02\x00\x10\x00" + b"\x01" + b"Opus" + b"\xfc",
     (9, "opus", False, 0, 0, 10, 1, True)),
    ("multitrack-one-track-seq", aex(5) + b"\x00" + b"mp4a" + b"\x00" + ASC_LC_44K_STEREO,
     (9, "aac", True, 44100, 2, 7, 0, True)),
    ("multitrack-many-codecs", aex(5) + b"\x21" + b"Opus" + b"\x00" + b"\x00\x00\x01" + b"\xfc",
     (9, "opus", False, 0, 0, 10, 1, True)),
]
AUDIO_IDS = [c[0] for c in AUDIO_CASES]


@pytest.mark.parametrize(("name", "payload", "expected"), AUDIO_CASES, ids=AUDIO_IDS)
def test_parse_audio(name: str, payload: bytes, expected: tuple[object, ...]) -> None:
    info = flv.parse_audio(payload)
    got = (
        info.sound_format,
        info.codec,
        info.sequence_header,
        info.sample_rate,
        info.channels,
        info.data_offset,
        info.packet_type,
        info.enhanced,
    )
    assert got == expected
    assert flv.parse_audio(memoryview(payload)) == info
    assert flv.is_audio_sequence_header(payload) is info.sequence_header
    assert info.sequence_end == (name == "mp4a-seq-end")
    assert info.multitrack == name.startswith("multitrack")


def test_audio_data_offset_points_at_codec_data() -> None:
    p = b"\xaf\x00" + ASC_LC_44K_STEREO
    assert p[flv.parse_audio(p).data_offset :] == ASC_LC_44K_STEREO
    p = aex(0) + b"Opus" + OPUS_HEAD
    assert p[flv.parse_audio(p).data_offset :] == OPUS_HEAD


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xaf",  # AAC without packet type
        b"\xaf\x02\x00",  # invalid AACPacketType
        b"\xaf\x00",  # empty ASC
        b"\xaf\x00\x12",  # truncated ASC
        b"\xaf\x00" + bits("00010 1101 0010"),  # reserved frequency index 13
        aex(0),
        aex(1) + b"Op",
        aex(3) + b"mp4a",  # reserved packet type
        aex(6) + b"mp4a",
        aex(0) + b"mp4a",  # SequenceStart without ASC
        aex(7),
        aex(7) + b"\x00\x00",
        aex(5),
        aex(5) + b"\x00mp4a",
        aex(5) + b"\x15mp4a\x00",  # nested multitrack
        aex(5) + b"\x40mp4a\x00",  # reserved multitrack type
        aex(5) + b"\x11mp4a\x00\x00\x00",
    ],
)
def test_parse_audio_errors(payload: bytes) -> None:
    with pytest.raises(FLVError):
        flv.parse_audio(payload)
    flv.is_audio_sequence_header(payload)  # never raises


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        (ASC_LC_44K_STEREO, (2, 44100, 2, 4, 2)),
        (ASC_HE_48K_MONO, (5, 48000, 1, 3, 1)),
        (ASC_ESCAPED_AOT, (42, 44100, 2, 4, 2)),
        (ASC_EXPLICIT_RATE, (2, 24000, 1, 15, 1)),
        (ASC_7_1, (2, 48000, 8, 3, 7)),
        (bits("00010 1011 0000 000"), (2, 8000, 0, 11, 0)),  # channels in a PCE
        (bits("00010 1100 0001 000"), (2, 7350, 1, 12, 1)),
        (ASC_LC_44K_STEREO + b"\x56\xe5\x00", (2, 44100, 2, 4, 2)),  # trailing SBR signalling
    ],
)
def test_parse_aac_config(asc: bytes, expected: tuple[int, int, int, int, int]) -> None:
    for data in (asc, memoryview(asc)):
        c = flv.parse_aac_config(data)
        assert (c.object_type, c.sample_rate, c.channels, c.sample_rate_index, c.channel_config) == expected


@pytest.mark.parametrize(
    "asc",
    [
        b"",
        b"\x12",
        ASC_ESCAPED_AOT[:1],
        ASC_EXPLICIT_RATE[:3],
        ASC_EXPLICIT_RATE[:4],
        bits("00010 1101 0010"),
        bits("00010 1110 0010"),
    ],
)
def test_parse_aac_config_errors(asc: bytes) -> None:
    with pytest.raises(FLVError):
        flv.parse_aac_config(asc)


# --------------------------------------------------------------------------- fuzzing

VIDEO_SEEDS = [p for _, p, _ in VIDEO_CASES]
AUDIO_SEEDS = [p for _, p, _ in AUDIO_CASES]
ASC_SEEDS = [ASC_LC_44K_STEREO, ASC_HE_48K_MONO, ASC_ESCAPED_AOT, ASC_EXPLICIT_RATE, ASC_7_1]
STREAM_SEED = _stream(SAMPLE_TAGS)


def mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    buf = bytearray(seed)
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == 1:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == 2:
            del buf[pos : pos + draw(st.integers(1, 4))]
        else:
            del buf[pos:]
    return bytes(buf)


@st.composite
def mutated_from(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    return mutate(draw, draw(st.sampled_from(seeds)))


def only_flv_errors(fn: object, data: bytes) -> object:
    try:
        return fn(data)  # type: ignore[operator]
    except ProtocolError as exc:
        assert isinstance(exc, FLVError)
        return None


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_video(data: bytes) -> None:
    info = only_flv_errors(flv.parse_video, data)
    key, seq = flv.is_keyframe(data), flv.is_sequence_header(data)
    assert isinstance(key, bool) and isinstance(seq, bool)
    if isinstance(info, flv.VideoInfo):
        assert key is info.keyframe
        assert seq is info.sequence_header
        assert 0 < info.data_offset <= len(data)


def _check_audio(data: bytes) -> None:
    info = only_flv_errors(flv.parse_audio, data)
    seq = flv.is_audio_sequence_header(data)
    if isinstance(info, flv.AudioInfo):
        assert seq is info.sequence_header
        assert 0 < info.data_offset <= len(data)


@FUZZ
@given(st.one_of(st.binary(max_size=40), mutated_from(VIDEO_SEEDS)))
def test_fuzz_parse_video(data: bytes) -> None:
    _check_video(data)


@FUZZ
@given(st.one_of(st.binary(max_size=40), mutated_from(AUDIO_SEEDS)))
def test_fuzz_parse_audio(data: bytes) -> None:
    _check_audio(data)


@FUZZ
@given(st.one_of(st.binary(max_size=10), mutated_from(ASC_SEEDS)))
def test_fuzz_parse_aac_config(data: bytes) -> None:
    only_flv_errors(flv.parse_aac_config, data)


@FUZZ
@given(
    st.one_of(st.binary(max_size=200), st.binary(max_size=100).map(lambda b: b"FLV" + b), mutated_from([STREAM_SEED])),
    st.lists(st.integers(0, 300), max_size=4),
    st.booleans(),
)
def test_fuzz_decoder(data: bytes, cuts: list[int], expect_header: bool) -> None:
    dec = FLVDecoder(max_tag_size=1 << 20, expect_header=expect_header)
    prev = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            for ev in dec.feed(data[prev:cut]):
                assert isinstance(ev, (FLVHeader, FLVTag))
            prev = cut
    except ProtocolError as exc:
        assert isinstance(exc, FLVError)
