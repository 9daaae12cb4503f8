"""H.264/AVC and H.265/HEVC bitstream helpers: decoder configuration records, AVCC -> Annex B, SPS fields.

FLV (and MP4) carry H.264/H.265 as *AVCC*: NAL units prefixed by their big-endian length, with the
parameter sets moved out of band into a decoder configuration record (the body of the sequence header).
MPEG-TS wants *Annex B*: start codes, parameter sets in band. The SPS parsers exist so the API can report
profile, level and picture size without decoding anything.

Bad input raises :class:`AVCError` (a :class:`~livesrv.codec.errors.ProtocolError`): it came from a
publisher, so it is the peer's fault, never ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from livesrv.codec.errors import ProtocolError

__all__ = [
    "AUD_H264",
    "AUD_HEVC",
    "AVCConfig",
    "AVCError",
    "BitReader",
    "HEVCConfig",
    "SPSInfo",
    "START_CODE",
    "avcc_to_annexb",
    "hevc_nal_type",
    "nal_type",
    "parse_avc_config",
    "parse_hevc_config",
    "parse_hevc_sps",
    "parse_sps",
    "split_avcc",
    "split_annexb",
    "unescape_rbsp",
]


class AVCError(ProtocolError):
    """Malformed H.264/H.265 data (configuration record, NAL unit lengths, parameter sets)."""


START_CODE: Final = b"\x00\x00\x00\x01"

# H.264 NAL unit types (ITU-T H.264 table 7-1).
NAL_SLICE: Final = 1
NAL_IDR: Final = 5
NAL_SEI: Final = 6
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_AUD: Final = 9
NAL_SPS_EXT: Final = 13

# H.265 NAL unit types (ITU-T H.265 table 7-1).
HEVC_NAL_BLA_W_LP: Final = 16
HEVC_NAL_RSV_IRAP_23: Final = 23
HEVC_NAL_VPS: Final = 32
HEVC_NAL_SPS: Final = 33
HEVC_NAL_PPS: Final = 34
HEVC_NAL_AUD: Final = 35

#: An access unit delimiter NAL, primary_pic_type 7 ("any slice type"), with its rbsp stop bit.
AUD_H264: Final = b"\x09\xf0"
#: HEVC AUD: nal_unit_type 35, layer 0, temporal id 1; pic_type 2 ("any") and the stop bit.
AUD_HEVC: Final = b"\x46\x01\x50"

# Profiles whose SPS carries chroma format, bit depth and scaling lists (H.264 7.3.2.1.1).
_HIGH_PROFILES: Final = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def nal_type(nal: bytes | bytearray | memoryview) -> int:
    """H.264 nal_unit_type of a NAL unit (first byte, low 5 bits)."""
    return nal[0] & 0x1F


def hevc_nal_type(nal: bytes | bytearray | memoryview) -> int:
    """H.265 nal_unit_type of a NAL unit (first byte, bits 1-6)."""
    return (nal[0] >> 1) & 0x3F


# --------------------------------------------------------------------------- configuration records


@dataclass(frozen=True, slots=True)
class AVCConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)."""

    profile: int
    compatibility: int
    level: int
    nalu_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        """The RFC 6381 ``avc1.PPCCLL`` string (HLS CODECS, MSE)."""
        return f"avc1.{self.profile:02X}{self.compatibility:02X}{self.level:02X}"


def parse_avc_config(record: bytes | bytearray | memoryview) -> AVCConfig:
    """Parse the body of an FLV AVC sequence header (after the 5-byte FLV video tag header)."""
    n = len(record)
    if n < 7:
        raise AVCError(f"AVCDecoderConfigurationRecord too short ({n} bytes)")
    if record[0] != 1:
        raise AVCError(f"unsupported AVCDecoderConfigurationRecord version {record[0]}")
    length_size = (record[4] & 3) + 1
    if length_size == 3:
        raise AVCError("NAL unit length size 3 is not allowed")
    pos = 5
    sps, pos = _read_param_sets(record, pos, record[pos] & 0x1F, 1)
    if pos >= n:
        raise AVCError("truncated AVCDecoderConfigurationRecord")
    pps, pos = _read_param_sets(record, pos, record[pos], 1)
    # High-profile extensions (chroma format, bit depth, SPS ext) may follow; nothing here needs them.
    return AVCConfig(record[1], record[2], record[3], length_size, tuple(sps), tuple(pps))


