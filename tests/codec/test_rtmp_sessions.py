"""The RTMP server and client sessions fed hostile messages: they parse or raise ProtocolError, nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec import amf0
from livesrv.codec.errors import ProtocolError, RTMPCommandError
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp import session as s
from livesrv.codec.rtmp.chunk import encode_message
from livesrv.codec.rtmp.client import ClientSession, CommandReply
from livesrv.codec.rtmp.handshake import ClientHandshake, ServerHandshake


def server_session() -> s.ServerSession:
    """A server session past the handshake."""
    session = s.ServerSession()
    hs = ClientHandshake(random_bytes=bytes)
    session.receive_data(hs.initiate())
    hs.receive_data(session.data_to_send())
    session.receive_data(hs.data_to_send())
    assert session.handshake_done
    return session


def publishing_session() -> s.ServerSession:
    session = server_session()
    connect = amf0.encode("connect", 1.0, {"app": "live"})
    (request,) = session.receive_data(encode_message(m.Message(m.COMMAND_AMF0, 0, 0, connect), 3, 128))
    assert isinstance(request, s.ConnectRequest)
    session.accept_connect(request)
    publish = amf0.encode("publish", 0.0, None, "x", "live")
    (pub,) = session.receive_data(encode_message(m.Message(m.COMMAND_AMF0, 1, 0, publish), 8, 128))
    assert isinstance(pub, s.PublishRequest)
    session.accept_publish(pub)
    return session


def client_session() -> ClientSession:
    """A client session past the handshake."""
    client = ClientSession()
    hs = ServerHandshake(random_bytes=bytes)
    hs.receive_data(client.data_to_send())
    client.receive_data(hs.data_to_send())
    client.data_to_send()
    assert client.handshake_done
    return client


def sub_message(type_id: int, ts: int, body: bytes) -> bytes:
    """One FLV-tag-shaped entry of an aggregate message: type, size, timestamp, stream id, body, back pointer."""
    return (
        bytes([type_id]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24])
        + bytes(3) + body + (11 + len(body)).to_bytes(4, "big")
    )


def aggregate(stream_id: int, ts: int, payload: bytes) -> bytes:
    return encode_message(m.Message(m.AGGREGATE, stream_id, ts, payload), 4, 128)


def test_aggregate_splits_into_media_rebased_on_the_message_timestamp() -> None:
    session = publishing_session()
    payload = sub_message(m.VIDEO, 5000, b"\x17\x01\x00\x00\x00") + sub_message(m.AUDIO, 5023, b"\xaf\x01\x21")
    events = session.receive_data(aggregate(1, 100, payload))
    media = [(e.message.type_id, e.message.timestamp, e.message.payload) for e in events if isinstance(e, s.MediaReceived)]
    assert media == [(m.VIDEO, 100, b"\x17\x01\x00\x00\x00"), (m.AUDIO, 123, b"\xaf\x01\x21")]


@pytest.mark.parametrize("depth", [1, 2000])
def test_nested_aggregate_is_a_protocol_error(depth: int) -> None:
    """Used to recurse once per nesting level: about 15 kB of payload raised RecursionError."""
    inner = sub_message(m.AUDIO, 0, b"\xaf\x01\x21")
    for _ in range(depth):
        inner = sub_message(m.AGGREGATE, 0, inner)
    with pytest.raises(RTMPCommandError, match="nested"):
        publishing_session().receive_data(aggregate(1, 0, inner))


@pytest.mark.parametrize(
    "values",
    [("_result",), ("_result", "1"), ("_error", None), ("_result", True, None, 1.0), ("_error", amf0.UNDEFINED)],
)
def test_client_reply_without_a_numeric_transaction_id(values: tuple[Any, ...]) -> None:
    """Used to raise IndexError, ValueError or TypeError from ``float(values[1])``."""
    client = client_session()
    events = client.receive_data(encode_message(m.Message(m.COMMAND_AMF0, 0, 0, amf0.encode(*values)), 3, 128))
    assert events == [CommandReply(values[0], 0.0, list(values[2:]))]


def test_client_reply_transaction_id() -> None:
    client = client_session()
    events = client.receive_data(encode_message(m.Message(m.COMMAND_AMF0, 0, 0, amf0.encode("_result", 7.0, None, 1.0)), 3, 128))
    assert events == [CommandReply("_result", 7.0, [None, 1.0])]


def test_a_rejected_connect_reaches_the_client_whatever_the_description_length() -> None:
    """The _error was chunked in the server's chunk size before it told the client: descriptions over 128
    bytes (a reason that says which name was wrong, and why) arrived as garbage."""
    server = s.ServerSession(out_chunk_size=4096)
    hs = ClientHandshake(random_bytes=bytes)
    server.receive_data(hs.initiate())
    hs.receive_data(server.data_to_send())
    server.receive_data(hs.data_to_send())
    connect = amf0.encode("connect", 1.0, {"app": "live\n"})
    (request,) = server.receive_data(encode_message(m.Message(m.COMMAND_AMF0, 0, 0, connect), 3, 128))
    assert isinstance(request, s.ConnectRequest)
    description = "invalid app " + "x" * 300
    server.reject_connect(request, description)
    replies = [e for e in client_session().receive_data(server.data_to_send()) if isinstance(e, CommandReply)]
    assert replies == [CommandReply("_error", 1.0, [None, {"level": "error", "code": "NetConnection.Connect.Rejected",
                                                          "description": description}])]


# ------------------------------------------------------------------------------------------- fuzzing

_NAMES = [
    "connect", "createStream", "publish", "play", "pause", "deleteStream", "closeStream", "FCPublish",
    "FCUnpublish", "releaseStream", "getStreamLength", "_result", "_error", "onStatus", "onFCPublish",
    "@setDataFrame", "onMetaData", "",
]
_amf_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(), st.sampled_from(_NAMES), st.text(max_size=8), st.just(amf0.UNDEFINED)
    ),
    lambda children: st.one_of(
        st.dictionaries(st.sampled_from(["app", "tcUrl", "level", "code", "x"]), children, max_size=3),
        st.lists(children, max_size=3),
    ),
    max_leaves=6,
)
_commands = st.one_of(
    st.tuples(st.sampled_from(_NAMES), st.lists(_amf_values, max_size=5)).map(lambda c: amf0.encode(c[0], *c[1])),
    st.lists(_amf_values, max_size=6).map(lambda vs: amf0.encode(*vs)),
)
_aggregates = st.lists(
    st.tuples(st.sampled_from([m.AUDIO, m.VIDEO, m.DATA_AMF0, m.COMMAND_AMF0, m.AGGREGATE, 1, 4, 99]),
              st.integers(0, 2**32 - 1), st.binary(max_size=12)),
    max_size=4,
).map(lambda subs: b"".join(sub_message(t, ts, body) for t, ts, body in subs))
_payloads = st.one_of(_commands, st.binary(max_size=40), _aggregates)
_types = st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22])
_stream_ids = st.sampled_from([0, 1, 2])
_csids = st.sampled_from([3, 4, 5, 6, 8])
_messages = st.lists(
    st.one_of(
        st.tuples(st.just(m.COMMAND_AMF0), _stream_ids, _csids, _commands),  # commands are where the logic is
        st.tuples(_types, _stream_ids, _csids, _payloads),
    ),
    min_size=1,
    max_size=6,
)


def _wire(messages: list[tuple[int, int, int, bytes]]) -> bytes:
    return b"".join(encode_message(m.Message(t, sid, 0, payload), csid, 128) for t, sid, csid, payload in messages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_fuzz_server_session(messages: list[tuple[int, int, int, bytes]]) -> None:
    session = publishing_session()
    try:
        for ev in session.receive_data(_wire(messages)):
            if isinstance(ev, s.PublishRequest):
                session.accept_publish(ev)
            elif isinstance(ev, s.PlayRequest):
                session.accept_play(ev)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_fuzz_client_session(messages: list[tuple[int, int, int, bytes]]) -> None:
    try:
        client_session().receive_data(_wire(messages))
    except ProtocolError:
        pass
