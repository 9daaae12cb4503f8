"""FLV container codec plus inspection of audio/video tag bodies (legacy and Enhanced RTMP).

RTMP audio/video message bodies are byte-identical to FLV tag bodies, so the ``parse_*`` and
``is_*`` helpers here serve the RTMP side as well as HTTP-FLV. Enhanced RTMP (veovera.org,
v1/v2) is recognised by the IsExHeader bit; the legacy HEVC codec id 12 used by SRS and
ffmpeg forks is accepted too.

Bad input raises :class:`~livesrv.codec.errors.FLVError`, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from livesrv.codec.aac import AACError, AudioSpecificConfig, parse_asc
from livesrv.codec.errors import FLVError

__all__ = [
    "AUDIO",
    "VIDEO",
    "SCRIPT",
    "AudioInfo",
    "FLVDecoder",
    "FLVHeader",
    "FLVTag",
    "VideoInfo",
    "encode_tag",
    "encode_tag_parts",
    "file_header",
    "is_audio_sequence_header",
    "is_keyframe",
    "is_sequence_header",
    "parse_aac_config",
    "parse_audio",
    "parse_video",
]

# --------------------------------------------------------------------------- constants

AUDIO: Final = 8
VIDEO: Final = 9
SCRIPT: Final = 18

HEADER_SIZE: Final = 9
TAG_HEADER_SIZE: Final = 11
DEFAULT_MAX_TAG_SIZE: Final = 16 * 1024 * 1024

# Video frame types.
FRAME_KEY: Final = 1
FRAME_INTER: Final = 2
FRAME_DISPOSABLE_INTER: Final = 3
FRAME_GENERATED_KEY: Final = 4
FRAME_COMMAND: Final = 5

# Legacy video codec ids (low nibble of byte 0 when IsExHeader is clear).
VIDEO_CODEC_AVC: Final = 7
VIDEO_CODEC_HEVC: Final = 12  # Not in Adobe's spec: the SRS / ffmpeg-fork extension.

# Video packet types: Enhanced RTMP VideoPacketType; legacy AVCPacketType uses the same 0/1/2.
PACKET_SEQUENCE_START: Final = 0
PACKET_CODED_FRAMES: Final = 1
PACKET_SEQUENCE_END: Final = 2
PACKET_CODED_FRAMES_X: Final = 3
PACKET_METADATA: Final = 4
PACKET_MPEG2TS_SEQUENCE_START: Final = 5
PACKET_MULTITRACK: Final = 6
PACKET_MODEX: Final = 7
#: ``packet_type`` of a legacy command frame, which carries no packet-type field at all.
PACKET_NONE: Final = -1

# Enhanced audio packet types (AudioPacketType).
AUDIO_PACKET_SEQUENCE_START: Final = 0
AUDIO_PACKET_CODED_FRAMES: Final = 1
AUDIO_PACKET_SEQUENCE_END: Final = 2
AUDIO_PACKET_MULTICHANNEL_CONFIG: Final = 4
AUDIO_PACKET_MULTITRACK: Final = 5
AUDIO_PACKET_MODEX: Final = 7

# AvMultitrackType.
MULTITRACK_ONE_TRACK: Final = 0
MULTITRACK_MANY_TRACKS: Final = 1
MULTITRACK_MANY_TRACKS_MANY_CODECS: Final = 2

# Sound formats (high nibble of the audio tag's byte 0).
SOUND_PCM: Final = 0
SOUND_ADPCM: Final = 1
SOUND_MP3: Final = 2
SOUND_PCM_LE: Final = 3
SOUND_NELLYMOSER_16K: Final = 4
SOUND_NELLYMOSER_8K: Final = 5
SOUND_NELLYMOSER: Final = 6
SOUND_G711_ALAW: Final = 7
SOUND_G711_MULAW: Final = 8
SOUND_EX_HEADER: Final = 9
SOUND_AAC: Final = 10
SOUND_SPEEX: Final = 11
SOUND_MP3_8K: Final = 14
SOUND_NATIVE: Final = 15

# Codec names used in VideoInfo.codec / AudioInfo.codec. Unknown legacy ids become "id<N>",
# unknown Enhanced RTMP FourCCs are reported verbatim (e.g. "xyz1").
CODEC_AVC: Final = "avc"
CODEC_HEVC: Final = "hevc"
CODEC_AV1: Final = "av1"
CODEC_VP9: Final = "vp9"
CODEC_VP8: Final = "vp8"
CODEC_AAC: Final = "aac"
CODEC_MP3: Final = "mp3"
CODEC_OPUS: Final = "opus"
CODEC_FLAC: Final = "flac"
CODEC_AC3: Final = "ac3"
CODEC_EAC3: Final = "eac3"
#: Codec of an Enhanced RTMP command frame, which names no FourCC.
CODEC_NONE: Final = ""

_LEGACY_VIDEO_CODECS: Final[dict[int, str]] = {
    2: "h263",
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
    VIDEO_CODEC_AVC: CODEC_AVC,
    VIDEO_CODEC_HEVC: CODEC_HEVC,
}
_VIDEO_FOURCCS: Final[dict[bytes, str]] = {
    b"avc1": CODEC_AVC,
    b"hvc1": CODEC_HEVC,
    b"av01": CODEC_AV1,
    b"vp09": CODEC_VP9,
    b"vp08": CODEC_VP8,
}
_CTS_FOURCCS: Final = frozenset((b"avc1", b"hvc1"))  # CodedFrames carry an SI24 composition time.

_LEGACY_AUDIO_CODECS: Final[dict[int, str]] = {
    SOUND_PCM: "pcm",
    SOUND_ADPCM: "adpcm",
    SOUND_MP3: CODEC_MP3,
    SOUND_PCM_LE: "pcm_le",
    SOUND_NELLYMOSER_16K: "nellymoser",
    SOUND_NELLYMOSER_8K: "nellymoser",
    SOUND_NELLYMOSER: "nellymoser",
    SOUND_G711_ALAW: "alaw",
    SOUND_G711_MULAW: "mulaw",
    SOUND_AAC: CODEC_AAC,
    SOUND_SPEEX: "speex",
    SOUND_MP3_8K: CODEC_MP3,
    SOUND_NATIVE: "native",
}
_AUDIO_FOURCCS: Final[dict[bytes, str]] = {
    b"mp4a": CODEC_AAC,
    b"Opus": CODEC_OPUS,
    b".mp3": CODEC_MP3,
    b"fLaC": CODEC_FLAC,
    b"ac-3": CODEC_AC3,
    b"ec-3": CODEC_EAC3,
}
_SOUND_RATES: Final = (5512, 11025, 22050, 44100)
# Formats whose real rate/layout is fixed by the codec, whatever the header bits claim.
_FIXED_AUDIO: Final[dict[int, tuple[int, int]]] = {
    SOUND_NELLYMOSER_16K: (16000, 1),
    SOUND_NELLYMOSER_8K: (8000, 1),
    SOUND_G711_ALAW: (8000, 1),
    SOUND_G711_MULAW: (8000, 1),
    SOUND_SPEEX: (16000, 1),
    SOUND_MP3_8K: (8000, 0),  # channels 0: take them from the header bits
}

_TAG_HEAD = struct.Struct(">IIHB")
_U32 = struct.Struct(">I")

# --------------------------------------------------------------------------- container


def file_header(has_audio: bool = True, has_video: bool = True) -> bytes:
    """The 9-byte FLV header followed by PreviousTagSize0, i.e. everything before the first tag."""
    flags = (4 if has_audio else 0) | (1 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09\x00\x00\x00\x00"


def encode_tag(tag_type: int, timestamp: int, payload: bytes, stream_id: int = 0) -> bytes:
    """One complete tag including its trailing PreviousTagSize.

    Timestamps are taken modulo 2**32 (RTMP timestamps wrap); the upper byte goes to
    TimestampExtended as the FLV spec requires.
    """
    size = len(payload)
    if size > 0xFFFFFF:
        raise ValueError(f"FLV tag payload too large: {size} bytes")
    ts = timestamp & 0xFFFFFFFF
    return b"".join(
        (
            _TAG_HEAD.pack(
                (tag_type & 0xFF) << 24 | size,
                (ts & 0xFFFFFF) << 8 | ts >> 24,
                (stream_id >> 8) & 0xFFFF,
                stream_id & 0xFF,
            ),
            payload,
            _U32.pack(size + TAG_HEADER_SIZE),
        )
    )


def encode_tag_parts(tag_type: int, timestamp: int, payload_size: int, stream_id: int = 0) -> tuple[bytes, bytes]:
    """The bytes that go before and after a tag's payload.

    Lets a writer hand ``(head, payload, tail)`` to ``writelines`` without copying a large
    payload into a joined tag.
    """
    if not 0 <= payload_size <= 0xFFFFFF:
        raise ValueError(f"FLV tag payload size out of range: {payload_size}")
    ts = timestamp & 0xFFFFFFFF
    head = _TAG_HEAD.pack(
        (tag_type & 0xFF) << 24 | payload_size,
        (ts & 0xFFFFFF) << 8 | ts >> 24,
        (stream_id >> 8) & 0xFFFF,
        stream_id & 0xFF,
    )
    return head, _U32.pack(payload_size + TAG_HEADER_SIZE)


@dataclass(frozen=True, slots=True)
class FLVHeader:
    version: int
    has_audio: bool
    has_video: bool
    data_offset: int


@dataclass(frozen=True, slots=True)
class FLVTag:
    """A tag as found in the file.

    ``tag_type`` is the whole first header byte, so a tag with the filter (encryption) bit or
    reserved bits set does not masquerade as a plain audio/video/script tag.
    """

    tag_type: int
    timestamp: int
    payload: bytes
    stream_id: int = 0


_ST_HEADER: Final = 0
_ST_SKIP: Final = 1
_ST_PREV_SIZE: Final = 2
_ST_TAG: Final = 3
_ST_FAILED: Final = 4


class FLVDecoder:
    """Incremental FLV demuxer: feed bytes as they arrive, get headers and tags back in order.

    Input is appended to one buffer and only parsed once a whole unit (header, tag, size
    field) is available, so a large tag trickling in through small reads costs linear time.
    PreviousTagSize mismatches are counted in :attr:`prev_tag_size_mismatches` rather than
    raised, because many real files and muxers get them wrong. With ``expect_header=False``
    the input starts directly at a tag (no file header, no PreviousTagSize0), which suits
    bare tag streams.
    """

    __slots__ = ("max_tag_size", "prev_tag_size_mismatches", "_buf", "_state", "_skip", "_last_tag_size")

    def __init__(self, max_tag_size: int = DEFAULT_MAX_TAG_SIZE, *, expect_header: bool = True) -> None:
        self.max_tag_size = max_tag_size
        self.prev_tag_size_mismatches = 0
        self._buf = bytearray()
        self._state = _ST_HEADER if expect_header else _ST_TAG
        self._skip = 0
        self._last_tag_size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[FLVHeader | FLVTag]:
        if self._state == _ST_FAILED:
            raise FLVError("FLV decoder already failed on earlier input")
        buf = self._buf
        buf += data
        events: list[FLVHeader | FLVTag] = []
        try:
            consumed = self._parse(buf, events)
        except FLVError:
            self._state = _ST_FAILED
            buf.clear()
            raise
        if consumed:
            # At most once per feed, and only the unparsed tail is moved.
            del buf[:consumed]
        return events

    def _parse(self, buf: bytearray, events: list[FLVHeader | FLVTag]) -> int:
        end = len(buf)
        pos = 0
        state = self._state
        max_tag_size = self.max_tag_size
        with memoryview(buf) as mv:
            while True:
                avail = end - pos
                if state == _ST_TAG:
                    if avail < TAG_HEADER_SIZE:
                        break
                    word0, word1, sid_hi, sid_lo = _TAG_HEAD.unpack_from(mv, pos)
                    size = word0 & 0xFFFFFF
                    if size > max_tag_size:
                        raise FLVError(f"FLV tag of {size} bytes exceeds the {max_tag_size}-byte limit")
                    if avail < TAG_HEADER_SIZE + size:
                        break
                    start = pos + TAG_HEADER_SIZE
                    events.append(
                        FLVTag(
                            word0 >> 24,
                            (word1 >> 8) | (word1 & 0xFF) << 24,
                            bytes(mv[start : start + size]),
                            sid_hi << 8 | sid_lo,
                        )
                    )
                    pos = start + size
                    self._last_tag_size = TAG_HEADER_SIZE + size
                    state = _ST_PREV_SIZE
                elif state == _ST_PREV_SIZE:
                    if avail < 4:
                        break
                    if _U32.unpack_from(mv, pos)[0] != self._last_tag_size:
                        self.prev_tag_size_mismatches += 1
                    pos += 4
                    state = _ST_TAG
                elif state == _ST_HEADER:
                    if avail < HEADER_SIZE:
                        if bytes(mv[pos : pos + min(avail, 3)]) != b"FLV"[:avail]:
                            raise FLVError("bad FLV signature")
                        break
                    if mv[pos : pos + 3] != b"FLV":
                        raise FLVError("bad FLV signature")
                    version = mv[pos + 3]
                    flags = mv[pos + 4]
                    data_offset = _U32.unpack_from(mv, pos + 5)[0]
                    if data_offset < HEADER_SIZE:
                        raise FLVError(f"FLV header DataOffset {data_offset} is smaller than the header")
                    events.append(FLVHeader(version, bool(flags & 4), bool(flags & 1), data_offset))
                    pos += HEADER_SIZE
                    self._skip = data_offset - HEADER_SIZE
                    self._last_tag_size = 0
                    state = _ST_SKIP
                else:  # _ST_SKIP: header padding announced by DataOffset
                    n = min(avail, self._skip)
                    pos += n
                    self._skip -= n
                    if self._skip:
                        break
                    state = _ST_PREV_SIZE
        self._state = state
        return pos


# --------------------------------------------------------------------------- video


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video tag body says about itself.

    ``packet_type`` is the AVCPacketType (legacy AVC/HEVC), the Enhanced RTMP VideoPacketType
    after ModEx/Multitrack unwrapping, ``PACKET_CODED_FRAMES`` for other legacy codecs and
    ``PACKET_NONE`` for legacy command frames. For multitrack messages the first track is
    described. ``data_offset`` is where the codec data (decoder config record, NAL units,
    OBUs, AMF metadata...) begins.
    """

    codec: str
    frame_type: int
    keyframe: bool
    sequence_header: bool
    sequence_end: bool
    enhanced: bool
    packet_type: int
    composition_time: int
    data_offset: int
    fourcc: str = ""
    command: int | None = None
    multitrack: bool = False


