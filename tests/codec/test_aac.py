"""AAC AudioSpecificConfig parsing and ADTS headers: known bytes, real encoder output, fuzzing."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livesrv.codec import aac
from livesrv.codec.aac import AACError, AudioSpecificConfig
from livesrv.codec.errors import ProtocolError
from tests.helpers import FFMPEG, require_tool


def _asc_bits(*fields: tuple[int, int]) -> bytes:
    """Pack (value, bit count) fields MSB first, padded to whole bytes."""
    value = nbits = 0
    for v, n in fields:
        value = value << n | v
        nbits += n
    pad = -nbits % 8
    return (value << pad).to_bytes((nbits + pad) // 8, "big")


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        # LC 44.1 kHz stereo: what ffmpeg's aac encoder writes into FLV.
        (b"\x12\x10", (2, 4, 44100, 2, 2, 2, 0)),
        (b"\x11\x90", (2, 3, 48000, 2, 2, 2, 0)),
        (b"\x11\x88", (2, 3, 48000, 1, 1, 2, 0)),
        (b"\x13\x08", (2, 6, 24000, 1, 1, 2, 0)),
        (b"\x11\xb0", (2, 3, 48000, 6, 6, 2, 0)),  # 5.1
        (b"\x11\xb8", (2, 3, 48000, 7, 8, 2, 0)),  # 7.1
        (b"\x0a\x10", (1, 4, 44100, 2, 2, 1, 0)),  # Main
        # Explicit HE-AAC: AOT 5, core 24 kHz stereo, SBR output 48 kHz, core AOT 2 (LC).
        (_asc_bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5)), (5, 6, 24000, 2, 2, 2, 48000)),
        # Explicit HE-AACv2: AOT 29, core 22.05 kHz mono, output 44.1 kHz.
        (_asc_bits((29, 5), (7, 4), (1, 4), (4, 4), (2, 5)), (29, 7, 22050, 1, 1, 2, 44100)),
        # Explicit frequency (index 15) of 44100.
        (_asc_bits((2, 5), (15, 4), (44100, 24), (2, 4)), (2, 15, 44100, 2, 2, 2, 0)),
        # Escaped object type 31 + 6 bits: 32 + 10 = 42 (USAC).
        (_asc_bits((31, 5), (10, 6), (3, 4), (2, 4)), (42, 3, 48000, 2, 2, 42, 0)),
    ],
)
def test_parse_asc(asc: bytes, expected: tuple[int, ...]) -> None:
    cfg = aac.parse_asc(asc)
    assert (
        cfg.object_type,
        cfg.sample_rate_index,
        cfg.sample_rate,
        cfg.channel_config,
        cfg.channels,
        cfg.core_object_type,
        cfg.extension_sample_rate,
    ) == expected


def test_asc_names() -> None:
    cfg = aac.parse_asc(b"\x12\x10")
    assert cfg.codec_string == "mp4a.40.2" and cfg.profile_name == "LC" and cfg.output_sample_rate == 44100
    he = aac.parse_asc(_asc_bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5)))
    assert he.profile_name == "HE" and he.output_sample_rate == 48000


@pytest.mark.parametrize("asc", [b"", b"\x12", b"\x17\x80", b"\x02\x10", b"\x16\x90", _asc_bits((2, 5), (15, 4), (1, 3))])
def test_parse_asc_rejects(asc: bytes) -> None:
    with pytest.raises(AACError):
        aac.parse_asc(asc)


def test_adts_header_known_bytes() -> None:
    cfg = aac.parse_asc(b"\x12\x10")
    # LC (profile 1), index 4, 2 channels, frame 107 bytes, fullness 0x7FF, 1 raw block.
    assert aac.adts_header(cfg, 100) == bytes.fromhex("fff150800d7ffc")
    hdr = aac.parse_adts_header(aac.adts_header(cfg, 100))
    assert (hdr.profile, hdr.sample_rate_index, hdr.channel_config, hdr.frame_length) == (1, 4, 2, 107)
    assert hdr.protection_absent and hdr.raw_data_blocks == 0 and hdr.header_size == 7


def test_adts_header_frames_he_aac_with_its_core() -> None:
    he = aac.parse_asc(_asc_bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5)))
    hdr = aac.parse_adts_header(aac.adts_header(he, 10))
    assert (hdr.profile, hdr.sample_rate_index, hdr.channel_config) == (1, 6, 2)
    explicit = aac.parse_asc(_asc_bits((2, 5), (15, 4), (44100, 24), (2, 4)))
    assert aac.parse_adts_header(aac.adts_header(explicit, 10)).sample_rate_index == 4


@pytest.mark.parametrize(
    ("cfg", "size"),
    [
        (AudioSpecificConfig(42, 3, 48000, 2, 2, 42), 10),  # USAC has no ADTS profile
        (AudioSpecificConfig(2, 15, 44000, 2, 2, 2), 10),  # not a table rate
        (AudioSpecificConfig(2, 3, 48000, 11, 7, 2), 10),  # channel config beyond 3 bits
        (AudioSpecificConfig(2, 3, 48000, 2, 2, 2), 8185),  # frame length beyond 13 bits
    ],
)
def test_adts_header_rejects(cfg: AudioSpecificConfig, size: int) -> None:
    with pytest.raises(AACError):
        aac.adts_header(cfg, size)


def test_parse_adts_header_rejects() -> None:
    with pytest.raises(AACError):
        aac.parse_adts_header(b"\xff\xf1\x50")
    with pytest.raises(AACError):
        aac.parse_adts_header(b"\xff\x01\x50\x80\x0d\x7f\xfc")


def test_adts_matches_ffmpeg(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Our header for each frame equals the one ffmpeg's adts muxer wrote (same ASC, same frame sizes)."""
    out = tmp_path / "a.aac"
    subprocess.run(
        [require_tool(FFMPEG), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", "0.5", "-ac", "2", "-c:a", "aac", "-f", "adts", str(out)],
        check=True, timeout=60,
    )
    data = out.read_bytes()
    cfg = aac.parse_asc(b"\x11\x90")  # LC 48 kHz stereo
    pos = frames = 0
    while pos < len(data):
        hdr = aac.parse_adts_header(data[pos:])
        assert data[pos : pos + 7] == aac.adts_header(cfg, hdr.frame_length - 7)
        pos += hdr.frame_length
        frames += 1
    assert pos == len(data) and frames > 20


@given(
    st.sampled_from([1, 2, 3, 4]),
    st.integers(0, 12),
    st.integers(0, 7),
    st.integers(0, aac.ADTS_MAX_FRAME - 7),
)
def test_adts_roundtrip(aot: int, index: int, channels: int, size: int) -> None:
    cfg = AudioSpecificConfig(aot, index, aac.SAMPLE_RATES[index], channels, channels, aot)
    hdr = aac.parse_adts_header(aac.adts_header(cfg, size))
    assert (hdr.profile, hdr.sample_rate_index, hdr.channel_config, hdr.frame_length) == (
        aot - 1, index, channels, size + 7
    )


@given(st.binary(max_size=16))
def test_fuzz_asc(data: bytes) -> None:
    try:
        cfg = aac.parse_asc(data)
    except ProtocolError:
        return
    try:
        aac.adts_header(cfg, 100)
    except ProtocolError:
        pass
