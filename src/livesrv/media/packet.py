"""A media message as the hub carries it: parsed once, serialized once per output format.

Every viewer of a stream receives the *same* ``MediaPacket`` object; the bytes for each output format
(RTMP chunks at a given chunk size and message stream id, an FLV tag) are built the first time a viewer asks
and then shared by all, so per-viewer work is one ``transport.write`` of an existing bytes object.
"""

from __future__ import annotations

from livesrv.codec import flv
from livesrv.codec.rtmp.chunk import encode_message
from livesrv.codec.rtmp.messages import Message, csid_for

AUDIO = flv.AUDIO
VIDEO = flv.VIDEO
DATA = flv.SCRIPT  # metadata (onMetaData), an RTMP data message
_is_keyframe = flv.is_keyframe  # module globals: one lookup per packet, not two
_is_sequence_header = flv.is_sequence_header
_is_audio_sequence_header = flv.is_audio_sequence_header


class MediaPacket:
    """One audio, video or data message of a stream.

    A plain slotted class rather than a dataclass: one is made for every message a publisher sends, so its
    constructor is on the ingest path, and the per-format caches cost nothing until a viewer asks (no dict per
    packet for a stream nobody watches). Equality is identity, as the fan-out expects.
    """

    __slots__ = ("kind", "timestamp", "payload", "keyframe", "sequence_header", "_rtmp", "_flv", "mpegts")

    def __init__(
        self, kind: int, timestamp: int, payload: bytes, keyframe: bool = False, sequence_header: bool = False
    ) -> None:
        self.kind = kind  # AUDIO, VIDEO or DATA (the RTMP message type id, which is also the FLV tag type)
        self.timestamp = timestamp  # milliseconds, as the publisher stamped it
        self.payload = payload
        self.keyframe = keyframe
        self.sequence_header = sequence_header
        self._rtmp: dict[tuple[int, int], bytes] | None = None  # RTMP chunks per (chunk size, stream id)
        self._flv: bytes | None = None
        #: This packet as MPEG-TS, set by the stream's HTTP-TS output (stateful muxing: once, in order) while
        #: the stream has HTTP-TS viewers; the fan-out's TS format joins these.
        self.mpegts: bytes | None = None

    def __repr__(self) -> str:
        return (f"MediaPacket(kind={self.kind}, timestamp={self.timestamp}, payload=<{len(self.payload)} bytes>, "
                f"keyframe={self.keyframe}, sequence_header={self.sequence_header})")

    @classmethod
    def from_payload(cls, kind: int, timestamp: int, payload: bytes) -> MediaPacket:
        if kind == VIDEO:
            return cls(kind, timestamp, payload, _is_keyframe(payload), _is_sequence_header(payload))
        if kind == AUDIO:
            return cls(kind, timestamp, payload, False, _is_audio_sequence_header(payload))
        return cls(kind, timestamp, payload)

    def rtmp_bytes(self, chunk_size: int, stream_id: int = 1) -> bytes:
        key = (chunk_size, stream_id)
        cache = self._rtmp
        if cache is None:
            cache = self._rtmp = {}
        data = cache.get(key)
        if data is None:
            data = encode_message(Message(self.kind, stream_id, self.timestamp, self.payload), csid_for(self.kind),
                                  chunk_size)
            cache[key] = data
        return data

    def flv_bytes(self) -> bytes:
        data = self._flv
        if data is None:
            data = self._flv = flv.encode_tag(self.kind, self.timestamp, self.payload)
        return data