def _truncated(what: str) -> FLVError:
    return FLVError(f"truncated {what}")


def parse_video(payload: bytes | bytearray | memoryview) -> VideoInfo:
    n = len(payload)
    if n == 0:
        raise FLVError("empty video tag")
    b0 = payload[0]
    frame_type = (b0 >> 4) & 7
    if b0 & 0x80:
        return _parse_ex_video(payload, n, b0, frame_type)

    codec_id = b0 & 0x0F
    codec = _LEGACY_VIDEO_CODECS.get(codec_id) or f"id{codec_id}"
    if frame_type == FRAME_COMMAND:
        if n < 2:
            raise _truncated("video command frame")
        return VideoInfo(codec, frame_type, False, False, False, False, PACKET_NONE, 0, 2, "", payload[1])
    if not FRAME_KEY <= frame_type <= FRAME_GENERATED_KEY:
        raise FLVError(f"reserved video frame type {frame_type}")
    keyframe = frame_type == FRAME_KEY
    if codec_id != VIDEO_CODEC_AVC and codec_id != VIDEO_CODEC_HEVC:
        return VideoInfo(codec, frame_type, keyframe, False, False, False, PACKET_CODED_FRAMES, 0, 1)
    if n < 5:
        raise _truncated(f"{codec} video tag header")
    packet_type = payload[1]
    if packet_type > PACKET_SEQUENCE_END:
        raise FLVError(f"invalid AVCPacketType {packet_type}")
    cts = int.from_bytes(payload[2:5], "big", signed=True) if packet_type == PACKET_CODED_FRAMES else 0
    return VideoInfo(
        codec,
        frame_type,
        keyframe,
        packet_type == PACKET_SEQUENCE_START,
        packet_type == PACKET_SEQUENCE_END,
        False,
        packet_type,
        cts,
        5,
    )


