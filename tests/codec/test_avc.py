"""H.264/H.265 helpers: configuration records, AVCC -> Annex B, SPS parsing (real encoder output), fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livesrv.codec import avc
from livesrv.codec.avc import AVCError, BitReader
from livesrv.codec.errors import ProtocolError

# SPS NAL units produced by libx264 / libx265 (ffmpeg 5.1) for the sizes and formats named; ffprobe agrees
# with the sizes. Cropping is exercised by 1080 (1088 coded), 358/362 lines and the 4:4:4 / 4:2:2 crop units.
H264_SPS = {
    "high_1080p": ("67640028acd940780227e5c044000003000400000300c83c60c658", 100, 40, 1920, 1080, 1),
    "main_720p": ("674d401feca02802dd80880000030008000003019078c18cb0", 77, 31, 1280, 720, 1),
    "high444_636x358": ("67f4001e919b281405fcb17808800000030080000019078b16cb", 244, 30, 636, 358, 3),
    "high422_642x362": ("677a001ebcd940a42fe227c044000003000400000300c83c58b658", 122, 30, 642, 362, 2),
    "interlaced_576i": ("6764001eacd940b424d8088000000300800000190f8a14cb", 100, 30, 720, 576, 1),
    "gray_320x240": ("6764000df3650507ec05b2000003000200000300641e28532c", 100, 13, 320, 240, 0),
    "baseline_320x240": ("6742c00dda0507ec04400000030040000c83c50aa8", 66, 13, 320, 240, 1),
}
HEVC_SPS = {
    "main_1080p": (
        "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c84",
        1, 120, 1920, 1080, 1,
    ),
    "rext422_636x358": (
        "4201010408000003009d0800000300003fb005020169dde5959a4932bc05a02000000300200000030321",
        4, 63, 636, 358, 2,
    ),
}

SPS_320 = bytes.fromhex(H264_SPS["baseline_320x240"][0])
PPS_320 = bytes.fromhex("68ce3c80")
# AVCDecoderConfigurationRecord as ffmpeg writes it for that stream.
AVC_RECORD = bytes((1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1, 0, len(SPS_320))) + SPS_320 + b"\x01\x00\x04" + PPS_320


@pytest.mark.parametrize("name", sorted(H264_SPS))
def test_parse_h264_sps(name: str) -> None:
    hexdata, profile, level, width, height, chroma = H264_SPS[name]
    info = avc.parse_sps(bytes.fromhex(hexdata))
    assert (info.profile_idc, info.level_idc, info.width, info.height, info.chroma_format_idc) == (
        profile, level, width, height, chroma
    )
    assert info.bit_depth == 8


@pytest.mark.parametrize("name", sorted(HEVC_SPS))
def test_parse_hevc_sps(name: str) -> None:
    hexdata, profile, level, width, height, chroma = HEVC_SPS[name]
    info = avc.parse_hevc_sps(bytes.fromhex(hexdata))
    assert (info.profile_idc, info.level_idc, info.width, info.height, info.chroma_format_idc) == (
        profile, level, width, height, chroma
    )


def test_sps_rejects_other_nal_types() -> None:
    with pytest.raises(AVCError):
        avc.parse_sps(PPS_320 + b"\x00" * 8)
    with pytest.raises(AVCError):
        avc.parse_hevc_sps(SPS_320)
    with pytest.raises(AVCError):
        avc.parse_sps(SPS_320[:6])  # truncated


def test_parse_avc_config() -> None:
    cfg = avc.parse_avc_config(AVC_RECORD)
    assert cfg.profile == 0x42 and cfg.compatibility == 0xC0 and cfg.level == 0x0D
    assert cfg.nalu_length_size == 4
    assert cfg.sps == (SPS_320,) and cfg.pps == (PPS_320,)
    assert cfg.codec_string == "avc1.42C00D"
    # Length size 2, two SPS, trailing high-profile extension bytes ignored.
    rec = bytes((1, 100, 0, 40, 0xFD, 0xE2, 0, 2, 0x67, 1, 0, 2, 0x67, 2, 1, 0, 1, 0x68, 0xFD, 0xF8, 0xF8, 0))
    cfg = avc.parse_avc_config(rec)
    assert cfg.nalu_length_size == 2
    assert cfg.sps == (b"\x67\x01", b"\x67\x02") and cfg.pps == (b"\x68",)


@pytest.mark.parametrize(
    "record",
    [
        b"",
        AVC_RECORD[:6],
        AVC_RECORD[:-1],  # PPS runs past the end
        AVC_RECORD[:8 + len(SPS_320)],  # no PPS count
        b"\x02" + AVC_RECORD[1:],  # version 2
        AVC_RECORD[:4] + b"\xfe" + AVC_RECORD[5:],  # length size 3
        AVC_RECORD[:6] + b"\x00\x00" + AVC_RECORD[8:],  # zero-length SPS
    ],
)
def test_parse_avc_config_rejects(record: bytes) -> None:
    with pytest.raises(AVCError):
        avc.parse_avc_config(record)


def _hevc_record(vps: bytes, sps: bytes, pps: bytes, sei: bytes = b"") -> bytes:
    head = bytearray(23)
    head[0] = 1
    head[1] = 0x01  # profile space 0, main tier, Main profile
    head[12] = 120
    head[21] = 0x0F  # length size 4
    arrays = [(32, vps), (33, sps), (34, pps)] + ([(39, sei)] if sei else [])
    head[22] = len(arrays)
    body = b"".join(
        bytes((0x80 | t, 0, 1)) + len(n).to_bytes(2, "big") + n for t, n in arrays
    )
    return bytes(head) + body


def test_parse_hevc_config() -> None:
    sps = bytes.fromhex(HEVC_SPS["main_1080p"][0])
    rec = _hevc_record(b"\x40\x01\x0c", sps, b"\x44\x01\xc1", b"\x4e\x01\x05")
    cfg = avc.parse_hevc_config(rec)
    assert (cfg.profile, cfg.level, cfg.tier, cfg.nalu_length_size) == (1, 120, 0, 4)
    assert cfg.vps == (b"\x40\x01\x0c",) and cfg.sps == (sps,) and cfg.pps == (b"\x44\x01\xc1",)
    assert cfg.other == ((39, (b"\x4e\x01\x05",)),)
    assert avc.parse_hevc_sps(cfg.sps[0]).width == 1920
    with pytest.raises(AVCError):
        avc.parse_hevc_config(rec[:-1])
    with pytest.raises(AVCError):
        avc.parse_hevc_config(rec[:20])


def test_avcc_to_annexb() -> None:
    data = b"\x00\x00\x00\x02\x09\xf0" + b"\x00\x00\x00\x03\x65\x88\x84" + b"\x00\x00\x00\x00"
    assert avc.avcc_to_annexb(data) == b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x65\x88\x84"
    assert avc.avcc_to_annexb(b"\x00\x02\x41\x9a", 2) == b"\x00\x00\x00\x01\x41\x9a"
    assert avc.avcc_to_annexb(b"\x01\x41", 1) == b"\x00\x00\x00\x01\x41"
    assert avc.avcc_to_annexb(b"") == b""
    with pytest.raises(AVCError):
        avc.avcc_to_annexb(b"\x00\x00\x00\x05\x65\x88")  # length lies
    with pytest.raises(AVCError):
        avc.avcc_to_annexb(b"\x00\x00\x00\x01\x65\x00\x00")  # truncated length field
    with pytest.raises(ValueError):
        avc.split_avcc(b"", 3)


def test_split_annexb() -> None:
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88"
    assert avc.split_annexb(stream) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]


def test_unescape_rbsp() -> None:
    assert avc.unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x03"
    assert avc.unescape_rbsp(b"\x01\x02") == b"\x01\x02"


def test_exp_golomb() -> None:
    # 1 | 010 | 011 | 00100 -> ue 0, 1, 2, 3; then 00101 | 00110 -> se -2 (code 4), +3 (code 5).
    bits = "1" + "010" + "011" + "00100" + "00101" + "00110"
    data = int(bits.ljust(32, "0"), 2).to_bytes(4, "big")
    r = BitReader(data)
    assert [r.ue(), r.ue(), r.ue(), r.ue()] == [0, 1, 2, 3]
    assert [r.se(), r.se()] == [-2, 3]
    with pytest.raises(AVCError):
        BitReader(b"\x00\x00\x00\x00\x00").ue()  # > 32 leading zeros
    with pytest.raises(AVCError):
        BitReader(b"\xff").u(9)


def test_nal_types() -> None:
    assert avc.nal_type(b"\x65") == 5 and avc.nal_type(SPS_320) == 7
    assert avc.hevc_nal_type(b"\x26\x01") == 19 and avc.hevc_nal_type(avc.AUD_HEVC) == 35


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.sampled_from([1, 2, 4]))
def test_avcc_split_roundtrip(nals: list[bytes], size: int) -> None:
    nals = [n[: (1 << (8 * size)) - 1] for n in nals]
    data = b"".join(len(n).to_bytes(size, "big") + n for n in nals)
    assert [bytes(n) for n in avc.split_avcc(data, size)] == nals
    assert avc.avcc_to_annexb(data, size) == b"".join(avc.START_CODE + n for n in nals)


@given(st.binary(max_size=200))
def test_fuzz_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (avc.parse_avc_config, avc.parse_hevc_config, avc.parse_sps, avc.parse_hevc_sps):
        try:
            parse(data)
        except ProtocolError:
            pass
    for prefix in (b"\x67", b"\x42\x01"):  # reach deep into the SPS parsers
        for parse in (avc.parse_sps, avc.parse_hevc_sps):
            try:
                parse(prefix + data)
            except ProtocolError:
                pass
    try:
        avc.split_avcc(data)
    except ProtocolError:
        pass