def _read_param_sets(
    record: bytes | bytearray | memoryview, pos: int, count: int, count_size: int
) -> tuple[list[bytes], int]:
    """``count`` NAL units each prefixed by a 16-bit length, starting after a ``count_size``-byte count."""
    n = len(record)
    pos += count_size
    out: list[bytes] = []
    for _ in range(count):
        if pos + 2 > n:
            raise AVCError("truncated parameter set length")
        size = record[pos] << 8 | record[pos + 1]
        pos += 2
        if size == 0 or pos + size > n:
            raise AVCError(f"parameter set of {size} bytes does not fit the record")
        out.append(bytes(record[pos : pos + size]))
        pos += size
    return out, pos


@dataclass(frozen=True, slots=True)
class HEVCConfig:
    """The parts of an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) a muxer needs."""

    profile_space: int
    tier: int
    profile: int
    level: int
    nalu_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    #: Any other arrays (SEI...), as (nal_unit_type, NAL units).
    other: tuple[tuple[int, tuple[bytes, ...]], ...] = ()


def parse_hevc_config(record: bytes | bytearray | memoryview) -> HEVCConfig:
    """Parse the body of an HEVC sequence header (legacy codec id 12 or Enhanced RTMP ``hvc1``)."""
    n = len(record)
    if n < 23:
        raise AVCError(f"HEVCDecoderConfigurationRecord too short ({n} bytes)")
    if record[0] != 1:
        raise AVCError(f"unsupported HEVCDecoderConfigurationRecord version {record[0]}")
    b1 = record[1]
    length_size = (record[21] & 3) + 1
    if length_size == 3:
        raise AVCError("NAL unit length size 3 is not allowed")
    arrays = record[22]
    pos = 23
    found: dict[int, list[bytes]] = {}
    for _ in range(arrays):
        if pos + 3 > n:
            raise AVCError("truncated HEVCDecoderConfigurationRecord array")
        kind = record[pos] & 0x3F
        count = record[pos + 1] << 8 | record[pos + 2]
        nals, pos = _read_param_sets(record, pos + 1, count, 2)
        found.setdefault(kind, []).extend(nals)
    other = tuple(
        (k, tuple(v)) for k, v in found.items() if k not in (HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS)
    )
    return HEVCConfig(
        b1 >> 6,
        (b1 >> 5) & 1,
        b1 & 0x1F,
        record[12],
        length_size,
        tuple(found.get(HEVC_NAL_VPS, ())),
        tuple(found.get(HEVC_NAL_SPS, ())),
        tuple(found.get(HEVC_NAL_PPS, ())),
        other,
    )


# --------------------------------------------------------------------------- NAL unit framing


def split_avcc(data: bytes | bytearray | memoryview, length_size: int = 4) -> list[memoryview]:
    """The NAL units of length-prefixed data, as views into ``data`` (no copies).

    Zero-length NAL units are skipped (some encoders emit them); a length that runs past the end of the
    data raises.
    """
    if length_size not in (1, 2, 4):
        raise ValueError(f"invalid NAL unit length size {length_size}")
    mv = memoryview(data)
    n = len(mv)
    pos = 0
    out: list[memoryview] = []
    while pos < n:
        if pos + length_size > n:
            raise AVCError("truncated NAL unit length")
        size = int.from_bytes(mv[pos : pos + length_size], "big")
        pos += length_size
        if size > n - pos:
            raise AVCError(f"NAL unit of {size} bytes runs past the end of the frame ({n - pos} left)")
        if size:
            out.append(mv[pos : pos + size])
        pos += size
    return out


def avcc_to_annexb(data: bytes | bytearray | memoryview, length_size: int = 4) -> bytes:
    """Length-prefixed NAL units -> the same NAL units each behind a 4-byte start code."""
    parts: list[bytes | memoryview] = []
    for nal in split_avcc(data, length_size):
        parts.append(START_CODE)
        parts.append(nal)
    return b"".join(parts)