def _skip_modex(payload: bytes | bytearray | memoryview, n: int, pos: int, what: str) -> tuple[int, int]:
    """Skip ModEx blocks starting at ``pos``; returns the real packet type and the next offset.

    The only defined ModEx (TimestampOffsetNano) does not change how the body is parsed, so
    the data is skipped, not interpreted.
    """
    while True:
        if pos >= n:
            raise _truncated(f"{what} ModEx")
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > n:
                raise _truncated(f"{what} ModEx")
            size = (payload[pos] << 8 | payload[pos + 1]) + 1
            pos += 2
        pos += size
        if pos >= n:
            raise _truncated(f"{what} ModEx")
        packet_type = payload[pos] & 0x0F
        pos += 1
        if packet_type != PACKET_MODEX:  # same value (7) for audio and video
            return packet_type, pos


def _parse_ex_video(payload: bytes | bytearray | memoryview, n: int, b0: int, frame_type: int) -> VideoInfo:
    packet_type = b0 & 0x0F
    pos = 1
    if packet_type == PACKET_MODEX:
        packet_type, pos = _skip_modex(payload, n, pos, "video")

    if packet_type != PACKET_METADATA and frame_type == FRAME_COMMAND:
        if pos >= n:
            raise _truncated("video command frame")
        return VideoInfo(
            CODEC_NONE, frame_type, False, False, False, True, packet_type, 0, pos + 1, "", payload[pos]
        )

    multitrack = packet_type == PACKET_MULTITRACK
    if multitrack:
        if pos >= n:
            raise _truncated("video multitrack header")
        b = payload[pos]
        pos += 1
        mt_type = b >> 4
        packet_type = b & 0x0F
        if mt_type > MULTITRACK_MANY_TRACKS_MANY_CODECS:
            raise FLVError(f"reserved AvMultitrackType {mt_type}")
        if packet_type in (PACKET_MULTITRACK, PACKET_MODEX):
            raise FLVError(f"invalid video packet type {packet_type} inside multitrack")
        # Either the FourCC shared by all tracks (header) or, with many codecs, the first track's
        # own FourCC (body): both sit right here, followed by trackId and, unless there is a
        # single track, the UI24 size of the track.
        fourcc_pos = pos
        pos += 5 if mt_type == MULTITRACK_ONE_TRACK else 8
        if pos > n:
            raise _truncated("video multitrack header")
    else:
        fourcc_pos = pos
        pos += 4
        if pos > n:
            raise _truncated("enhanced video header")

    if packet_type > PACKET_MODEX:
        raise FLVError(f"reserved video packet type {packet_type}")
    if packet_type != PACKET_METADATA and not FRAME_KEY <= frame_type <= FRAME_GENERATED_KEY:
        raise FLVError(f"reserved video frame type {frame_type}")

    raw_fourcc = bytes(payload[fourcc_pos : fourcc_pos + 4])
    codec = _VIDEO_FOURCCS.get(raw_fourcc) or raw_fourcc.decode("latin-1")
    cts = 0
    if packet_type == PACKET_CODED_FRAMES and raw_fourcc in _CTS_FOURCCS:
        if pos + 3 > n:
            raise _truncated(f"{codec} coded frames")
        cts = int.from_bytes(payload[pos : pos + 3], "big", signed=True)
        pos += 3
    return VideoInfo(
        codec,
        frame_type,
        frame_type == FRAME_KEY and packet_type != PACKET_METADATA,
        packet_type == PACKET_SEQUENCE_START or packet_type == PACKET_MPEG2TS_SEQUENCE_START,
        packet_type == PACKET_SEQUENCE_END,
        True,
        packet_type,
        cts,
        pos,
        raw_fourcc.decode("latin-1"),
        None,
        multitrack,
    )


