"""RTMP messages and the protocol control messages (types 1-6) that need no AMF.

A :class:`Message` is what the chunk layer reassembles and what it serializes; the builders here make the
control messages a session sends, and the parsers read the ones it receives. Parsers raise
:class:`RTMPCommandError` on payloads that are too short or nonsensical, so a peer's bad bytes never surface
as ``struct.error``. Builders raise ``ValueError``: a bad argument there is livesrv's bug, not the peer's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from livesrv.codec import flv
from livesrv.codec.errors import RTMPCommandError

__all__ = [
    "MessageType",
    "UserControlEvent",
    "Message",
    "SET_CHUNK_SIZE",
    "ABORT",
    "ACK",
    "USER_CONTROL",
    "WINDOW_ACK_SIZE",
    "SET_PEER_BANDWIDTH",
    "AUDIO",
    "VIDEO",
    "DATA_AMF3",
    "SHARED_OBJECT_AMF3",
    "COMMAND_AMF3",
    "DATA_AMF0",
    "SHARED_OBJECT_AMF0",
    "COMMAND_AMF0",
    "AGGREGATE",
    "STREAM_BEGIN",
    "STREAM_EOF",
    "STREAM_DRY",
    "SET_BUFFER_LENGTH",
    "STREAM_IS_RECORDED",
    "PING_REQUEST",
    "PING_RESPONSE",
    "LIMIT_HARD",
    "LIMIT_SOFT",
    "LIMIT_DYNAMIC",
    "CONTROL_CSID",
    "MAX_CHUNK_SIZE",
    "set_chunk_size",
    "abort",
    "ack",
    "window_ack_size",
    "set_peer_bandwidth",
    "user_control",
    "parse_u32",
    "parse_set_peer_bandwidth",
    "parse_user_control",
]


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACK = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = flv.SCRIPT
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


# Plain-int aliases: hot paths compare ``msg.type_id == VIDEO`` without attribute lookups on the enum class.
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = flv.AUDIO  # media messages have the type ids of the FLV tags they carry
VIDEO = flv.VIDEO
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = flv.SCRIPT
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types.
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

# Protocol control messages travel on chunk stream 2, message stream 0 (RTMP spec 5.4).
CONTROL_CSID = 2

# The spec allows chunk sizes up to 0x7FFFFFFF; nobody sends more than 64 KiB in practice, and accepting
# anything larger would let a peer make us buffer gigabytes for a single chunk.
MAX_CHUNK_SIZE = 16 * 1024 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U32_U8 = struct.Struct(">IB")

# How many 4-byte values each known user control event carries.
_UC_ARITY: dict[int, int] = {
    STREAM_BEGIN: 1,
    STREAM_EOF: 1,
    STREAM_DRY: 1,
    SET_BUFFER_LENGTH: 2,
    STREAM_IS_RECORDED: 1,
    PING_REQUEST: 1,
    PING_RESPONSE: 1,
}


@dataclass(slots=True)
class Message:
    """One reassembled RTMP message; ``timestamp`` is absolute, in ms, modulo 2**32."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


def _u32_arg(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} {value} does not fit in 32 bits")
    return value


def _control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, 0, 0, payload)


def set_chunk_size(n: int) -> Message:
    """The new size applies to the chunks we send after this message, so send it before switching."""
    if not 1 <= n <= 0x7FFFFFFF:
        raise ValueError(f"chunk size {n} outside 1..0x7FFFFFFF")
    return _control(SET_CHUNK_SIZE, _U32.pack(n))


def abort(csid: int) -> Message:
    return _control(ABORT, _U32.pack(_u32_arg("chunk stream id", csid)))


def ack(sequence: int) -> Message:
    """``sequence`` is the total byte count received so far, which wraps at 2**32 on long sessions."""
    return _control(ACK, _U32.pack(sequence & 0xFFFFFFFF))


def window_ack_size(n: int) -> Message:
    return _control(WINDOW_ACK_SIZE, _U32.pack(_u32_arg("window size", n)))


def set_peer_bandwidth(n: int, limit_type: int = LIMIT_DYNAMIC) -> Message:
    if limit_type not in (LIMIT_HARD, LIMIT_SOFT, LIMIT_DYNAMIC):
        raise ValueError(f"bad limit type {limit_type}")
    return _control(SET_PEER_BANDWIDTH, _U32_U8.pack(_u32_arg("bandwidth", n), limit_type))


def user_control(event: int, *values: int) -> Message:
    """Known events must get exactly their values; unknown ones are sent as given (each a 32-bit int)."""
    if not 0 <= event <= 0xFFFF:
        raise ValueError(f"user control event {event} does not fit in 16 bits")
    arity = _UC_ARITY.get(event)
    if arity is not None and len(values) != arity:
        raise ValueError(f"user control event {event} takes {arity} value(s), got {len(values)}")
    payload = _U16.pack(event) + b"".join(_U32.pack(_u32_arg("user control value", v)) for v in values)
    return _control(USER_CONTROL, payload)


def parse_u32(payload: bytes) -> int:
    """The value of a Set Chunk Size, Abort, Acknowledgement or Window Acknowledgement Size message.

    Trailing bytes are tolerated: some encoders pad control messages, and the value is unambiguous.
    """
    if len(payload) < 4:
        raise RTMPCommandError(f"control message payload of {len(payload)} bytes, expected 4")
    return _U32.unpack_from(payload)[0]


def parse_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """Returns ``(window size, limit type)``."""
    if len(payload) < 5:
        raise RTMPCommandError(f"set peer bandwidth payload of {len(payload)} bytes, expected 5")
    size, limit_type = _U32_U8.unpack_from(payload)
    if limit_type > LIMIT_DYNAMIC:
        raise RTMPCommandError(f"set peer bandwidth with unknown limit type {limit_type}")
    return size, limit_type


def parse_user_control(payload: bytes) -> tuple[int, tuple[int, ...]]:
    """Returns ``(event, values)``.

    Known events must carry at least their values (extra bytes are ignored). Unknown events (SWF
    verification, buffer empty/ready...) are returned with every whole 32-bit value present, so the session
    can ignore them instead of dropping the connection.
    """
    if len(payload) < 2:
        raise RTMPCommandError(f"user control message of {len(payload)} bytes, expected at least 2")
    event = _U16.unpack_from(payload)[0]
    arity = _UC_ARITY.get(event)
    available = (len(payload) - 2) // 4
    if arity is None:
        arity = available
    elif available < arity:
        raise RTMPCommandError(f"user control event {event} needs {4 * arity} bytes of data, got {len(payload) - 2}")
    return event, struct.unpack_from(f">{arity}I", payload, 2)


# ---------------------------------------------------------------------------------------- chunk streams

# Chunk stream ids for what we send (server and client alike), as SRS uses them. Any id is valid on the wire;
# one definition keeps every sender of media on the same ones.
CSID_CONTROL = 2  # protocol control and user control messages
CSID_COMMAND = 3  # commands on the connection (message stream 0)
CSID_STREAM = 5  # onStatus and data messages (metadata) on a message stream
CSID_VIDEO = 6
CSID_AUDIO = 7
CSID_STREAM_COMMAND = 8  # a client's commands on a message stream (publish, play)


def csid_for(type_id: int) -> int:
    """The chunk stream a media or data message goes out on."""
    if type_id == VIDEO:
        return CSID_VIDEO
    if type_id == AUDIO:
        return CSID_AUDIO
    return CSID_STREAM
