"""A media message as the hub carries it: parsed once, serialized once per output format.

Every viewer of a stream receives the *same* ``MediaPacket`` object; the bytes for each output format
(RTMP chunks at a given chunk size and message stream id, an FLV tag) are built the first time a viewer asks
and then shared by all, so per-viewer work is one ``transport.write`` of an existing bytes object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from livesrv.codec import flv
from livesrv.codec.rtmp.chunk import encode_message
from livesrv.codec.rtmp.messages import Message, csid_for

AUDIO = flv.AUDIO
VIDEO = flv.VIDEO
DATA = flv.SCRIPT  # metadata (onMetaData), an RTMP data message


@dataclass(slots=True, eq=False)
class MediaPacket:
    kind: int  # AUDIO, VIDEO or DATA (the RTMP message type id, which is also the FLV tag type)
    timestamp: int  # milliseconds, as the publisher stamped it
    payload: bytes
    keyframe: bool = False
    sequence_header: bool = False
    _rtmp: dict[tuple[int, int], bytes] = field(default_factory=dict, repr=False)
    _flv: bytes | None = field(default=None, repr=False)
    #: This packet as MPEG-TS, set by the stream's HTTP-TS output (stateful muxing: once, in order) while the
    #: stream has HTTP-TS viewers; the fan-out's TS format joins these.
    mpegts: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_payload(cls, kind: int, timestamp: int, payload: bytes) -> MediaPacket:
        if kind == VIDEO:
            return cls(kind, timestamp, payload, flv.is_keyframe(payload), flv.is_sequence_header(payload))
        if kind == AUDIO:
            return cls(kind, timestamp, payload, False, flv.is_audio_sequence_header(payload))
        return cls(kind, timestamp, payload)

    def rtmp_bytes(self, chunk_size: int, stream_id: int = 1) -> bytes:
        key = (chunk_size, stream_id)
        data = self._rtmp.get(key)
        if data is None:
            data = encode_message(Message(self.kind, stream_id, self.timestamp, self.payload), csid_for(self.kind),
                                  chunk_size)
            self._rtmp[key] = data
        return data

    def flv_bytes(self) -> bytes:
        data = self._flv
        if data is None:
            data = self._flv = flv.encode_tag(self.kind, self.timestamp, self.payload)
        return data