def is_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """Fast per-message check: frame type 1, and not an Enhanced RTMP metadata packet."""
    if not payload:
        return False
    b0 = payload[0]
    if b0 & 0x70 != 0x10:
        return False
    if b0 & 0x80 and b0 & 0x0F >= PACKET_METADATA:
        return _slow_video(payload, True)
    return True


def is_sequence_header(payload: bytes | bytearray | memoryview) -> bool:
    """Fast per-message check for a video decoder configuration (AVC/HEVC/AV1/VP9... config)."""
    if len(payload) < 5:  # shortest well-formed: legacy 5-byte header / ExHeader + FourCC
        return False
    b0 = payload[0]
    if b0 & 0x80:
        packet_type = b0 & 0x0F
        if packet_type == PACKET_MULTITRACK or packet_type == PACKET_MODEX:
            return _slow_video(payload, False)
        return (packet_type == 0 or packet_type == 5) and b0 & 0x70 != 0x50
    codec_id = b0 & 0x0F
    return (codec_id == 7 or codec_id == 12) and payload[1] == 0 and b0 & 0xF0 != 0x50


def _slow_video(payload: bytes | bytearray | memoryview, keyframe: bool) -> bool:
    """Full parse for the rare wrapped (ModEx/Multitrack) or metadata packets."""
    try:
        info = parse_video(payload)
    except FLVError:
        return False
    return info.keyframe if keyframe else info.sequence_header


