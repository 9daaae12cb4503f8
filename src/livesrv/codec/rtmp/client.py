"""The client side of an RTMP connection, sans-IO.

Used by livesrv's tests to speak RTMP byte-exactly (complex handshake, compressed chunk headers, odd command
orders) and, later, by edge and forward code to pull from or push to another server. Same shape as
:class:`~livesrv.codec.rtmp.session.ServerSession`: ``receive_data`` returns events, ``data_to_send`` drains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livesrv.codec import amf0
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.chunk import ChunkDecoder, ChunkEncoder
from livesrv.codec.rtmp.handshake import ClientHandshake


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    server_digest_valid: bool


@dataclass(frozen=True, slots=True)
class CommandReply:
    """``_result`` or ``_error`` for a command we sent (matched by ``transaction_id``)."""

    name: str
    transaction_id: float
    values: list[Any]


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """``onStatus`` (or ``onFCPublish``) from the server."""

    stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """Audio, video or data (metadata) on a message stream."""

    message: m.Message


@dataclass(frozen=True, slots=True)
class ControlEvent:
    message: m.Message


ClientEvent = HandshakeComplete | CommandReply | StatusEvent | MediaEvent | ControlEvent


@dataclass(slots=True)
class ClientSession:
    complex_handshake: bool = False
    out_chunk_size: int = 4096
    random_bytes: Callable[[int], bytes] = os.urandom

    _handshake: ClientHandshake = field(init=False)
    _decoder: ChunkDecoder = field(init=False)
    _encoder: ChunkEncoder = field(init=False)
    _out: list[bytes] = field(init=False, default_factory=list)
    _txn: int = field(init=False, default=0)
    _window: int = field(init=False, default=0)
    _acked: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._handshake = ClientHandshake(complex=self.complex_handshake, random_bytes=self.random_bytes)
        self._decoder = ChunkDecoder()
        self._encoder = ChunkEncoder(128)
        self._out.append(self._handshake.initiate())

    @property
    def handshake_done(self) -> bool:
        return self._handshake.done

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        if not self._handshake.done:
            self._handshake.receive_data(data)
            out = self._handshake.data_to_send()
            if out:
                self._out.append(out)
            if not self._handshake.done:
                return events
            events.append(HandshakeComplete(self._handshake.server_digest_valid))
            if self.out_chunk_size != 128:
                self._send(m.set_chunk_size(self.out_chunk_size), m.CSID_CONTROL)
                self._encoder.chunk_size = self.out_chunk_size
            data = self._handshake.leftover
            if not data:
                return events
        for msg in self._decoder.feed(data):
            self._handle(msg, events)
        if self._window and self._decoder.bytes_received - self._acked >= self._window:
            self._acked = self._decoder.bytes_received
            self._send(m.ack(self._acked & 0xFFFFFFFF), m.CSID_CONTROL)
        return events

    def _handle(self, msg: m.Message, events: list[ClientEvent]) -> None:
        t = msg.type_id
        if t in (m.AUDIO, m.VIDEO, m.DATA_AMF0):
            events.append(MediaEvent(msg))
        elif t == m.COMMAND_AMF0:
            values = amf0.decode_all(msg.payload)
            name = values[0] if values and isinstance(values[0], str) else ""
            if name in ("_result", "_error"):
                # A reply whose transaction id is missing or not a number answers nothing we sent: 0 matches
                # no command of ours (they count from 1), and a peer's odd bytes never raise anything else.
                txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
                events.append(CommandReply(name, txn, values[2:]))
            elif name in ("onStatus", "onFCPublish", "onFCUnpublish"):
                info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
                events.append(
                    StatusEvent(
                        msg.stream_id,
                        str(info.get("level", "")),
                        str(info.get("code", "")),
                        str(info.get("description", "")),
                        info,
                    )
                )
        else:
            if t == m.WINDOW_ACK_SIZE:
                self._window = m.parse_u32(msg.payload)
            elif t == m.USER_CONTROL:
                event, values = m.parse_user_control(msg.payload)
                if event == m.PING_REQUEST and values:
                    self._send(m.user_control(m.PING_RESPONSE, values[0]), m.CSID_CONTROL)
            events.append(ControlEvent(msg))

    def _send(self, msg: m.Message, csid: int) -> None:
        self._out.append(self._encoder.encode(msg, csid))

    def _command(self, stream_id: int, name: str, *args: Any, txn: float | None = None) -> float:
        if txn is None:
            self._txn += 1
            txn = float(self._txn)
        csid = m.CSID_COMMAND if stream_id == 0 else m.CSID_STREAM_COMMAND
        self._send(m.Message(m.COMMAND_AMF0, stream_id, 0, amf0.encode(name, txn, *args)), csid)
        return txn

    # --------------------------------------------------------------------------------------- commands

    def connect(self, app: str, tc_url: str, **extra: Any) -> float:
        obj: dict[str, Any] = {
            "app": app,
            "flashVer": "FMLE/3.0 (compatible; livesrv)",
            "tcUrl": tc_url,
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 3191.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        }
        obj.update(extra)
        return self._command(0, "connect", obj)

    def call(self, name: str, *args: Any, stream_id: int = 0) -> float:
        return self._command(stream_id, name, None, *args)

    def create_stream(self) -> float:
        return self._command(0, "createStream", None)

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> None:
        self._command(stream_id, "publish", None, name, publish_type, txn=0.0)

    def play(self, stream_id: int, name: str, start: float = -2.0) -> None:
        self._command(stream_id, "play", None, name, start, txn=0.0)

    def delete_stream(self, stream_id: int) -> None:
        self._command(0, "deleteStream", None, float(stream_id), txn=0.0)

    def send_metadata(self, stream_id: int, metadata: dict[str, Any]) -> None:
        payload = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(metadata))
        self._send(m.Message(m.DATA_AMF0, stream_id, 0, payload), m.CSID_STREAM)

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        self._send(m.Message(type_id, stream_id, timestamp, payload), m.csid_for(type_id))