def split_annexb(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes); for tests and tools."""
    buf = bytes(data)
    out: list[bytes] = []
    starts: list[int] = []
    i = buf.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = buf.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(buf)
        nal = buf[s:end]
        if k + 1 < len(starts):
            nal = nal.rstrip(b"\x00")  # trailing_zero_8bits / the 4th byte of the next start code
        if nal:
            out.append(nal)
    return out


# --------------------------------------------------------------------------- bit reading


def unescape_rbsp(nal: bytes | bytearray | memoryview) -> bytes:
    """Remove emulation prevention bytes (``00 00 03`` -> ``00 00``) from a NAL unit payload."""
    data = bytes(nal)
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes, over a whole (small) buffer held as one integer."""

    __slots__ = ("_value", "_bits", "_pos")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = 8 * len(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return self._bits - self._pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        end = self._pos + n
        if end > self._bits:
            raise AVCError("truncated parameter set")
        self._pos = end
        return (self._value >> (self._bits - end)) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        if self._pos + n > self._bits:
            raise AVCError("truncated parameter set")
        self._pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise AVCError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


# --------------------------------------------------------------------------- SPS


@dataclass(frozen=True, slots=True)
class SPSInfo:
    """What the API reports about a video stream: profile, level and the cropped picture size."""

    profile_idc: int
    level_idc: int
    width: int
    height: int
    chroma_format_idc: int = 1
    bit_depth: int = 8
    constraint_flags: int = 0


def parse_sps(nal: bytes | bytearray | memoryview) -> SPSInfo:
    """Parse an H.264 SPS NAL unit (with its 1-byte NAL header) far enough to get the picture size."""
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise AVCError("not an H.264 SPS NAL unit")
    r = BitReader(unescape_rbsp(memoryview(nal)[1:]))
    profile_idc = r.u(8)
    constraints = r.u(8)
    level_idc = r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_planes = 0
    bit_depth = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise AVCError(f"invalid chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_planes = r.u(1)
        bit_depth = r.ue() + 8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise AVCError(f"num_ref_frames_in_pic_order_cnt_cycle {cycle} out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise AVCError(f"invalid pic_order_cnt_type {poc_type}")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop_l = crop_r = crop_t = crop_b = 0
    if r.u(1):  # frame_cropping_flag
        crop_l, crop_r, crop_t, crop_b = r.ue(), r.ue(), r.ue(), r.ue()
    if chroma_format_idc == 0 or separate_planes:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        sub_w = 1 if chroma_format_idc == 3 else 2
        sub_h = 2 if chroma_format_idc == 1 else 1
        unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop_l + crop_r)
    height = (2 - frame_mbs_only) * height_map_units * 16 - unit_y * (crop_t + crop_b)
    if width <= 0 or height <= 0:
        raise AVCError(f"SPS cropping leaves no picture ({width}x{height})")
    return SPSInfo(profile_idc, level_idc, width, height, chroma_format_idc, bit_depth, constraints)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def parse_hevc_sps(nal: bytes | bytearray | memoryview) -> SPSInfo:
    """Parse an H.265 SPS NAL unit (with its 2-byte NAL header) far enough to get the picture size."""
    if len(nal) < 4 or hevc_nal_type(nal) != HEVC_NAL_SPS:
        raise AVCError("not an H.265 SPS NAL unit")
    r = BitReader(unescape_rbsp(memoryview(nal)[2:]))
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.u(1)  # sps_temporal_id_nesting_flag
    # profile_tier_level(1, max_sub_layers_minus1)
    r.u(3)  # general_profile_space, general_tier_flag
    profile_idc = r.u(5)
    r.skip(32)  # general_profile_compatibility_flags
    constraints = r.u(48)
    level_idc = r.u(8)
    present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        r.skip(88 * profile_present + 8 * level_present)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise AVCError(f"invalid chroma_format_idc {chroma_format_idc}")
    separate_planes = r.u(1) if chroma_format_idc == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if chroma_format_idc == 0 or separate_planes:
            sub_w = sub_h = 1
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    bit_depth = r.ue() + 8
    if width <= 0 or height <= 0:
        raise AVCError(f"SPS conformance window leaves no picture ({width}x{height})")
    return SPSInfo(profile_idc, level_idc, width, height, chroma_format_idc, bit_depth, constraints)
