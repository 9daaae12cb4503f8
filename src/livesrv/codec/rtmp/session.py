"""The server side of one RTMP connection, sans-IO.

Bytes from the socket go into :meth:`ServerSession.receive_data`, which returns *events* (a client asked to
connect, publish, play; a media message arrived; ...). Policy is not decided here: the asyncio adapter asks the
hub and answers through ``accept_*``/``reject_*``, whose bytes come out of :meth:`data_to_send`. Protocol
chores that need no policy (handshake, acknowledgements, ping, createStream, FCPublish, releaseStream,
getStreamLength) are answered here directly, so every server built on this engine behaves the same.

Outgoing messages are encoded statelessly (fmt 0 + fmt 3, see :func:`chunk.encode_message`) at one chunk
size, fixed when the connection is accepted: a media message serialized once for that chunk size can then be
written as is to every viewer, interleaved with this session's own output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livesrv.codec import amf0
from livesrv.codec.errors import RTMPCommandError
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.messages import CSID_AUDIO, CSID_COMMAND, CSID_CONTROL, CSID_STREAM, CSID_VIDEO, csid_for
from livesrv.codec.rtmp.chunk import ChunkDecoder, encode_message
from livesrv.codec.rtmp.handshake import ServerHandshake

DEFAULT_WINDOW_ACK_SIZE = 2_500_000
_VIDEO = m.VIDEO
_AUDIO = m.AUDIO


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    complex: bool


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    transaction_id: float
    app: str
    tc_url: str
    page_url: str
    swf_url: str
    flash_ver: str
    object_encoding: float
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    stream_id: int
    transaction_id: float
    name: str
    publish_type: str  # "live", "record", "append"


@dataclass(frozen=True, slots=True)
class PlayRequest:
    stream_id: int
    transaction_id: float
    name: str
    start: float
    duration: float
    reset: bool


@dataclass(frozen=True, slots=True)
class UnpublishRequest:
    """FCUnpublish, or deleteStream/closeStream of the publishing stream."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class StopPlayRequest:
    """closeStream/deleteStream of a playing stream."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class PauseRequest:
    stream_id: int
    paused: bool
    position_ms: float


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    """``@setDataFrame onMetaData`` (or a bare ``onMetaData``) from the publisher.

    ``payload`` is re-encoded as a plain ``onMetaData`` data message, the form players and FLV files expect.
    """

    stream_id: int
    timestamp: int
    metadata: dict[str, Any]
    payload: bytes


@dataclass(slots=True)
class MediaReceived:
    """An audio or video message from the publisher (``message.type_id`` is AUDIO or VIDEO).

    Not frozen, unlike the other events: there is one per media message, and a frozen dataclass's constructor
    sets its field through ``object.__setattr__``, several times slower. Treat it as read-only all the same.
    """

    message: m.Message


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    name: str
    transaction_id: float


Event = (
    HandshakeDone
    | ConnectRequest
    | PublishRequest
    | PlayRequest
    | UnpublishRequest
    | StopPlayRequest
    | PauseRequest
    | MetadataReceived
    | MediaReceived
    | UnknownCommand
)


def _amf_str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _amf_num(v: Any, default: float = 0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def metadata_payload(metadata: dict[str, Any]) -> bytes:
    """An ``onMetaData`` data message body as players expect it (ECMA array, no ``@setDataFrame``)."""
    return amf0.encode("onMetaData", amf0.ECMAArray(metadata))


@dataclass(slots=True)
class _StreamState:
    publishing: bool = False
    playing: bool = False


@dataclass(slots=True)
class ServerSession:
    """One RTMP connection, server side."""

    out_chunk_size: int = 60000
    window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE
    max_message_size: int = 16 * 1024 * 1024
    random_bytes: Callable[[int], bytes] = os.urandom
    server_info: dict[str, Any] = field(default_factory=dict)

    _handshake: ServerHandshake = field(init=False)
    _decoder: ChunkDecoder = field(init=False)
    _out: list[bytes] = field(init=False, default_factory=list)
    _connected: bool = field(init=False, default=False)
    _streams: dict[int, _StreamState] = field(init=False, default_factory=dict)
    _next_stream_id: int = field(init=False, default=1)
    _peer_window: int = field(init=False, default=0)
    _acked: int = field(init=False, default=0)
    app: str = field(init=False, default="")
    tc_url: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._handshake = ServerHandshake(random_bytes=self.random_bytes)
        self._decoder = ChunkDecoder(max_message_size=self.max_message_size)

    # ------------------------------------------------------------------------------------------ input

    @property
    def handshake_done(self) -> bool:
        return self._handshake.done

    @property
    def bytes_received(self) -> int:
        return self._decoder.bytes_received

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; raises a ``ProtocolError`` subclass when they are malformed."""
        events: list[Event] = []
        if not self._handshake.done:
            self._handshake.receive_data(data)
            out = self._handshake.data_to_send()
            if out:
                self._out.append(out)
            if not self._handshake.done:
                return events
            events.append(HandshakeDone(self._handshake.complex))
            data = self._handshake.leftover
            if not data:
                return events
        streams = self._streams
        for msg in self._decoder.feed(data):
            t = msg.type_id
            if t == _VIDEO or t == _AUDIO:  # _handle_message's first case, inlined: nearly every message
                st = streams.get(msg.stream_id)
                if st is not None and st.publishing:
                    events.append(MediaReceived(msg))
                continue
            self._handle_message(msg, events)
        self._maybe_ack()
        return events

    def _maybe_ack(self) -> None:
        if self._peer_window <= 0:
            return
        received = self._decoder.bytes_received
        if received - self._acked >= self._peer_window:
            self._acked = received
            self._send(m.ack(received & 0xFFFFFFFF), CSID_CONTROL)

    def _handle_message(self, msg: m.Message, events: list[Event]) -> None:
        t = msg.type_id
        if t == m.VIDEO or t == m.AUDIO:
            st = self._streams.get(msg.stream_id)
            if st is None or not st.publishing:
                # Media on a stream that is not publishing: ignore, as SRS does (some encoders send early).
                return
            events.append(MediaReceived(msg))
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            payload = msg.payload[1:] if t == m.COMMAND_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._handle_command(msg.stream_id, amf0.decode_all(payload), events)
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            payload = msg.payload[1:] if t == m.DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._handle_data(msg, amf0.decode_all(payload), events)
        elif t == m.WINDOW_ACK_SIZE:
            self._peer_window = m.parse_u32(msg.payload)
        elif t == m.USER_CONTROL:
            event, values = m.parse_user_control(msg.payload)
            if event == m.PING_REQUEST and values:
                self._send(m.user_control(m.PING_RESPONSE, values[0]), CSID_CONTROL)
        elif t in (m.SET_CHUNK_SIZE, m.ABORT, m.ACK, m.SET_PEER_BANDWIDTH):
            pass  # applied by the decoder, or informational
        elif t == m.AGGREGATE:
            self._handle_aggregate(msg, events)
        elif t in (m.SHARED_OBJECT_AMF0, m.SHARED_OBJECT_AMF3):
            pass  # shared objects: a Flash-era feature livesrv does not serve; harmless to skip
        else:
            raise RTMPCommandError(f"unknown message type {t}")

    def _handle_aggregate(self, msg: m.Message, events: list[Event]) -> None:
        """Split an aggregate message into its FLV-tag-shaped sub-messages (type, size, ts, body, backptr)."""
        data = msg.payload
        pos = 0
        base: int | None = None
        while pos + 11 <= len(data):
            tag_type = data[pos]
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
            body_end = pos + 11 + size
            if body_end + 4 > len(data):
                raise RTMPCommandError("aggregate message sub-message overruns its length")
            if tag_type == m.AGGREGATE:
                # Encoders never nest them; following the nesting would recurse once per 15 bytes of payload.
                raise RTMPCommandError("aggregate message nested in an aggregate message")
            if base is None:
                base = ts
            sub = m.Message(tag_type, msg.stream_id, (msg.timestamp + ts - base) & 0xFFFFFFFF, data[pos + 11 : body_end])
            self._handle_message(sub, events)
            pos = body_end + 4

    def _handle_data(self, msg: m.Message, values: list[Any], events: list[Event]) -> None:
        if not values:
            return
        if values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            st = self._streams.get(msg.stream_id)
            if st is None or not st.publishing:
                return
            meta = dict(values[1])
            events.append(MetadataReceived(msg.stream_id, msg.timestamp, meta, metadata_payload(meta)))

    def _handle_command(self, stream_id: int, values: list[Any], events: list[Event]) -> None:
        if not values or not isinstance(values[0], str):
            raise RTMPCommandError("command message without a command name")
        name = values[0]
        txn = _amf_num(values[1]) if len(values) > 1 else 0.0
        args = values[3:]
        if name == "connect":
            obj = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            if self._connected:
                raise RTMPCommandError("connect sent twice")
            self.app = _amf_str(obj.get("app"))
            self.tc_url = _amf_str(obj.get("tcUrl"))
            events.append(
                ConnectRequest(
                    txn,
                    self.app,
                    self.tc_url,
                    _amf_str(obj.get("pageUrl")),
                    _amf_str(obj.get("swfUrl")),
                    _amf_str(obj.get("flashVer")),
                    _amf_num(obj.get("objectEncoding")),
                    dict(obj),
                )
            )
            return
        if not self._connected:
            raise RTMPCommandError(f"command {name!r} before connect")
        if name == "createStream":
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams[sid] = _StreamState()
            self._send_command(0, CSID_COMMAND, "_result", txn, None, float(sid))
        elif name in ("releaseStream", "FCPublish"):
            # Answered at once, as SRS does; the real decision is taken on publish.
            self._send_command(0, CSID_COMMAND, "_result", txn, None, amf0.UNDEFINED)
            if name == "FCPublish":
                stream = _amf_str(args[0]) if args else ""
                self._send_command(
                    0, CSID_COMMAND, "onFCPublish", 0.0, None,
                    {"code": "NetStream.Publish.Start", "description": f"Started publishing stream {stream}."},
                )
        elif name == "publish":
            st = self._stream(stream_id, name)
            stream_name = _amf_str(args[0]) if args else ""
            ptype = _amf_str(args[1]) if len(args) > 1 else "live"
            if not stream_name:
                raise RTMPCommandError("publish without a stream name")
            if st.publishing or st.playing:
                raise RTMPCommandError(f"publish on message stream {stream_id} that is already in use")
            events.append(PublishRequest(stream_id, txn, stream_name, ptype or "live"))
        elif name == "play":
            st = self._stream(stream_id, name)
            stream_name = _amf_str(args[0]) if args else ""
            if not stream_name:
                raise RTMPCommandError("play without a stream name")
            if st.publishing or st.playing:
                raise RTMPCommandError(f"play on message stream {stream_id} that is already in use")
            start = _amf_num(args[1], -2.0) if len(args) > 1 else -2.0
            duration = _amf_num(args[2], -1.0) if len(args) > 2 else -1.0
            reset = bool(args[3]) if len(args) > 3 and isinstance(args[3], bool) else True
            events.append(PlayRequest(stream_id, txn, stream_name, start, duration, reset))
        elif name == "FCUnpublish":
            self._send_command(0, CSID_COMMAND, "_result", txn, None, amf0.UNDEFINED)
            for sid, st in self._streams.items():
                if st.publishing:
                    events.append(UnpublishRequest(sid, "FCUnpublish"))
                    st.publishing = False
        elif name in ("deleteStream", "closeStream"):
            sid = int(_amf_num(args[0], stream_id)) if name == "deleteStream" and args else stream_id
            st = self._streams.get(sid)
            if st is not None:
                if st.publishing:
                    events.append(UnpublishRequest(sid, name))
                if st.playing:
                    events.append(StopPlayRequest(sid, name))
                st.publishing = st.playing = False
                if name == "deleteStream":
                    del self._streams[sid]
        elif name == "getStreamLength":
            # Live streams have no length; answering keeps Flash-era players from waiting on a reply.
            self._send_command(0, CSID_COMMAND, "_result", txn, None, 0.0)
        elif name == "pause":
            paused = bool(args[0]) if args and isinstance(args[0], bool) else True
            pos = _amf_num(args[1]) if len(args) > 1 else 0.0
            st = self._streams.get(stream_id)
            if st is not None and st.playing:
                code = "NetStream.Pause.Notify" if paused else "NetStream.Unpause.Notify"
                self._on_status(stream_id, "status", code, "Paused stream." if paused else "Unpaused stream.")
                events.append(PauseRequest(stream_id, paused, pos))
        elif name in ("receiveAudio", "receiveVideo", "_checkbw", "_result", "_error", "onBWDone", "@setDataFrame"):
            pass
        else:
            if txn > 0:
                # A call that expects an answer: say plainly that we don't serve it instead of leaving it hanging.
                self._send_command(
                    0, CSID_COMMAND, "_error", txn, None,
                    {"level": "error", "code": "NetConnection.Call.Failed", "description": f"Method not found ({name})."},
                )
            events.append(UnknownCommand(name, txn))

    def _stream(self, stream_id: int, command: str) -> _StreamState:
        st = self._streams.get(stream_id)
        if st is None:
            # Some clients publish on a stream id they never created (or on 0); accept like SRS does.
            if stream_id < 0 or len(self._streams) >= 16:
                raise RTMPCommandError(f"{command} on unknown message stream {stream_id}")
            st = self._streams[stream_id] = _StreamState()
        return st

    # ----------------------------------------------------------------------------------------- output

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, msg: m.Message, csid: int) -> None:
        self._out.append(encode_message(msg, csid, self.out_chunk_size))

    def _send_command(self, stream_id: int, csid: int, *values: Any) -> None:
        self._send(m.Message(m.COMMAND_AMF0, stream_id, 0, amf0.encode(*values)), csid)

    def _on_status(self, stream_id: int, level: str, code: str, description: str, **extra: Any) -> None:
        info: dict[str, Any] = {"level": level, "code": code, "description": description}
        info.update(extra)
        self._send_command(stream_id, CSID_STREAM, "onStatus", 0.0, None, info)

    def accept_connect(self, request: ConnectRequest) -> None:
        self._connected = True
        self._send(m.window_ack_size(self.window_ack_size), CSID_CONTROL)
        self._send(m.set_peer_bandwidth(self.window_ack_size, 2), CSID_CONTROL)
        self._send(m.set_chunk_size(self.out_chunk_size), CSID_CONTROL)
        props = {"fmsVer": "FMS/3,5,3,888", "capabilities": 127.0, "mode": 1.0}
        info: dict[str, Any] = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": request.object_encoding,
        }
        if self.server_info:
            info["data"] = amf0.ECMAArray(self.server_info)
        self._send_command(0, CSID_COMMAND, "_result", request.transaction_id, props, info)

    def reject_connect(self, request: ConnectRequest, description: str) -> None:
        # Our chunk size is announced first, as accept_connect does: an _error longer than 128 bytes (a
        # description that says why) would otherwise be chunked in a size the client was never told.
        self._send(m.set_chunk_size(self.out_chunk_size), CSID_CONTROL)
        self._send_command(
            0, CSID_COMMAND, "_error", request.transaction_id, None,
            {"level": "error", "code": "NetConnection.Connect.Rejected", "description": description},
        )

    def accept_publish(self, request: PublishRequest) -> None:
        self._streams[request.stream_id].publishing = True
        self._send(m.user_control(m.STREAM_BEGIN, request.stream_id), CSID_CONTROL)
        self._on_status(request.stream_id, "status", "NetStream.Publish.Start", f"Started publishing stream {request.name}.")

    def reject_publish(self, request: PublishRequest, description: str, code: str = "NetStream.Publish.BadName") -> None:
        self._on_status(request.stream_id, "error", code, description)

    def accept_play(self, request: PlayRequest) -> None:
        sid = request.stream_id
        self._streams[sid].playing = True
        self._send(m.user_control(m.STREAM_BEGIN, sid), CSID_CONTROL)
        if request.reset:
            self._on_status(sid, "status", "NetStream.Play.Reset", f"Playing and resetting {request.name}.")
        self._on_status(sid, "status", "NetStream.Play.Start", f"Started playing {request.name}.")
        # |RtmpSampleAccess as SRS and nginx-rtmp send it. No "onStatus NetStream.Data.Start" data message:
        # FFmpeg's FLV demuxer turns any unknown script tag into an extra data stream that never ends.
        self._send(m.Message(m.DATA_AMF0, sid, 0, amf0.encode("|RtmpSampleAccess", True, True)), CSID_STREAM)

    def reject_play(self, request: PlayRequest, description: str, code: str = "NetStream.Play.StreamNotFound") -> None:
        self._on_status(request.stream_id, "error", code, description)

    def unpublish_notify(self, stream_id: int, name: str) -> None:
        """Tell a player the publisher is gone (then the adapter closes, or waits for a new publisher)."""
        self._on_status(stream_id, "status", "NetStream.Play.UnpublishNotify", f"{name} is now unpublished.")
        self._send(m.user_control(m.STREAM_EOF, stream_id), CSID_CONTROL)

    def publish_notify(self, stream_id: int, name: str) -> None:
        self._on_status(stream_id, "status", "NetStream.Play.PublishNotify", f"{name} is now published.")

    def stop_publish(self, stream_id: int, description: str) -> None:
        """Tell a publisher it is no longer accepted (kicked, taken over)."""
        st = self._streams.get(stream_id)
        if st is not None:
            st.publishing = False
        self._on_status(stream_id, "error", "NetStream.Publish.Rejected", description)

    def send_message(self, msg: m.Message) -> None:
        """Queue one message on its usual chunk stream (used for per-connection sends; fan-out bypasses it)."""
        self._send(msg, csid_for(msg.type_id))
