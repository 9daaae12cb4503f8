"""What a stream carries, read from the sequence headers its publisher sent (never from a decoder): codec,
profile, level, picture size, sample rate and channels, in the shapes SRS's API reports them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livesrv.codec import flv
from livesrv.codec.aac import parse_asc
from livesrv.codec.avc import parse_avc_config, parse_hevc_config, parse_hevc_sps, parse_sps
from livesrv.codec.errors import ProtocolError

_AVC_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High(10)", 122: "High(422)",
                 244: "High(444)"}
_HEVC_PROFILES = {1: "Main", 2: "Main10", 3: "Main Still Picture", 4: "RExt"}
_AUDIO_NAMES = {flv.CODEC_AAC: "AAC", flv.CODEC_MP3: "MP3", flv.CODEC_OPUS: "Opus", flv.CODEC_FLAC: "FLAC",
                flv.CODEC_AC3: "AC3", flv.CODEC_EAC3: "EAC3", "speex": "Speex"}
_VIDEO_NAMES = {flv.CODEC_AVC: "H264", flv.CODEC_HEVC: "HEVC", flv.CODEC_AV1: "AV1", flv.CODEC_VP9: "VP9",
                flv.CODEC_VP8: "VP8"}


def _level_avc(level: int) -> str:
    if level == 9:
        return "1b"
    return str(level // 10) if level % 10 == 0 else f"{level // 10}.{level % 10}"


def _level_hevc(level: int) -> str:
    major, minor = divmod(level, 30)
    return str(major) if minor == 0 else f"{major}.{minor // 3}"


def video_info(payload: bytes, metadata: Mapping[str, object]) -> dict[str, Any]:
    """SRS's ``video`` object, from the sequence header the publisher sent (never from a decoder)."""
    try:
        info = flv.parse_video(payload)
    except ProtocolError:
        return {"codec": "Other", "profile": "Other", "level": "Other", **_meta_size(metadata)}
    name = _VIDEO_NAMES.get(info.codec, info.codec.upper() or "Other")
    body = memoryview(payload)[info.data_offset :]
    try:
        if info.codec == flv.CODEC_AVC:
            sps = parse_sps(parse_avc_config(body).sps[0])
            return {"codec": name, "profile": _AVC_PROFILES.get(sps.profile_idc, "Other"),
                    "level": _level_avc(sps.level_idc), "width": sps.width, "height": sps.height}
        if info.codec == flv.CODEC_HEVC:
            sps = parse_hevc_sps(parse_hevc_config(body).sps[0])
            return {"codec": name, "profile": _HEVC_PROFILES.get(sps.profile_idc, "Other"),
                    "level": _level_hevc(sps.level_idc), "width": sps.width, "height": sps.height}
    except (ProtocolError, IndexError, ValueError):
        pass  # a header we cannot read: say what we know
    if info.codec in (flv.CODEC_AV1, flv.CODEC_VP9):
        return {"codec": name, "profile": None, "level": None, **_meta_size(metadata)}
    return {"codec": name, "profile": "Other", "level": "Other", **_meta_size(metadata)}


def _meta_size(metadata: Mapping[str, object]) -> dict[str, int]:
    out = {}
    for k in ("width", "height"):
        v = metadata.get(k)
        out[k] = int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 << 16 else 0
    return out


def audio_info(payload: bytes) -> dict[str, Any] | None:
    """SRS's ``audio`` object: from the AAC AudioSpecificConfig, else from the FLV audio header."""
    try:
        info = flv.parse_audio(payload)
    except ProtocolError:
        return None
    name = _AUDIO_NAMES.get(info.codec, info.codec.upper() or "Other")
    if info.codec == flv.CODEC_AAC and info.sequence_header:
        try:
            asc = parse_asc(memoryview(payload)[info.data_offset :])
            return {"codec": name, "sample_rate": asc.sample_rate, "channel": asc.channels, "profile": asc.profile_name}
        except ProtocolError:
            pass
    return {"codec": name, "sample_rate": info.sample_rate, "channel": info.channels, "profile": "Other"}
