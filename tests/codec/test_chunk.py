"""RTMP chunk stream tests: hand-written byte vectors, round-trip properties, fuzzing."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec.errors import ChunkError, ProtocolError, RTMPCommandError
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.chunk import ChunkDecoder, ChunkEncoder, encode_message
from livesrv.codec.rtmp.messages import Message

# --------------------------------------------------------------------------- hand-written bytes
# Spelled-out builders for the wire format, kept independent of the code under test.


def bh(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) % 256, (csid - 64) // 256])


def u24(x: int) -> bytes:
    return x.to_bytes(3, "big")


def h0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    return bh(0, csid) + u24(ts) + u24(length) + bytes([type_id]) + sid.to_bytes(4, "little")


def h1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    return bh(1, csid) + u24(delta) + u24(length) + bytes([type_id])


def h2(csid: int, delta: int) -> bytes:
    return bh(2, csid) + u24(delta)


def h3(csid: int) -> bytes:
    return bh(3, csid)


def be32(x: int) -> bytes:
    return struct.pack(">I", x)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def decode_all(data: bytes, step: int = 0, decoder: ChunkDecoder | None = None) -> list[Message]:
    dec = decoder or ChunkDecoder()
    if not step:
        return dec.feed(data)
    out: list[Message] = []
    for i in range(0, len(data), step):
        out += dec.feed(data[i : i + step])
    return out


# --------------------------------------------------------------------------- fmt 0 and fmt 3 continuations


VIDEO_300 = payload(300)
VIDEO_300_WIRE = (
    h0(6, 1000, 300, 9, 1) + VIDEO_300[:128] + h3(6) + VIDEO_300[128:256] + h3(6) + VIDEO_300[256:]
)


@pytest.mark.parametrize("step", [0, 1, 7, 128, 141])
def test_300_byte_video_at_chunk_size_128(step: int) -> None:
    assert decode_all(VIDEO_300_WIRE, step) == [Message(9, 1, 1000, VIDEO_300)]


def test_encode_message_matches_vector() -> None:
    assert encode_message(Message(9, 1, 1000, VIDEO_300), 6, 128) == VIDEO_300_WIRE


def test_chunk_encoder_first_message_matches_vector() -> None:
    assert ChunkEncoder(128).encode(Message(9, 1, 1000, VIDEO_300), 6) == VIDEO_300_WIRE


def test_exact_multiple_of_chunk_size_has_no_empty_chunk() -> None:
    data = payload(256)
    wire = h0(4, 0, 256, 8, 1) + data[:128] + h3(4) + data[128:]
    assert encode_message(Message(8, 1, 0, data), 4, 128) == wire
    assert decode_all(wire) == [Message(8, 1, 0, data)]


def test_zero_length_message() -> None:
    wire = h0(3, 5, 0, 18, 1) + h3(3)
    assert decode_all(wire) == [Message(18, 1, 5, b""), Message(18, 1, 10, b"")]
    assert encode_message(Message(18, 1, 5, b""), 3, 128) == h0(3, 5, 0, 18, 1)


# --------------------------------------------------------------------------- header compression


def test_fmt1_fmt2_fmt3_headers() -> None:
    a, b, c, d, e = (payload(n, n) for n in (10, 12, 12, 12, 12))
    wire = (
        h0(4, 1000, 10, 8, 1) + a
        + h1(4, 23, 12, 8) + b  # ts 1023
        + h2(4, 20) + c  # ts 1043, same length
        + h3(4) + d  # ts 1063: delta 20 reused
        + h3(4) + e  # ts 1083
    )  # fmt: skip
    assert decode_all(wire) == [
        Message(8, 1, 1000, a),
        Message(8, 1, 1023, b),
        Message(8, 1, 1043, c),
        Message(8, 1, 1063, d),
        Message(8, 1, 1083, e),
    ]


def test_fmt1_changes_type_keeps_stream_id() -> None:
    wire = h0(5, 0, 3, 18, 7) + b"abc" + h1(5, 0, 2, 20) + b"xy"
    assert decode_all(wire) == [Message(18, 7, 0, b"abc"), Message(20, 7, 0, b"xy")]


def test_fmt3_new_message_after_fmt0_adds_the_absolute_field() -> None:
    """As FFmpeg and SRS read it: the fmt 0 field becomes the delta of a following fmt 3."""
    wire = h0(4, 100, 2, 8, 1) + b"ab" + h3(4) + b"cd"
    assert decode_all(wire) == [Message(8, 1, 100, b"ab"), Message(8, 1, 200, b"cd")]


def test_chunk_encoder_compresses() -> None:
    enc = ChunkEncoder(128)
    a = enc.encode(Message(8, 1, 1000, b"x" * 10), 4)
    b = enc.encode(Message(8, 1, 1023, b"y" * 12), 4)
    c = enc.encode(Message(8, 1, 1043, b"z" * 12), 4)
    d = enc.encode(Message(8, 1, 1063, b"w" * 12), 4)
    e = enc.encode(Message(8, 1, 1000, b"v" * 12), 4)  # backwards: fresh fmt 0
    f = enc.encode(Message(8, 2, 1020, b"u" * 12), 4)  # other message stream: fmt 0
    assert a == h0(4, 1000, 10, 8, 1) + b"x" * 10
    assert b == h1(4, 23, 12, 8) + b"y" * 12
    assert c == h2(4, 20) + b"z" * 12
    assert d == h3(4) + b"w" * 12
    assert e == h0(4, 1000, 12, 8, 1) + b"v" * 12
    assert f == h0(4, 1020, 12, 8, 2) + b"u" * 12
    # Right after a fmt 0 the encoder never uses fmt 3 for a new message (decoders disagree there).
    g = enc.encode(Message(8, 2, 2040, b"t" * 12), 4)
    assert g == h2(4, 1020) + b"t" * 12


# --------------------------------------------------------------------------- extended timestamps


def test_extended_timestamp_fmt0_repeated_on_continuations() -> None:
    ts = 0x01000000
    data = payload(300, 1)
    wire = (
        h0(6, 0xFFFFFF, 300, 9, 1) + be32(ts) + data[:128]
        + h3(6) + be32(ts) + data[128:256]
        + h3(6) + be32(ts) + data[256:]
    )  # fmt: skip
    assert encode_message(Message(9, 1, ts, data), 6, 128) == wire
    assert ChunkEncoder(128).encode(Message(9, 1, ts, data), 6) == wire
    for step in (0, 1, 5, 130):
        assert decode_all(wire, step) == [Message(9, 1, ts, data)]


def test_extended_timestamp_exactly_0xffffff() -> None:
    wire = h0(4, 0xFFFFFF, 1, 8, 1) + be32(0xFFFFFF) + b"a"
    assert encode_message(Message(8, 1, 0xFFFFFF, b"a"), 4, 128) == wire
    assert decode_all(wire) == [Message(8, 1, 0xFFFFFF, b"a")]


def test_extended_timestamp_not_repeated_on_continuations() -> None:
    """Some older encoders omit it: the decoder sees the bytes are not the timestamp and keeps them."""
    ts = 0x12345678
    data = payload(300, 2)
    wire = h0(6, 0xFFFFFF, 300, 9, 1) + be32(ts) + data[:128] + h3(6) + data[128:256] + h3(6) + data[256:]
    for step in (0, 1, 3):
        assert decode_all(wire, step) == [Message(9, 1, ts, data)]


def test_extended_delta_and_fmt3_new_message_reads_fresh_value() -> None:
    """fmt 3 after an extended header carries its own 4 bytes, used as the delta (FFmpeg writes this)."""
    wire = (
        h0(4, 10, 1, 8, 1) + b"a"
        + h2(4, 0xFFFFFF) + be32(0x01000000) + b"b"  # ts 10 + 0x01000000
        + h3(4) + be32(0x02000000) + b"c"  # fresh delta
        + h2(4, 5) + b"d"
        + h3(4) + b"e"  # no extended field any more: delta 5 again
    )  # fmt: skip
    assert decode_all(wire) == [
        Message(8, 1, 10, b"a"),
        Message(8, 1, 0x0100000A, b"b"),
        Message(8, 1, 0x0300000A, b"c"),
        Message(8, 1, 0x0300000F, b"d"),
        Message(8, 1, 0x03000014, b"e"),
    ]


def test_chunk_encoder_extended_delta() -> None:
    enc = ChunkEncoder(4)
    enc.encode(Message(8, 1, 10, b"aaaaaa"), 4)
    wire = enc.encode(Message(8, 1, 10 + 0x01000000, b"bbbbbb"), 4)
    assert wire == h2(4, 0xFFFFFF) + be32(0x01000000) + b"bbbb" + h3(4) + be32(0x01000000) + b"bb"


def test_timestamp_wraps_mod_2_32() -> None:
    wire = h0(4, 0xFFFFFF, 1, 8, 1) + be32(0xFFFFFFF0) + b"a" + h2(4, 0x20) + b"b" + h3(4) + b"c"
    assert [msg.timestamp for msg in decode_all(wire)] == [0xFFFFFFF0, 0x10, 0x30]


# --------------------------------------------------------------------------- chunk stream id forms


@pytest.mark.parametrize(
    ("csid", "basic"),
    [
        (2, b"\x02"),
        (63, b"\x3f"),
        (64, b"\x00\x00"),
        (319, b"\x00\xff"),
        (320, b"\x01\x00\x01"),
        (65599, b"\x01\xff\xff"),
    ],
)
def test_csid_forms(csid: int, basic: bytes) -> None:
    data = payload(200, csid)
    wire = basic + h0(csid, 7, 200, 9, 1)[len(basic) :] + data[:128] + bytes([0xC0 | basic[0]]) + basic[1:] + data[128:]
    assert encode_message(Message(9, 1, 7, data), csid, 128) == wire
    for step in (0, 1):
        assert decode_all(wire, step) == [Message(9, 1, 7, data)]


def test_three_byte_form_for_small_csid_is_accepted() -> None:
    wire = b"\x01\x00\x00" + u24(1) + u24(1) + b"\x08" + bytes(4) + b"a" + h1(64, 1, 1, 8) + b"b"
    assert decode_all(wire) == [Message(8, 0, 1, b"a"), Message(8, 0, 2, b"b")]


@pytest.mark.parametrize("csid", [0, 1, 65600, -1])
def test_encoder_rejects_bad_csid(csid: int) -> None:
    with pytest.raises(ValueError):
        encode_message(Message(8, 1, 0, b""), csid, 128)


# --------------------------------------------------------------------------- control messages applied by the decoder


def test_set_chunk_size_applies_to_the_next_chunk() -> None:
    data = payload(300, 3)
    wire = (
        h0(2, 0, 4, 1, 0) + be32(200)
        + h0(6, 0, 300, 9, 1) + data[:200] + h3(6) + data[200:]
    )  # fmt: skip
    for step in (0, 1, 17):
        dec = ChunkDecoder()
        assert decode_all(wire, step, dec) == [Message(1, 0, 0, be32(200)), Message(9, 1, 0, data)]
        assert dec.chunk_size == 200


def test_set_chunk_size_mid_message_on_another_csid() -> None:
    """A chunk size change between two chunks of one message applies to the rest of that message."""
    data = payload(300, 4)
    wire = h0(6, 0, 300, 9, 1) + data[:128] + h0(2, 0, 4, 1, 0) + be32(4096) + h3(6) + data[128:]
    assert decode_all(wire) == [Message(1, 0, 0, be32(4096)), Message(9, 1, 0, data)]


def test_abort_discards_partial_message() -> None:
    data = payload(300, 5)
    wire = (
        h0(6, 0, 300, 9, 1) + data[:128]
        + h0(2, 0, 4, 2, 0) + be32(6)
        + h0(6, 40, 3, 9, 1) + b"new"
    )  # fmt: skip
    assert decode_all(wire) == [Message(2, 0, 0, be32(6)), Message(9, 1, 40, b"new")]


def test_abort_of_idle_or_unknown_csid_is_harmless() -> None:
    wire = h0(2, 0, 4, 2, 0) + be32(9) + h0(2, 0, 4, 2, 0) + be32(2)
    assert len(decode_all(wire)) == 2


def test_interleaved_chunk_streams() -> None:
    a, v = payload(200, 6), payload(300, 7)
    wire = (
        h0(6, 80, 300, 9, 1) + v[:128]
        + h0(4, 70, 200, 8, 1) + a[:128]
        + h3(6) + v[128:256]
        + h3(4) + a[128:]
        + h3(6) + v[256:]
    )  # fmt: skip
    for step in (0, 1, 50):
        assert decode_all(wire, step) == [Message(8, 1, 70, a), Message(9, 1, 80, v)]


def test_header_mid_message_is_a_continuation() -> None:
    data = payload(200, 8)
    wire = h0(6, 5, 200, 9, 1) + data[:128] + h1(6, 99, 200, 9) + data[128:]
    assert decode_all(wire) == [Message(9, 1, 5, data)]


def test_bytes_received_counts_everything() -> None:
    dec = ChunkDecoder()
    dec.feed(VIDEO_300_WIRE[:10])
    dec.feed(VIDEO_300_WIRE[10:])
    dec.feed(b"")
    dec.feed(b"\x06")
    assert dec.bytes_received == len(VIDEO_300_WIRE) + 1


# --------------------------------------------------------------------------- errors


def test_unannounced_csid() -> None:
    for wire in (h1(5, 0, 1, 8) + b"a", h2(5, 0) + b"a", h3(5) + b"a"):
        with pytest.raises(ChunkError, match="chunk stream 5 never announced"):
            ChunkDecoder().feed(wire)


def test_message_too_long() -> None:
    dec = ChunkDecoder(max_message_size=1000)
    with pytest.raises(ChunkError, match="message length 1001 exceeds limit 1000"):
        dec.feed(h0(4, 0, 1001, 9, 1))
    dec = ChunkDecoder(max_message_size=1000)
    dec.feed(h0(4, 0, 10, 9, 1) + bytes(10))
    with pytest.raises(ChunkError, match="exceeds limit"):
        dec.feed(h1(4, 0, 5000, 9))


@pytest.mark.parametrize("value", [0, 0x80000000, 0xFFFFFFFF, 16 * 1024 * 1024 + 1])
def test_bad_set_chunk_size(value: int) -> None:
    with pytest.raises(ChunkError, match="chunk size"):
        ChunkDecoder().feed(h0(2, 0, 4, 1, 0) + be32(value))


def test_largest_set_chunk_size_accepted() -> None:
    dec = ChunkDecoder()
    dec.feed(h0(2, 0, 4, 1, 0) + be32(16 * 1024 * 1024))
    assert dec.chunk_size == 16 * 1024 * 1024


@pytest.mark.parametrize("type_id", [1, 2])
def test_short_control_payload(type_id: int) -> None:
    with pytest.raises(ChunkError):
        ChunkDecoder().feed(h0(2, 0, 3, type_id, 0) + b"\x00\x00\x01")


def test_too_many_chunk_streams() -> None:
    dec = ChunkDecoder(max_chunk_streams=3)
    dec.feed(b"".join(h0(c, 0, 1, 8, 1) + b"a" for c in (3, 4, 5)))
    dec.feed(h0(3, 0, 1, 8, 1) + b"b")  # known ones are fine
    with pytest.raises(ChunkError, match="too many chunk streams"):
        dec.feed(h0(6, 0, 1, 8, 1) + b"a")


def test_length_change_mid_message() -> None:
    with pytest.raises(ChunkError, match="changed"):
        ChunkDecoder().feed(h0(6, 0, 200, 9, 1) + bytes(128) + h1(6, 0, 300, 9))


def test_error_is_sticky() -> None:
    dec = ChunkDecoder()
    with pytest.raises(ChunkError):
        dec.feed(h3(9))
    with pytest.raises(ChunkError):
        dec.feed(VIDEO_300_WIRE)


# --------------------------------------------------------------------------- messages.py


def test_control_builders() -> None:
    assert m.set_chunk_size(4096) == Message(1, 0, 0, be32(4096))
    assert m.abort(6) == Message(2, 0, 0, be32(6))
    assert m.ack(2**32 + 5) == Message(3, 0, 0, be32(5))
    assert m.window_ack_size(2500000) == Message(5, 0, 0, be32(2500000))
    assert m.set_peer_bandwidth(2500000) == Message(6, 0, 0, be32(2500000) + b"\x02")
    assert m.set_peer_bandwidth(10, 0).payload == be32(10) + b"\x00"
    assert m.user_control(m.STREAM_BEGIN, 1) == Message(4, 0, 0, b"\x00\x00" + be32(1))
    assert m.user_control(m.SET_BUFFER_LENGTH, 1, 3000).payload == b"\x00\x03" + be32(1) + be32(3000)
    assert m.user_control(m.PING_REQUEST, 123).payload == b"\x00\x06" + be32(123)
    assert m.MessageType.VIDEO == m.VIDEO == 9
    assert m.UserControlEvent.PING_RESPONSE == m.PING_RESPONSE == 7


def test_control_builders_reject_bad_arguments() -> None:
    for call in (
        lambda: m.set_chunk_size(0),
        lambda: m.set_chunk_size(0x80000000),
        lambda: m.set_peer_bandwidth(1, 3),
        lambda: m.user_control(m.STREAM_BEGIN),
        lambda: m.user_control(m.SET_BUFFER_LENGTH, 1),
        lambda: m.window_ack_size(-1),
    ):
        with pytest.raises(ValueError):
            call()


def test_control_parsers() -> None:
    assert m.parse_u32(be32(4096)) == 4096
    assert m.parse_set_peer_bandwidth(be32(5000) + b"\x01") == (5000, 1)
    assert m.parse_user_control(b"\x00\x03" + be32(1) + be32(3000)) == (3, (1, 3000))
    assert m.parse_user_control(b"\x00\x07" + be32(99)) == (m.PING_RESPONSE, (99,))
    assert m.parse_user_control(b"\x00\x1a") == (26, ())  # SWF verification request: no data
    assert m.parse_user_control(b"\x00\x1f" + be32(1)) == (31, (1,))
    for msg in (m.user_control(m.STREAM_EOF, 3), m.user_control(m.PING_REQUEST, 2**32 - 1)):
        event, values = m.parse_user_control(msg.payload)
        assert m.user_control(event, *values) == msg


@pytest.mark.parametrize(
    "call",
    [
        lambda: m.parse_u32(b"\x00\x00\x01"),
        lambda: m.parse_set_peer_bandwidth(be32(1)),
        lambda: m.parse_set_peer_bandwidth(be32(1) + b"\x03"),
        lambda: m.parse_user_control(b"\x00"),
        lambda: m.parse_user_control(b"\x00\x03" + be32(1)),
        lambda: m.parse_user_control(b"\x00\x06\x00"),
    ],
)
def test_control_parsers_reject_bad_payloads(call: object) -> None:
    with pytest.raises(RTMPCommandError):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- round-trip properties

CSIDS = st.sampled_from([2, 3, 4, 5, 6, 8, 63, 64, 65, 200, 319, 320, 1000, 65599])
TYPES = st.sampled_from([3, 4, 5, 6, 8, 9, 15, 18, 20, 22])
STREAM_IDS = st.one_of(st.sampled_from([0, 1, 2]), st.integers(min_value=0, max_value=2**32 - 1))
TIMESTAMPS = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0xFFFFF0, max_value=0x1000010),
    st.integers(min_value=0, max_value=2**32 - 1),
)
PAYLOADS = st.one_of(st.binary(max_size=40), st.integers(min_value=0, max_value=3000).map(lambda n: payload(n, n)))
CHUNK_SIZES = st.one_of(st.sampled_from([1, 2, 127, 128, 129, 4096, 60000]), st.integers(min_value=1, max_value=3000))

# Either a message on a chunk stream, or a switch of the sender's chunk size.
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.builds(Message, TYPES, STREAM_IDS, TIMESTAMPS, PAYLOADS), CSIDS),
        CHUNK_SIZES,
    ),
    max_size=25,
)


def realistic_timestamps(events: list[object], step: int) -> list[object]:
    """Monotonic per stream, as encoders send: exercises fmt 1/2/3 far more than random timestamps."""
    ts: dict[int, int] = {}
    out: list[object] = []
    for ev in events:
        if isinstance(ev, tuple):
            msg, csid = ev
            ts[csid] = (ts.get(csid, 0xFFFF00 if step % 2 else 0) + step) % 2**32
            out.append((Message(msg.type_id, msg.stream_id, ts[csid], msg.payload), csid))
        else:
            out.append(ev)
    return out


def serialize(events: list[object], initial_chunk_size: int, compressed: bool) -> tuple[bytes, list[Message]]:
    enc = ChunkEncoder(initial_chunk_size)
    chunk_size = initial_chunk_size
    parts: list[bytes] = []
    expected: list[Message] = []
    if initial_chunk_size != 128:
        ev0 = m.set_chunk_size(initial_chunk_size)
        parts.append(encode_message(ev0, 2, 128))
        expected.append(ev0)
    for ev in events:
        if isinstance(ev, tuple):
            msg, csid = ev
            parts.append(enc.encode(msg, csid) if compressed else encode_message(msg, csid, chunk_size))
            expected.append(msg)
        else:
            assert isinstance(ev, int)
            msg = m.set_chunk_size(ev)
            parts.append(enc.encode(msg, 2) if compressed else encode_message(msg, 2, chunk_size))
            expected.append(msg)
            chunk_size = enc.chunk_size = ev
    return b"".join(parts), expected


def split_feed(data: bytes, cuts: list[int]) -> list[Message]:
    dec = ChunkDecoder()
    out: list[Message] = []
    prev = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        out += dec.feed(data[prev:cut])
        prev = cut
    assert dec.bytes_received == len(data)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    EVENTS,
    st.sampled_from([128, 1, 50, 4096]),
    st.booleans(),
    st.one_of(st.none(), st.integers(min_value=0, max_value=0x2000000)),
    st.lists(st.integers(min_value=0, max_value=2**20), max_size=30),
)
def test_round_trip(
    events: list[object], initial: int, compressed: bool, ts_step: int | None, cuts: list[int]
) -> None:
    if ts_step is not None:
        events = realistic_timestamps(events, ts_step)
    data, expected = serialize(events, initial, compressed)
    assert split_feed(data, cuts) == expected


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=3))
def test_round_trip_byte_by_byte(chunk_size: int, seed: int) -> None:
    rng = random.Random(seed)
    events: list[object] = [chunk_size]
    for i in range(20):
        events.append((Message(rng.choice([8, 9]), 1, i * 33 + (0xFFFFF0 if seed == 3 else 0), payload(rng.randrange(500), i)), rng.choice([4, 6, 70])))
    data, expected = serialize(events, 128, bool(seed % 2))
    assert decode_all(data, 1) == expected


# --------------------------------------------------------------------------- the fast paths against the general one
# ChunkDecoder parses a read in place when nothing is held back and gathers a message whose continuation chunks
# follow it back to back in one join; ``fast=False`` decodes chunk by chunk through its buffer. Whatever the
# chunking, the interleaving of chunk streams and the cuts between reads, both must give the same messages,
# the same errors, and the same counts.


def message_chunks(msg: Message, csid: int, chunk_size: int, repeat_ext: bool) -> list[bytes]:
    """``msg`` as a fmt 0 chunk then fmt 3 continuations, spelled out (the extended timestamp repeated on the
    continuations, as FFmpeg and SRS send it, or not, as some older encoders do)."""
    ext = msg.timestamp >= 0xFFFFFF
    head = h0(csid, 0xFFFFFF if ext else msg.timestamp, len(msg.payload), msg.type_id, msg.stream_id)
    if ext:
        head += be32(msg.timestamp)
    cont = h3(csid) + (be32(msg.timestamp) if ext and repeat_ext else b"")
    data = msg.payload
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    return [head + pieces[0]] + [cont + piece for piece in pieces[1:]]


def decode_both(data: bytes, cuts: list[int], **limits: int) -> tuple[object, object]:
    """What each decoder returns read by read (or the error it ends with), and what it counted."""
    results = []
    for fast in (True, False):
        dec = ChunkDecoder(fast=fast, **limits)
        got: list[object] = []
        try:
            prev = 0
            for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
                got.append(dec.feed(data[prev:cut]))
                prev = cut
        except ChunkError as exc:
            got.append(str(exc))
        results.append((got, dec.bytes_received, dec.chunk_size))
    return results[0], results[1]


MEDIA_MESSAGES = st.lists(
    st.tuples(
        st.builds(Message, st.sampled_from([8, 9, 18]), st.sampled_from([0, 1]), TIMESTAMPS, PAYLOADS),
        st.sampled_from([3, 4, 6, 63, 64, 300, 400]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    MEDIA_MESSAGES,
    st.sampled_from([1, 7, 128, 129, 1000, 4096, 60000]),
    st.booleans(),
    st.booleans(),
    st.randoms(use_true_random=False),
    st.lists(st.integers(min_value=0, max_value=2**20), max_size=12),
)
def test_fast_and_general_paths_decode_the_same(
    messages: list[tuple[Message, int]], chunk_size: int, repeat_ext: bool, interleave: bool, rng: random.Random,
    cuts: list[int],
) -> None:
    """Messages on several chunk streams, whole or with their chunks interleaved at random, cut anywhere."""
    lanes: dict[int, list[bytes]] = {}
    for msg, csid in messages:
        lanes.setdefault(csid, []).extend(message_chunks(msg, csid, chunk_size, repeat_ext))
    chunks: list[bytes] = []
    if interleave:  # chunk streams interleaved chunk by chunk, each in its own order
        queues = [list(reversed(q)) for q in lanes.values()]
        while queues:
            q = rng.choice(queues)
            chunks.append(q.pop())
            if not q:
                queues.remove(q)
    else:
        chunks = [c for q in lanes.values() for c in q]
    data = encode_message(m.set_chunk_size(chunk_size), 2, 128) + b"".join(chunks)
    fast, general = decode_both(data, cuts)
    assert fast == general
    if not interleave and (repeat_ext or all(msg.timestamp < 0xFFFFFF for msg, _ in messages)):
        expected = [msg for csid in lanes for msg, c in messages if c == csid]
        assert [msg for out in fast[0] for msg in out][1:] == expected  # type: ignore[index]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([0, 1, 2, 3, 5]),
    st.integers(min_value=100, max_value=2000),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=6),
)
def test_fast_and_general_paths_refuse_the_same(held: int, size: int, cuts: list[int]) -> None:
    """Unfinished messages on other chunk streams, then a whole one: the bound on held bytes and the message
    length limit apply the same way on both paths."""
    start = b"".join(message_chunks(Message(9, 1, 0, payload(1000, k)), 10 + k, 128, True)[0] for k in range(held))
    whole = b"".join(message_chunks(Message(9, 1, 40, payload(size, 99)), 4, 128, True))
    fast, general = decode_both(start + whole, cuts, max_message_size=1500, max_pending=1024)
    assert fast == general


# --------------------------------------------------------------------------- fuzz


def fuzz_feed(data: bytes, cuts: list[int]) -> None:
    dec = ChunkDecoder(max_message_size=100_000)
    try:
        prev = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
            for msg in dec.feed(data[prev:cut]):
                assert isinstance(msg.payload, bytes)
                assert 0 <= msg.timestamp < 2**32
            prev = cut
    except ProtocolError as exc:
        assert isinstance(exc, ChunkError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=4000), max_size=10))
def test_fuzz_random_bytes(data: bytes, cuts: list[int]) -> None:
    fuzz_feed(data, cuts)


def _valid_stream(seed: int) -> bytes:
    rng = random.Random(seed)
    enc = ChunkEncoder(rng.choice([1, 16, 128]))
    parts = [m.set_chunk_size(enc.chunk_size)]
    out = [encode_message(parts[0], 2, 128)]
    for i in range(12):
        ts = rng.choice([i * 40, 0xFFFFF0 + i * 40, rng.randrange(2**32)])
        out.append(enc.encode(Message(rng.choice([8, 9, 4, 18, 20]), 1, ts, payload(rng.randrange(300), i)), rng.choice([2, 4, 6, 64, 320])))
    return b"".join(out)


VALID_STREAMS = [_valid_stream(seed) for seed in range(8)]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(VALID_STREAMS),
    st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=255), st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=8),
)
def test_fuzz_mutated_streams(stream: bytes, mutations: list[tuple[int, int, str]], cuts: list[int]) -> None:
    data = bytearray(stream)
    for where, value, how in mutations:
        i = where % (len(data) + 1)
        if how == "insert":
            data[i:i] = bytes([value])
        elif how == "delete":
            del data[i : i + 1]
        elif i < len(data):
            data[i] = value
    fuzz_feed(bytes(data), cuts)


def test_valid_streams_decode() -> None:
    """The fuzz corpus itself decodes without error."""
    for stream in VALID_STREAMS:
        fuzz_feed(stream, [])
        assert len(ChunkDecoder().feed(stream)) == 13


def test_unfinished_messages_are_bounded_across_chunk_streams() -> None:
    """Starting a large message on many chunk streams and finishing none is refused, not buffered."""
    from livesrv.codec.errors import ProtocolError

    dec = ChunkDecoder(max_message_size=1000, max_pending=300)

    def first_chunk(csid: int) -> bytes:  # fmt 0: the first 128 bytes of a 1000-byte message, never finished
        return bytes([csid]) + (0).to_bytes(3, "big") + (1000).to_bytes(3, "big") + bytes([9]) + \
            (1).to_bytes(4, "little") + b"x" * 128

    assert dec.feed(first_chunk(3)) == []
    assert dec.feed(first_chunk(4)) == []  # 256 bytes held
    with pytest.raises(ProtocolError, match="unfinished messages"):
        dec.feed(first_chunk(5))  # 384 > 300


def test_finished_and_aborted_messages_release_their_bytes() -> None:
    dec = ChunkDecoder(max_message_size=1000, max_pending=300)
    head = bytes([4]) + (0).to_bytes(3, "big") + (200).to_bytes(3, "big") + bytes([9]) + (1).to_bytes(4, "little")
    for _ in range(10):  # many messages, each briefly unfinished: the count goes back to zero each time
        out = dec.feed(head + b"y" * 128 + bytes([0xC4]) + b"y" * 72)
        assert len(out) == 1 and len(out[0].payload) == 200
    # an aborted message frees what it held
    abort = bytes([2]) + (0).to_bytes(3, "big") + (4).to_bytes(3, "big") + bytes([2]) + (0).to_bytes(4, "little") + (4).to_bytes(4, "big")
    for _ in range(10):
        assert dec.feed(head + b"z" * 128) == []
        assert [m.type_id for m in dec.feed(abort)] == [2]
