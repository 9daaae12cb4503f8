"""Output formats: how a batch of MediaPackets becomes the bytes a viewer's socket receives.

A format object is interned (one per distinct parameter set) and hashed by identity, so the fan-out can key
its per-batch cache of joined bytes on it for the price of a pointer compare. Every viewer that shares a
format and is in step writes the *same* bytes object.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from livesrv.codec.aac import AudioSpecificConfig, adts_header, parse_asc
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket


class Format:
    """Serializes packets for one output protocol. Subclasses are interned; never compare by value."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        raise NotImplementedError


class FlvFormat(Format):
    """FLV tags (with their previous-tag-size trailers), as HTTP-FLV sends them.

    ``kinds`` limits the tags to the tracks the viewer's FLV header announced (SRS ``drop_if_not_match``):
    a player told "video only" may break on an audio tag. Script data always goes out. ``None``: every tag.
    """

    __slots__ = ("kinds",)

    def __init__(self, name: str, kinds: frozenset[int] | None = None) -> None:
        super().__init__(name)
        self.kinds = kinds

    def tags(self, pkts: Sequence[MediaPacket]) -> bytes:
        kinds = self.kinds
        if kinds is None:
            return b"".join([p.flv_bytes() for p in pkts])
        return b"".join([p.flv_bytes() for p in pkts if p.kind in kinds])

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        return self.tags(pkts)


def ws_binary_frame_header(length: int) -> bytes:
    """An unmasked, final, binary WebSocket frame header (RFC 6455 5.2).

    Written by hand rather than through wsproto's send path: the header is built once per batch and the
    frame shared by every WebSocket viewer, where a per-connection library call would copy per viewer.
    """
    if length < 126:
        return bytes((0x82, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


class WsFlvFormat(FlvFormat):
    """FLV tags carried in one binary WebSocket frame per batch (mpegts.js reads it as a byte stream)."""

    __slots__ = ()

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        body = self.tags(pkts)
        return ws_binary_frame_header(len(body)) + body if body else b""


class RtmpFormat(Format):
    """RTMP chunks at a given chunk size on a given message stream id (each message self-contained)."""

    __slots__ = ("chunk_size", "stream_id")

    def __init__(self, chunk_size: int, stream_id: int) -> None:
        super().__init__(f"rtmp/{chunk_size}/{stream_id}")
        self.chunk_size = chunk_size
        self.stream_id = stream_id

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        cs, sid = self.chunk_size, self.stream_id
        return b"".join([p.rtmp_bytes(cs, sid) for p in pkts])


_FLV: dict[tuple[bool, bool, bool], FlvFormat] = {}
_RTMP: dict[tuple[int, int], RtmpFormat] = {}


def rtmp_format(chunk_size: int, stream_id: int) -> RtmpFormat:
    fmt = _RTMP.get((chunk_size, stream_id))
    if fmt is None:
        fmt = _RTMP[(chunk_size, stream_id)] = RtmpFormat(chunk_size, stream_id)
    return fmt


class TsFormat(Format):
    """MPEG-TS, as HTTP-TS sends it. Muxing is stateful (continuity counters, PSI), so it cannot happen per
    batch or per viewer: the stream's HTTP-TS output muxes each packet once, in order, into ``pkt.mpegts``, and
    every batch and catch-up is a join of those bytes."""

    __slots__ = ()

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        return b"".join([ts for p in pkts if (ts := p.mpegts)])


TS = TsFormat("ts")


def flv_format(audio: bool = True, video: bool = True, websocket: bool = False) -> FlvFormat:
    """The interned FLV (or WebSocket-FLV) format carrying the given tracks (both: every tag, no filter)."""
    key = (audio, video, websocket)
    fmt = _FLV.get(key)
    if fmt is None:
        kinds = None if audio and video else frozenset({DATA} | ({AUDIO} if audio else set()) | ({VIDEO} if video else set()))
        tracks = ("a" if audio else "") + ("v" if video else "")
        name = ("ws-flv" if websocket else "flv") + ("" if kinds is None else "/" + (tracks or "data"))
        fmt = _FLV[key] = (WsFlvFormat if websocket else FlvFormat)(name, kinds)
    return fmt


FLV = flv_format()
WS_FLV = flv_format(websocket=True)


# ------------------------------------------------------------------------------------ audio-only streams


def _audio_frame(payload: bytes, legacy_formats: tuple[int, ...], fourcc: bytes) -> memoryview | None:
    """The raw frame of an audio tag body of the wanted codec (legacy sound format, or Enhanced RTMP FourCC
    with a CodedFrames packet); None for anything else (sequence headers, other codecs)."""
    if len(payload) < 2:
        return None
    b0 = payload[0]
    fmt = b0 >> 4
    if fmt in legacy_formats:
        if fmt == 10:  # AAC: AACPacketType 1 (raw), 0 is the AudioSpecificConfig
            return memoryview(payload)[2:] if payload[1] == 1 else None
        return memoryview(payload)[1:]
    if fmt == 9 and b0 & 0x0F == 1 and payload[1:5] == fourcc:  # ExHeader, CodedFrames, this FourCC
        return memoryview(payload)[5:]
    return None


class Mp3Format(Format):
    """An MP3 elementary stream (SRS's ``.mp3`` mount): the audio tags' frames, back to back; video and other
    codecs are left out. MP3 frames are self-synchronizing, so a player can start at any of them."""

    __slots__ = ()

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        return b"".join([f for p in pkts if p.kind == AUDIO and (f := _audio_frame(p.payload, (2, 14), b".mp3"))])


MP3 = Mp3Format("mp3")


class AdtsFormat(Format):
    """An AAC stream in ADTS (SRS's ``.aac`` mount): each raw AAC frame behind an ADTS header built from the
    publisher's AudioSpecificConfig, so the format is interned per configuration (a republish with another
    one moves its viewers to another format at their restart)."""

    __slots__ = ("config",)

    def __init__(self, name: str, config: AudioSpecificConfig) -> None:
        super().__init__(name)
        self.config = config

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        cfg = self.config
        out: list[bytes | memoryview] = []
        for p in pkts:
            if p.kind == AUDIO and (f := _audio_frame(p.payload, (10,), b"mp4a")) is not None:
                out.append(adts_header(cfg, len(f)))
                out.append(f)
        return b"".join(out)


_ADTS: dict[bytes, AdtsFormat] = {}


def adts_format(asc: bytes) -> AdtsFormat:
    """The interned ADTS format for an AudioSpecificConfig (raises :class:`~livesrv.codec.aac.AACError` when
    it is not one)."""
    fmt = _ADTS.get(asc)
    if fmt is None:
        if len(_ADTS) >= 256:  # (configurations are few; a bound all the same)
            _ADTS.clear()
        fmt = _ADTS[asc] = AdtsFormat(f"aac/{asc.hex()}", parse_asc(asc))
    return fmt