# --------------------------------------------------------------------------- audio


def parse_aac_config(asc: bytes | bytearray | memoryview) -> AudioSpecificConfig:
    """The AudioSpecificConfig of an AAC sequence header (:func:`livesrv.codec.aac.parse_asc`), with a bad one
    reported as the FLV error it is here."""
    try:
        return parse_asc(asc)
    except AACError as exc:
        raise FLVError(f"AAC AudioSpecificConfig: {exc}") from None


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What an audio tag body says about itself.

    ``packet_type`` is the AACPacketType (legacy AAC), the Enhanced RTMP AudioPacketType
    (after ModEx/Multitrack unwrapping), or ``PACKET_CODED_FRAMES`` for other legacy formats.
    ``sample_rate``/``channels`` come from the codec configuration when this is a sequence
    header that carries one (AAC, Opus, FLAC), from the legacy header bits otherwise, and are
    0 when unknown (enhanced coded frames: use the sequence header's values).
    """

    sound_format: int
    codec: str
    sequence_header: bool
    sample_rate: int
    channels: int
    data_offset: int
    packet_type: int = PACKET_CODED_FRAMES
    enhanced: bool = False
    sequence_end: bool = False
    fourcc: str = ""
    multitrack: bool = False


def parse_audio(payload: bytes | bytearray | memoryview) -> AudioInfo:
    n = len(payload)
    if n == 0:
        raise FLVError("empty audio tag")
    b0 = payload[0]
    sound_format = b0 >> 4
    if sound_format == SOUND_EX_HEADER:
        return _parse_ex_audio(payload, n, b0)
    codec = _LEGACY_AUDIO_CODECS.get(sound_format) or f"id{sound_format}"
    sample_rate = _SOUND_RATES[(b0 >> 2) & 3]
    channels = (b0 & 1) + 1
    fixed = _FIXED_AUDIO.get(sound_format)
    if fixed is not None:
        sample_rate = fixed[0]
        channels = fixed[1] or channels
    if sound_format != SOUND_AAC:
        return AudioInfo(sound_format, codec, False, sample_rate, channels, 1)
    if n < 2:
        raise _truncated("AAC audio tag header")
    packet_type = payload[1]
    if packet_type > 1:
        raise FLVError(f"invalid AACPacketType {packet_type}")
    if packet_type == 0:
        # The FLV header bits are fixed at 44.1 kHz stereo for AAC; the ASC has the truth.
        cfg = parse_aac_config(payload[2:])
        sample_rate, channels = cfg.sample_rate, cfg.channels
    return AudioInfo(sound_format, codec, packet_type == 0, sample_rate, channels, 2, packet_type)


def _parse_ex_audio(payload: bytes | bytearray | memoryview, n: int, b0: int) -> AudioInfo:
    packet_type = b0 & 0x0F
    pos = 1
    if packet_type == AUDIO_PACKET_MODEX:
        packet_type, pos = _skip_modex(payload, n, pos, "audio")
    multitrack = packet_type == AUDIO_PACKET_MULTITRACK
    if multitrack:
        if pos >= n:
            raise _truncated("audio multitrack header")
        b = payload[pos]
        pos += 1
        mt_type = b >> 4
        packet_type = b & 0x0F
        if mt_type > MULTITRACK_MANY_TRACKS_MANY_CODECS:
            raise FLVError(f"reserved AvMultitrackType {mt_type}")
        if packet_type in (AUDIO_PACKET_MULTITRACK, AUDIO_PACKET_MODEX):
            raise FLVError(f"invalid audio packet type {packet_type} inside multitrack")
        fourcc_pos = pos  # header FourCC, or the first track's own one: same place (see video)
        pos += 5 if mt_type == MULTITRACK_ONE_TRACK else 8
        if pos > n:
            raise _truncated("audio multitrack header")
    else:
        fourcc_pos = pos
        pos += 4
        if pos > n:
            raise _truncated("enhanced audio header")
    if packet_type not in (0, 1, 2, 4):
        raise FLVError(f"reserved audio packet type {packet_type}")

    raw_fourcc = bytes(payload[fourcc_pos : fourcc_pos + 4])
    codec = _AUDIO_FOURCCS.get(raw_fourcc) or raw_fourcc.decode("latin-1")
    sample_rate = channels = 0
    seq_start = packet_type == AUDIO_PACKET_SEQUENCE_START
    if seq_start:
        sample_rate, channels = _ex_audio_config(codec, payload[pos:])
    return AudioInfo(
        SOUND_EX_HEADER,
        codec,
        seq_start,
        sample_rate,
        channels,
        pos,
        packet_type,
        True,
        packet_type == AUDIO_PACKET_SEQUENCE_END,
        raw_fourcc.decode("latin-1"),
        multitrack,
    )


def _ex_audio_config(codec: str, body: bytes | bytearray | memoryview) -> tuple[int, int]:
    if codec == CODEC_AAC:
        cfg = parse_aac_config(body)
        return cfg.sample_rate, cfg.channels
    if codec == CODEC_OPUS:
        # RFC 7845 ID header; Opus always decodes at 48 kHz whatever the input rate was.
        if len(body) >= 10 and bytes(body[:8]) == b"OpusHead":
            return 48000, body[9]
        return 48000, 0
    if codec == CODEC_FLAC and len(body) >= 21 and bytes(body[:4]) == b"fLaC":
        # "fLaC", 4-byte block header, then STREAMINFO: 10 bytes of sizes, 20-bit rate, 3-bit channels-1.
        v = int.from_bytes(body[18:21], "big")
        return v >> 4, ((v >> 1) & 7) + 1
    return 0, 0


def is_audio_sequence_header(payload: bytes | bytearray | memoryview) -> bool:
    """Fast per-message check for an audio decoder configuration (AAC ASC, Opus/FLAC header...)."""
    if not payload:
        return False
    b0 = payload[0]
    fmt = b0 >> 4
    if fmt == SOUND_AAC:
        return len(payload) > 1 and payload[1] == 0
    if fmt == SOUND_EX_HEADER:
        packet_type = b0 & 0x0F
        if packet_type == AUDIO_PACKET_SEQUENCE_START:
            return True
        if packet_type == AUDIO_PACKET_MULTITRACK or packet_type == AUDIO_PACKET_MODEX:
            try:
                return parse_audio(payload).sequence_header
            except FLVError:
                return False
    return False
