"""MPEG-TS muxer fed with FLV-level packets: for HLS segments and for a continuous HTTP-TS stream.

Input is what RTMP and FLV carry (tag type, millisecond timestamp, tag body); output is whole 188-byte
transport packets. One program: PAT on PID 0, PMT on ``pmt_pid``, video (H.264, H.265) and audio (AAC as
ADTS, MP3 as is) on their own PIDs, PCR on the video PID or, for pure audio, on the audio PID.

Timing: DTS = FLV timestamp, PTS = timestamp + composition time (the FLV CTS), both at 90 kHz and wrapped at
33 bits; PCR equals the DTS of the PES it rides on, as SRS and most live muxers do. Each video access unit
becomes one PES that starts with an access unit delimiter, with the parameter sets from the sequence header
put in front of every IDR/IRAP picture so any segment decodes on its own. Audio frames are gathered into one
PES for at most ``audio_max_delay_ms`` (and always written before the next video frame), because a PES per
20 ms AAC frame would double the audio bitrate with headers and stuffing.

The PMT lists the tracks whose sequence header (or, for MP3, first frame) has been seen. When that set
changes, a new PMT version is written before the next PES. :meth:`TSMuxer.psi` gives PAT+PMT on demand: at
the start of every HLS segment, or ``psi(advance=False)`` for a viewer joining a shared live TS stream.

Cost: every published stream with HLS or HTTP-TS on goes through here, ~1,500 transport packets per second
at 2 Mbit/s, so nothing is done per 188-byte packet in Python. A PES is built with one join (its first
packet's header and adaptation field in front); one ``struct`` call cuts it into that first packet and the
184-byte payloads after it; one join with the payload-only header as separator makes the full packets and
one extended-slice assignment writes their continuity counters; only the stuffed last packet is built apart.
Legacy AVC/HEVC and AAC frames skip the full FLV header parse, and a frame of one NAL unit skips splitting.
:meth:`TSMuxer.mux_into` leaves a tag's pieces unjoined for a caller that gathers them anyway (HLS).
docs/performance.md ("MPEG-TS muxing: pure Python vs PyAV") has the figures, and why this is not FFmpeg's
muxer through PyAV.

Bad input raises a :class:`~livesrv.codec.errors.ProtocolError` subclass (``FLVError``, ``AVCError``,
``AACError``, ``TSError``) and leaves the muxer usable; codecs TS cannot carry here (AV1, VP9, Opus, ...) are counted in
:attr:`TSMuxer.skipped` and dropped.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Final, Protocol

from livesrv.codec import avc, flv
from livesrv.codec.aac import ADTS_HEADER_SIZE, ADTS_MAX_FRAME, AACError, AudioSpecificConfig, adts_header, parse_asc
from livesrv.codec.errors import ProtocolError

__all__ = [
    "AUDIO_PID",
    "FLVPacket",
    "PACKET_SIZE",
    "PMT_PID",
    "STREAM_TYPE_AAC",
    "STREAM_TYPE_H264",
    "STREAM_TYPE_HEVC",
    "STREAM_TYPE_MPEG1_AUDIO",
    "STREAM_TYPE_MPEG2_AUDIO",
    "TSError",
    "TSMuxer",
    "VIDEO_PID",
    "crc32_mpeg2",
]

PACKET_SIZE: Final = 188
SYNC_BYTE: Final = 0x47
_PAYLOAD: Final = PACKET_SIZE - 4

PAT_PID: Final = 0x0000
PMT_PID: Final = 0x1000
VIDEO_PID: Final = 0x0100
AUDIO_PID: Final = 0x0101
NULL_PID: Final = 0x1FFF

STREAM_TYPE_MPEG1_AUDIO: Final = 0x03
STREAM_TYPE_MPEG2_AUDIO: Final = 0x04
STREAM_TYPE_AAC: Final = 0x0F
STREAM_TYPE_H264: Final = 0x1B
STREAM_TYPE_HEVC: Final = 0x24

STREAM_ID_VIDEO: Final = 0xE0
STREAM_ID_AUDIO: Final = 0xC0

CLOCK_KHZ: Final = 90  # 90 kHz ticks per millisecond
MASK_33: Final = (1 << 33) - 1
# Largest audio PES body: PES_packet_length is 16 bits and counts the 8 header bytes after it.
_MAX_AUDIO_PES: Final = 0xFFFF - 8

_AUD_H264: Final = avc.START_CODE + avc.AUD_H264
_AUD_HEVC: Final = avc.START_CODE + avc.AUD_HEVC


class TSError(ProtocolError):
    """Media that cannot be put in a transport stream (e.g. an audio frame too large for one PES)."""


class FLVPacket(Protocol):
    """Anything with the three fields of an FLV tag; :class:`livesrv.media.packet.MediaPacket` is one."""

    @property
    def kind(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


# --------------------------------------------------------------------------- CRC and field encoders


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc32_mpeg2(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, MSB first, no final xor) of a PSI section."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ b]
    return crc


_MARKERS: Final = 1 << 32 | 1 << 16 | 1
#: The constant bits of a 40-bit PES timestamp field: the 4-bit prefix and the three marker bits.
_PTS_ONLY: Final = 0b0010 << 36 | _MARKERS
_PTS_BEFORE_DTS: Final = 0b0011 << 36 | _MARKERS
_DTS: Final = 0b0001 << 36 | _MARKERS


# A PES PTS/DTS field is a 40-bit integer (so the whole PES header is converted to bytes at once): the low 33
# bits of the timestamp t split 3/15/15 between the constant bits (prefix and markers, e.g. _PTS_ONLY):
# (t >> 30 & 7) << 33 | (t >> 15 & 0x7FFF) << 17 | (t & 0x7FFF) << 1 | constant_bits. TSMuxer._write_pes builds
# it inline (a function call per field was a measurable part of a frame's cost).


def _section(table_id: int, table_ext: int, version: int, body: bytes) -> bytes:
    """A long-form PSI section (section_syntax_indicator set) with its CRC."""
    length = 5 + len(body) + 4
    head = bytes(
        (
            table_id,
            0xB0 | length >> 8,
            length & 0xFF,
            table_ext >> 8,
            table_ext & 0xFF,
            0xC1 | (version & 0x1F) << 1,
            0,
            0,
        )
    )
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


# --------------------------------------------------------------------------- tracks


@dataclass(slots=True)
class _VideoTrack:
    codec: str  # flv.CODEC_AVC or flv.CODEC_HEVC
    stream_type: int
    length_size: int = 4
    #: Annex B parameter sets (start codes included), put in front of every random access picture.
    param_sets: bytes = b""
    avc_config: avc.AVCConfig | None = None
    hevc_config: avc.HEVCConfig | None = None


@dataclass(slots=True)
class _AudioTrack:
    codec: str  # flv.CODEC_AAC or flv.CODEC_MP3
    stream_type: int
    asc: AudioSpecificConfig | None = None
    #: What of the ADTS header depends only on ``asc`` (see :func:`_adts_fixed`), computed once per configuration.
    adts_fixed: tuple[int, int, int, int] | None = None


def _annexb_param_sets(*groups: tuple[bytes, ...]) -> bytes:
    return b"".join(avc.START_CODE + nal for group in groups for nal in group)


def _mp3_stream_type(frame: bytes | memoryview, flv_rate: int) -> int:
    """MPEG-1 audio (0x03) or MPEG-2/2.5 low-sample-rate audio (0x04), from the frame header when present."""
    if len(frame) >= 2 and frame[0] == 0xFF and frame[1] & 0xE0 == 0xE0:
        return STREAM_TYPE_MPEG1_AUDIO if (frame[1] >> 3) & 3 == 3 else STREAM_TYPE_MPEG2_AUDIO
    return STREAM_TYPE_MPEG1_AUDIO if flv_rate >= 32000 else STREAM_TYPE_MPEG2_AUDIO


# --------------------------------------------------------------------------- muxer


class TSMuxer:
    """FLV tags in, MPEG-TS packets out. See the module docstring for the timing and PSI rules."""

    __slots__ = (
        "pmt_pid",
        "video_pid",
        "audio_pid",
        "program_number",
        "transport_stream_id",
        "audio_max_delay_ms",
        "skipped",
        "_video",
        "_audio",
        "_cc",
        "_pmt_version",
        "_pmt_streams",
        "_psi_dirty",
        "_discontinuity",
        "_abuf",
        "_abuf_size",
        "_abuf_pts",
        "_vheaders",
        "_aheaders",
    )

    def __init__(
        self,
        *,
        pmt_pid: int = PMT_PID,
        video_pid: int = VIDEO_PID,
        audio_pid: int = AUDIO_PID,
        program_number: int = 1,
        transport_stream_id: int = 1,
        audio_max_delay_ms: int = 100,
    ) -> None:
        pids = {PAT_PID, pmt_pid, video_pid, audio_pid}
        if len(pids) != 4 or not all(0x10 <= p < NULL_PID for p in pids - {PAT_PID}):
            raise ValueError("PMT, video and audio PIDs must be distinct and in 0x0010..0x1FFE")
        self.pmt_pid = pmt_pid
        self.video_pid = video_pid
        self.audio_pid = audio_pid
        self.program_number = program_number
        self.transport_stream_id = transport_stream_id
        self.audio_max_delay_ms = audio_max_delay_ms
        #: Frames dropped because TS cannot carry their codec here, or they came before any configuration.
        self.skipped = 0
        self._video: _VideoTrack | None = None
        self._audio: _AudioTrack | None = None
        self._cc: dict[int, int] = {}
        self._pmt_version = 0
        self._pmt_streams: tuple[tuple[int, int], ...] | None = None
        self._psi_dirty = True
        self._discontinuity = False
        self._abuf: list[bytes] = []
        self._abuf_size = 0
        self._abuf_pts = 0
        self._vheaders = _pid_headers(video_pid)
        self._aheaders = _pid_headers(audio_pid)

    # ------------------------------------------------------------------ public API

    @property
    def has_video(self) -> bool:
        return self._video is not None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    @property
    def pcr_pid(self) -> int:
        if self._video is not None:
            return self.video_pid
        if self._audio is not None:
            return self.audio_pid
        return NULL_PID

    @property
    def avc_config(self) -> avc.AVCConfig | None:
        return self._video.avc_config if self._video else None

    @property
    def hevc_config(self) -> avc.HEVCConfig | None:
        return self._video.hevc_config if self._video else None

    @property
    def audio_config(self) -> AudioSpecificConfig | None:
        return self._audio.asc if self._audio else None

    def mux(self, pkt: FLVPacket) -> bytes:
        """TS packets for one media packet (often empty: sequence headers, metadata, buffered audio)."""
        out: list[bytes | bytearray] = []
        kind = pkt.kind
        if kind == flv.VIDEO:
            self._mux_video(out, pkt.timestamp, pkt.payload)
        elif kind == flv.AUDIO:
            self._mux_audio(out, pkt.timestamp, pkt.payload)
        return b"".join(out) if out else b""

    def mux_into(self, pkt: FLVPacket, out: list[bytes | bytearray]) -> int:
        """:meth:`mux`, with the TS bytes appended to ``out`` as pieces (whole packets once joined) instead of
        joined; returns how many bytes were appended.

        For a caller that gathers many packets' output anyway (the HLS segmenter, which hands out its open
        segment as pieces written with one ``writev``): each tag's join would be one more copy of the stream.
        The pieces are never changed after they are appended.
        """
        kind = pkt.kind
        if kind == flv.VIDEO:
            return self._mux_video(out, pkt.timestamp, pkt.payload)
        if kind == flv.AUDIO:
            return self._mux_audio(out, pkt.timestamp, pkt.payload)
        return 0

    def mux_tag(self, kind: int, timestamp: int, payload: bytes | bytearray | memoryview) -> bytes:
        out: list[bytes | bytearray] = []
        if kind == flv.VIDEO:
            self._mux_video(out, timestamp, payload)
        elif kind == flv.AUDIO:
            self._mux_audio(out, timestamp, payload)
        return b"".join(out) if out else b""

    def psi(self, advance: bool = True) -> bytes:
        """PAT + PMT (two packets).

        ``advance=False`` leaves the continuity counters alone and reuses the last ones sent, so the bytes
        can be given to a viewer joining a shared stream: for it they are the first packets of those PIDs,
        and the next shared PAT/PMT still continues its counters without a gap.
        """
        streams = self._streams()
        if streams != self._pmt_streams:
            if self._pmt_streams is not None:
                self._pmt_version = (self._pmt_version + 1) & 0x1F
            self._pmt_streams = streams
        if advance:
            self._psi_dirty = False
        pat = _section(
            0x00,
            self.transport_stream_id,
            0,
            bytes((self.program_number >> 8, self.program_number & 0xFF, 0xE0 | self.pmt_pid >> 8, self.pmt_pid & 0xFF)),
        )
        pcr_pid = self.pcr_pid
        body = bytearray((0xE0 | pcr_pid >> 8, pcr_pid & 0xFF, 0xF0, 0x00))
        for stream_type, pid in streams:
            body += bytes((stream_type, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, 0x00))
        pmt = _section(0x02, self.program_number, self._pmt_version, bytes(body))
        return self._psi_packet(PAT_PID, pat, advance) + self._psi_packet(self.pmt_pid, pmt, advance)

    def flush(self) -> bytes:
        """Write out buffered audio; call before closing a segment or a stream."""
        if not self._abuf:
            return b""
        out: list[bytes | bytearray] = []
        self._flush_audio(out)
        return b"".join(out)

    def discontinuity(self) -> bytes:
        """A new publisher's timeline follows: flush, then flag the next PCR as a time-base discontinuity.

        Codec configurations are kept (a republish sends its own sequence headers, which replace them);
        continuity counters go on, so only the PCR needs flagging.
        """
        out = self.flush()
        self._discontinuity = True
        return out

    def reset_codecs(self) -> bytes:
        """Forget tracks and configurations (the publisher left); returns the flushed audio."""
        out = self.flush()
        self._video = None
        self._audio = None
        self._psi_dirty = True
        return out

    # ------------------------------------------------------------------ video

    def _mux_video(self, out: list[bytes | bytearray], timestamp: int, payload: bytes | bytearray | memoryview) -> int:
        # Fast path for the tag nearly every publisher sends 30 times a second: a legacy AVC/HEVC coded frame
        # (no ExHeader, frame type 1..4, AVCPacketType 1). What parse_video would say about it is all in the
        # first five bytes, so the VideoInfo it builds is skipped.
        if len(payload) > 5 and payload[1] == flv.PACKET_CODED_FRAMES:
            b0 = payload[0]
            codec_id = b0 & 0x8F
            if (codec_id == flv.VIDEO_CODEC_AVC or codec_id == flv.VIDEO_CODEC_HEVC) and 0x10 <= b0 & 0x70 <= 0x40:
                return self._video_frame(
                    out,
                    flv.CODEC_AVC if codec_id == flv.VIDEO_CODEC_AVC else flv.CODEC_HEVC,
                    timestamp,
                    int.from_bytes(payload[2:5], "big", signed=True),
                    memoryview(payload)[5:],
                )
        info = flv.parse_video(payload)
        if info.command is not None or info.packet_type == flv.PACKET_METADATA or info.sequence_end:
            return 0
        codec = info.codec
        if info.multitrack or codec not in (flv.CODEC_AVC, flv.CODEC_HEVC):
            self.skipped += 1
            return 0
        body = memoryview(payload)[info.data_offset :]
        if info.sequence_header:
            self._video_config(codec, body, info.packet_type)
            return 0
        if info.packet_type not in (flv.PACKET_CODED_FRAMES, flv.PACKET_CODED_FRAMES_X) or not body:
            return 0
        return self._video_frame(out, codec, timestamp, info.composition_time, body)

    def _video_frame(
        self, out: list[bytes | bytearray], codec: str, timestamp: int, composition_time: int, body: memoryview
    ) -> int:
        """One access unit as one PES: AUD, parameter sets before a random access picture, NAL units in Annex B.

        The PES header and every piece of the elementary stream (views into the tag) go into one list
        joined once: no intermediate Annex B copy of the frame.
        """
        track = self._video
        if track is None or track.codec != codec:
            # No sequence header yet: parameter sets may still be in band. Default AVCC length size.
            track = self._set_video(_VideoTrack(codec, STREAM_TYPE_H264 if codec == flv.CODEC_AVC else STREAM_TYPE_HEVC))
        if track.length_size == 4 and len(body) > 4 and int.from_bytes(body[:4], "big") == len(body) - 4:
            nals: Sequence[memoryview] = (body[4:],)  # one NAL unit, as nearly every frame (split_avcc's answer)
        else:
            nals = avc.split_avcc(body, track.length_size)
            if not nals:
                return 0
        # parts[0] is the PES header, filled in once the elementary stream's length is known.
        parts: list[bytes | memoryview] = [b""]
        size = 0
        random_access = has_ps = False
        start = avc.START_CODE
        if codec == flv.CODEC_AVC:
            aud = _AUD_H264
            for nal in nals:
                t = nal[0] & 0x1F
                if t == avc.NAL_AUD:
                    continue  # ours is first, where the standard wants it
                if t == avc.NAL_IDR:
                    random_access = True
                elif t == avc.NAL_SPS:
                    has_ps = True
                parts += (start, nal)
                size += 4 + len(nal)
        else:
            aud = _AUD_HEVC
            for nal in nals:
                t = (nal[0] >> 1) & 0x3F
                if t == avc.HEVC_NAL_AUD:
                    continue
                if avc.HEVC_NAL_BLA_W_LP <= t <= avc.HEVC_NAL_RSV_IRAP_23:
                    random_access = True
                elif t == avc.HEVC_NAL_SPS:
                    has_ps = True
                parts += (start, nal)
                size += 4 + len(nal)
        if random_access and not has_ps:
            parts[1:1] = (aud, track.param_sets)
            size += len(aud) + len(track.param_sets)
        else:
            parts.insert(1, aud)
            size += len(aud)
        dts = timestamp * CLOCK_KHZ
        pts = max(dts, (timestamp + composition_time) * CLOCK_KHZ)
        n = self._flush_audio(out) if self._abuf else 0
        return n + self._write_pes(out, self.video_pid, STREAM_ID_VIDEO, pts, dts, parts, size, random_access, False)

    def _video_config(self, codec: str, body: memoryview, packet_type: int) -> None:
        if packet_type == flv.PACKET_MPEG2TS_SEQUENCE_START:
            self.skipped += 1  # an MPEG-2 TS descriptor, not a decoder configuration record
            return
        if codec == flv.CODEC_AVC:
            cfg = avc.parse_avc_config(body)
            self._set_video(
                _VideoTrack(codec, STREAM_TYPE_H264, cfg.nalu_length_size, _annexb_param_sets(cfg.sps, cfg.pps), cfg)
            )
        else:
            hcfg = avc.parse_hevc_config(body)
            self._set_video(
                _VideoTrack(
                    codec,
                    STREAM_TYPE_HEVC,
                    hcfg.nalu_length_size,
                    _annexb_param_sets(hcfg.vps, hcfg.sps, hcfg.pps),
                    None,
                    hcfg,
                )
            )

    def _set_video(self, track: _VideoTrack) -> _VideoTrack:
        old = self._video
        if old is None or old.stream_type != track.stream_type:
            self._psi_dirty = True
        self._video = track
        return track

    # ------------------------------------------------------------------ audio

    def _mux_audio(self, out: list[bytes | bytearray], timestamp: int, payload: bytes | bytearray | memoryview) -> int:
        # Fast path for a legacy AAC raw frame (SoundFormat 10, AACPacketType 1): parse_audio would accept it
        # whatever the other header bits say, so its AudioInfo is skipped.
        if len(payload) > 2 and payload[1] == flv.AUDIO_PACKET_CODED_FRAMES and payload[0] >> 4 == flv.SOUND_AAC:
            return self._aac_frame(out, timestamp, memoryview(payload)[2:])
        info = flv.parse_audio(payload)
        codec = info.codec
        if info.multitrack or codec not in (flv.CODEC_AAC, flv.CODEC_MP3):
            self.skipped += 1
            return 0
        body = memoryview(payload)[info.data_offset :]
        if codec == flv.CODEC_AAC:
            if info.sequence_header:
                asc = parse_asc(body)
                self._set_audio(_AudioTrack(codec, STREAM_TYPE_AAC, asc, _adts_fixed(asc)))
                return 0
            if info.packet_type != flv.AUDIO_PACKET_CODED_FRAMES or not body:
                return 0
            return self._aac_frame(out, timestamp, body)
        if info.packet_type != flv.AUDIO_PACKET_CODED_FRAMES or not body:
            return 0
        if len(body) > _MAX_AUDIO_PES:  # (ADTS frames are at most 8 KiB)
            raise TSError(f"audio frame of {len(body)} bytes does not fit a PES packet")
        stream_type = _mp3_stream_type(body, info.sample_rate)
        if self._audio is None or self._audio.stream_type != stream_type:
            self._set_audio(_AudioTrack(codec, stream_type))
        return self._buffer_audio(out, timestamp, bytes(body))

    def _aac_frame(self, out: list[bytes | bytearray], timestamp: int, body: memoryview) -> int:
        """A raw AAC frame behind its ADTS header, from the fixed part computed with the configuration."""
        track = self._audio
        if track is None or track.asc is None or track.codec != flv.CODEC_AAC:
            self.skipped += 1  # raw AAC cannot be framed without its AudioSpecificConfig
            return 0
        size = len(body)
        length = size + ADTS_HEADER_SIZE
        fixed = track.adts_fixed
        if fixed is None or length > ADTS_MAX_FRAME:
            header = adts_header(track.asc, size)  # raises the AACError saying why it cannot be framed
        else:
            b0, b1, b2, b3 = fixed
            header = bytes((b0, b1, b2, b3 | length >> 11, (length >> 3) & 0xFF, (length & 7) << 5 | 0x1F, 0xFC))
        return self._buffer_audio(out, timestamp, header + body)

    def _buffer_audio(self, out: list[bytes | bytearray], timestamp: int, frame: bytes) -> int:
        """Gather ``frame`` into the audio PES being built; the PES written out to make room, if any, goes to
        ``out`` (returns its size)."""
        pts = timestamp * CLOCK_KHZ
        n = 0
        if self._abuf:
            if (
                pts - self._abuf_pts >= self.audio_max_delay_ms * CLOCK_KHZ
                or pts < self._abuf_pts
                or self._abuf_size + len(frame) > _MAX_AUDIO_PES
            ):
                n = self._flush_audio(out)
                self._abuf_pts = pts
        else:
            self._abuf_pts = pts
        self._abuf.append(frame)
        self._abuf_size += len(frame)
        if self.audio_max_delay_ms <= 0:
            n += self._flush_audio(out)
        return n

    def _set_audio(self, track: _AudioTrack) -> None:
        old = self._audio
        if old is None or old.stream_type != track.stream_type:
            self._psi_dirty = True
        self._audio = track

    def _flush_audio(self, out: list[bytes | bytearray]) -> int:
        """Write the buffered audio frames as one PES, appending its pieces to ``out``; returns its size."""
        parts: list[bytes | memoryview] = [b""]  # the PES header's place
        parts += self._abuf
        size = self._abuf_size
        self._abuf.clear()
        self._abuf_size = 0
        # Pure audio carries the PCR, and every PES of it is a random access point.
        return self._write_pes(
            out, self.audio_pid, STREAM_ID_AUDIO, self._abuf_pts, self._abuf_pts, parts, size, self._video is None, True
        )

    # ------------------------------------------------------------------ packetizing

    def _streams(self) -> tuple[tuple[int, int], ...]:
        streams: list[tuple[int, int]] = []
        if self._video is not None:
            streams.append((self._video.stream_type, self.video_pid))
        if self._audio is not None:
            streams.append((self._audio.stream_type, self.audio_pid))
        return tuple(streams)

    def _psi_packet(self, pid: int, section: bytes, advance: bool) -> bytes:
        cc = self._cc.get(pid, 0)
        if not advance:
            cc = (cc - 1) & 0xF
        else:
            self._cc[pid] = (cc + 1) & 0xF
        head = bytes((SYNC_BYTE, 0x40 | pid >> 8, pid & 0xFF, 0x10 | cc, 0))  # payload start, pointer 0
        return head + section + b"\xff" * (PACKET_SIZE - 5 - len(section))

    def _write_pes(
        self,
        out: list[bytes | bytearray],
        pid: int,
        stream_id: int,
        pts: int,
        dts: int,
        parts: list[bytes | memoryview],
        es_size: int,
        random_access: bool,
        bounded: bool,
    ) -> int:
        """One PES of ``parts[1:]`` (``es_size`` bytes) as transport packets appended to ``out``, after PAT/PMT
        when the track set changed; returns the number of bytes appended.

        ``parts[0]`` is overwritten with the first packet's TS header and adaptation field followed by the
        PES header, so one join gives the first packet and the rest of the PES contiguously (see
        :meth:`_packetize`). The fixed-size fields are built as integers and converted once: this runs for
        every video frame and every audio PES, and the small objects added up.
        """
        psi = 0
        if self._psi_dirty:
            out.append(self.psi())
            psi = 2 * PACKET_SIZE
        if pts != dts:
            pes_header_size = 19
            length = 13 + es_size  # the PES_packet_length counts from the flags byte: 3 + PTS + DTS
        else:
            pes_header_size = 14
            length = 8 + es_size
        if length > 0xFFFF:
            if bounded:  # cannot happen: the audio buffer is flushed before it grows this large
                raise AssertionError("audio PES too large")
            length = 0  # unbounded: allowed for video only
        if pes_header_size == 19:
            pes_header = (
                (0x000001 << 128 | stream_id << 120 | length << 104 | 0x84C00A << 80 | _PTS_BEFORE_DTS << 40 | _DTS)
                | ((pts >> 30 & 7) << 33 | (pts >> 15 & 0x7FFF) << 17 | (pts & 0x7FFF) << 1) << 40
                | (dts >> 30 & 7) << 33 | (dts >> 15 & 0x7FFF) << 17 | (dts & 0x7FFF) << 1
            ).to_bytes(19, "big")  # (the two timestamp fields, see _MARKERS)
        else:
            pes_header = (
                0x000001 << 88 | stream_id << 80 | length << 64 | 0x848005 << 40 | _PTS_ONLY
                | (pts >> 30 & 7) << 33 | (pts >> 15 & 0x7FFF) << 17 | (pts & 0x7FFF) << 1
            ).to_bytes(14, "big")
        # The first packet's adaptation field: PCR (with the discontinuity and random access flags) on the
        # PCR PID (pcr_pid without the property's cost: video's, or audio's when there is no video), else only
        # the random access flag, else none; then stuffing if the PES fills less than the packet.
        if pid == self.video_pid or self._video is None:
            flags = 0x50 if random_access else 0x10
            if self._discontinuity:
                flags |= 0x80
                self._discontinuity = False
            af = (flags << 48 | (dts & MASK_33) << 15 | 0x7E00).to_bytes(7, "big")  # PCR extension 0
        elif random_access:
            af = b"\x40"
        else:
            af = b""
        headers = self._vheaders if pid == self.video_pid else self._aheaders
        cc = self._cc.get(pid, 0)
        room = _PAYLOAD - 1 - len(af) if af else _PAYLOAD
        stuff = room - pes_header_size - es_size
        if stuff > 0:  # the whole PES fits in the first packet
            if af:
                prefix = headers.start_af[cc] + bytes((len(af) + stuff,)) + af + b"\xff" * stuff
            else:
                prefix = headers.start_af[cc] + _STUFFING[stuff]
        elif af:
            prefix = headers.start_af[cc] + bytes((len(af),)) + af
        else:
            prefix = headers.start[cc]
        parts[0] = prefix + pes_header
        return psi + self._packetize(out, pid, headers, (cc + 1) & 0xF, b"".join(parts))

    def _packetize(self, out: list[bytes | bytearray], pid: int, headers: _PidHeaders, cc: int, buf: bytes) -> int:
        """Split ``buf`` (the first transport packet, then the rest of the PES) into packets appended to
        ``out`` for one join; ``cc`` is the counter of the second packet. Returns the bytes appended.

        No Python-level work per packet: one ``struct`` call cuts the first packet and the 184-byte payloads
        of the full packets after it, one join puts the same 4-byte header (counter 0) between them, and one
        extended-slice assignment writes the right counters into the fourth byte of those headers. Only the
        last packet (stuffing in an adaptation field) is built on its own.
        """
        n = len(buf)
        if n <= PACKET_SIZE:  # one packet, stuffed to size by its adaptation field
            out.append(buf)
            self._cc[pid] = cc
            return PACKET_SIZE
        full, tail = divmod(n - PACKET_SIZE, _PAYLOAD)
        if full:
            packets = headers.between.join(_cut_packets(buf, full))
            if full <= _MAX_RUN:
                packets[PACKET_SIZE + 3 :: PACKET_SIZE] = _COUNTERS[cc : cc + full]
            else:
                packets[PACKET_SIZE + 3 :: PACKET_SIZE] = (_COUNTERS[cc : cc + 16] * (full // 16 + 1))[:full]
            out.append(packets)
            cc = (cc + full) & 0xF
        else:
            out.append(buf[:PACKET_SIZE])
        if tail:
            out += (headers.af[cc], _STUFFING[_PAYLOAD - tail], buf[n - tail :])
            cc = (cc + 1) & 0xF
            full += 1
        self._cc[pid] = cc
        return (full + 1) * PACKET_SIZE


def _adts_fixed(asc: AudioSpecificConfig) -> tuple[int, int, int, int] | None:
    """The parts of an ADTS header that only depend on the configuration: bytes 0-2 and the channel bits of
    byte 3. ``None`` if the configuration cannot be framed in ADTS (every frame then raises)."""
    try:
        header = adts_header(asc, 0)
    except AACError:
        return None
    return header[0], header[1], header[2], header[3] & 0xC0


# --------------------------------------------------------------------------- packet tables

#: Adaptation field that fills ``n`` bytes of a last packet: one byte of length 0, or length, flags 0, 0xFF...
_STUFFING: Final = tuple(
    b"" if n == 0 else b"\x00" if n == 1 else bytes((n - 1, 0)) + b"\xff" * (n - 2) for n in range(_PAYLOAD + 1)
)

#: Packets cut per struct call: the first (188 bytes) and up to _BLOCK payloads (184) after it; longer PES
#: go on in runs of _BLOCK payloads.
_BLOCK: Final = 64
_FIRST_AND: Final = tuple(
    struct.Struct(f"{PACKET_SIZE}s" + f"{_PAYLOAD}s" * k).unpack_from for k in range(_BLOCK + 1)
)
_PAYLOADS: Final = tuple(struct.Struct(f"{_PAYLOAD}s" * k).unpack_from for k in range(_BLOCK + 1))
#: Byte 3 of consecutive payload-only headers (adaptation field control 01, then the counter), for runs
#: starting at any counter: ``_COUNTERS[cc : cc + k]``. Covers a PES of 1.5 MB; longer ones repeat the cycle.
_MAX_RUN: Final = 8192
_COUNTERS: Final = bytes(0x10 | i & 0xF for i in range(_MAX_RUN + 16))


def _cut_packets(buf: bytes, full: int) -> Sequence[bytes]:
    """The first packet of ``buf`` and the ``full`` 184-byte payloads after it, cut in C by struct."""
    if full <= _BLOCK:
        return _FIRST_AND[full](buf)
    chunks = list(_FIRST_AND[_BLOCK](buf))
    step = _BLOCK * _PAYLOAD
    offset = PACKET_SIZE + step
    blocks, rest = divmod(full - _BLOCK, _BLOCK)
    payloads = _PAYLOADS[_BLOCK]
    for off in range(offset, offset + blocks * step, step):
        chunks += payloads(buf, off)
    chunks += _PAYLOADS[rest](buf, offset + blocks * step)
    return chunks


@dataclass(frozen=True, slots=True)
class _PidHeaders:
    """The transport packet headers one PID needs, indexed by continuity counter."""

    #: Payload unit start, payload only (a PES that fills its first packet without an adaptation field).
    start: tuple[bytes, ...]
    #: Payload unit start with an adaptation field (PCR, random access, stuffing).
    start_af: tuple[bytes, ...]
    #: Continuation with an adaptation field: the stuffed last packet.
    af: tuple[bytes, ...]
    #: Continuation, payload only, counter 0: the separator of the full packets (counters written after).
    #: A bytearray so that the join makes a bytearray; shared by all muxers, never mutated.
    between: bytearray


@functools.cache
def _pid_headers(pid: int) -> _PidHeaders:
    """Shared by all muxers (a handful of PIDs in practice: video, audio)."""
    hi, lo = pid >> 8, pid & 0xFF
    # Byte 1 carries PUSI (0x40); byte 3 the adaptation field control (0x10 payload only, 0x30 both) and the CC.
    start = tuple(bytes((SYNC_BYTE, 0x40 | hi, lo, 0x10 | cc)) for cc in range(16))
    start_af = tuple(bytes((SYNC_BYTE, 0x40 | hi, lo, 0x30 | cc)) for cc in range(16))
    af = tuple(bytes((SYNC_BYTE, hi, lo, 0x30 | cc)) for cc in range(16))
    return _PidHeaders(start, start_af, af, bytearray((SYNC_BYTE, hi, lo, 0x10)))
