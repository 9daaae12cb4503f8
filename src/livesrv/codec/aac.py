"""AAC: the AudioSpecificConfig of an FLV/MP4 sequence header, and ADTS framing for MPEG-TS.

FLV carries raw AAC frames with the decoder configuration sent once (the AudioSpecificConfig); MPEG-TS
carries each frame behind a self-describing 7-byte ADTS header built from that configuration. ADTS can only
express AAC Main/LC/SSR/LTP with a table sample rate and channel configurations 1-7, so explicit HE-AAC
(object type 5/29) is framed with its core (LC) parameters and the decoder finds the SBR/PS itself, as
ffmpeg's ``adts`` muxer does.

This is the one AudioSpecificConfig parser: FLV inspection (:func:`livesrv.codec.flv.parse_aac_config`), the API
and the TS muxer all use it. It unwraps explicit SBR/PS signalling because ADTS needs the core object type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from livesrv.codec.errors import ProtocolError

__all__ = [
    "ADTS_HEADER_SIZE",
    "AACError",
    "ADTSHeader",
    "AudioSpecificConfig",
    "SAMPLE_RATES",
    "adts_header",
    "parse_adts_header",
    "parse_asc",
]


class AACError(ProtocolError):
    """Malformed or (for ADTS) unrepresentable AAC configuration."""


SAMPLE_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
# Channel configuration -> channel count (ISO/IEC 14496-3:2009 + amendments); 0 = described by a PCE.
_CHANNELS: Final = (0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 7, 8, 24, 8, 0)

AOT_AAC_MAIN: Final = 1
AOT_AAC_LC: Final = 2
AOT_SBR: Final = 5
AOT_ER_BSAC: Final = 22
AOT_PS: Final = 29

ADTS_HEADER_SIZE: Final = 7
ADTS_MAX_FRAME: Final = 0x1FFF  # 13-bit aac_frame_length, header included

_PROFILE_NAMES: Final = {1: "Main", 2: "LC", 3: "SSR", 4: "LTP", 5: "HE", 29: "HEv2"}


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """ISO/IEC 14496-3 1.6.2.1, as far as framing and reporting need it.

    ``object_type`` is what the configuration signals first (5 = explicit SBR, 29 = explicit PS);
    ``core_object_type``, ``sample_rate_index`` and ``sample_rate`` describe the core decoder, which is
    what ADTS carries. ``extension_sample_rate`` is the SBR output rate (0 without explicit SBR).
    ``channels`` is 0 when a program config element holds the layout.
    """

    object_type: int
    sample_rate_index: int
    sample_rate: int
    channel_config: int
    channels: int
    core_object_type: int
    extension_sample_rate: int = 0

    @property
    def codec_string(self) -> str:
        """RFC 6381 ``mp4a.40.N`` (HLS CODECS, MSE)."""
        return f"mp4a.40.{self.object_type}"

    @property
    def profile_name(self) -> str:
        """SRS-style profile name for the API: LC, HE, HEv2, Main..."""
        return _PROFILE_NAMES.get(self.object_type, str(self.object_type))

    @property
    def output_sample_rate(self) -> int:
        return self.extension_sample_rate or self.sample_rate


class _Bits:
    __slots__ = ("value", "bits", "pos")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.bits = 8 * len(data)
        self.pos = 0

    def take(self, n: int) -> int:
        end = self.pos + n
        if end > self.bits:
            raise AACError("truncated AudioSpecificConfig")
        self.pos = end
        return (self.value >> (self.bits - end)) & ((1 << n) - 1)

    def object_type(self) -> int:
        aot = self.take(5)
        return 32 + self.take(6) if aot == 31 else aot

    def rate(self) -> tuple[int, int]:
        index = self.take(4)
        if index == 15:
            return index, self.take(24)
        if index >= len(SAMPLE_RATES):
            raise AACError(f"reserved AAC sampling frequency index {index}")
        return index, SAMPLE_RATES[index]


def parse_asc(data: bytes | bytearray | memoryview) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig (the body of an FLV AAC sequence header after its 2-byte header)."""
    if len(data) < 2:
        raise AACError(f"AudioSpecificConfig too short ({len(data)} bytes)")
    # Everything needed lies within 12 bytes even with every escape used.
    r = _Bits(bytes(data[:12]))
    aot = r.object_type()
    index, rate = r.rate()
    channel_config = r.take(4)
    core = aot
    ext_rate = 0
    if aot in (AOT_SBR, AOT_PS):
        _, ext_rate = r.rate()
        core = r.object_type()
        if core == AOT_ER_BSAC:
            r.take(4)  # extensionChannelConfiguration
    if aot == 0 or core == 0:
        raise AACError("AAC object type 0 is reserved")
    return AudioSpecificConfig(aot, index, rate, channel_config, _CHANNELS[channel_config], core, ext_rate)


def adts_header(config: AudioSpecificConfig, payload_size: int) -> bytes:
    """The 7-byte ADTS header (no CRC) for one raw AAC frame of ``payload_size`` bytes."""
    profile = config.core_object_type - 1
    if not 0 <= profile <= 3:
        raise AACError(f"AAC object type {config.core_object_type} cannot be framed in ADTS")
    index = config.sample_rate_index
    if index == 15:  # explicit rate: ADTS only has the table
        try:
            index = SAMPLE_RATES.index(config.sample_rate)
        except ValueError:
            raise AACError(f"AAC sample rate {config.sample_rate} cannot be framed in ADTS") from None
    channels = config.channel_config
    if channels > 7:
        raise AACError(f"AAC channel configuration {channels} cannot be framed in ADTS")
    length = payload_size + ADTS_HEADER_SIZE
    if not ADTS_HEADER_SIZE <= length <= ADTS_MAX_FRAME:
        raise AACError(f"AAC frame of {payload_size} bytes does not fit an ADTS frame")
    return bytes(
        (
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, protection absent
            profile << 6 | index << 2 | channels >> 2,
            (channels & 3) << 6 | length >> 11,
            (length >> 3) & 0xFF,
            (length & 7) << 5 | 0x1F,  # buffer fullness 0x7FF: variable rate
            0xFC,  # ...and one raw data block
        )
    )


@dataclass(frozen=True, slots=True)
class ADTSHeader:
    profile: int  # object type - 1
    sample_rate_index: int
    channel_config: int
    frame_length: int  # header included
    protection_absent: bool
    raw_data_blocks: int

    @property
    def header_size(self) -> int:
        return 7 if self.protection_absent else 9


def parse_adts_header(data: bytes | bytearray | memoryview) -> ADTSHeader:
    """Read an ADTS header; for tests and for anything that ingests ADTS (e.g. a TS or SRT input later)."""
    if len(data) < ADTS_HEADER_SIZE:
        raise AACError("truncated ADTS header")
    b = bytes(data[:7])
    if b[0] != 0xFF or b[1] & 0xF6 != 0xF0:
        raise AACError("bad ADTS sync word")
    return ADTSHeader(
        b[2] >> 6,
        (b[2] >> 2) & 0xF,
        (b[2] & 1) << 2 | b[3] >> 6,
        (b[3] & 3) << 11 | b[4] << 3 | b[5] >> 5,
        bool(b[1] & 1),
        b[6] & 3,
    )
