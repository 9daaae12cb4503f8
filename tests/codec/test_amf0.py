"""AMF0 codec tests: one byte table shared by decode and encode, round-trip properties, fuzzing."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec import amf0
from livesrv.codec.amf0 import UNDEFINED, AMFDate, ECMAArray, TypedObject, XMLDocument
from livesrv.codec.errors import AMF0Error, ProtocolError

# --------------------------------------------------------------------------- hand-written bytes
# Tiny spelled-out builders for the wire format, kept independent of the code under test.


def s(text: str) -> bytes:
    raw = text.encode()
    return b"\x02" + struct.pack(">H", len(raw)) + raw


def k(name: str) -> bytes:
    raw = name.encode()
    return struct.pack(">H", len(raw)) + raw


def n(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


END = b"\x00\x00\x09"
NULL = b"\x05"

FFMPEG_CONNECT_VALUES = [
    "connect",
    1.0,
    {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; Lavf61.7.100)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
        "fourCcList": ["av01", "vp09", "hvc1"],
    },
]
FFMPEG_CONNECT_BYTES = (
    s("connect")
    + n(1.0)
    + b"\x03"
    + k("app")
    + s("live")
    + k("type")
    + s("nonprivate")
    + k("flashVer")
    + s("FMLE/3.0 (compatible; Lavf61.7.100)")
    + k("tcUrl")
    + s("rtmp://127.0.0.1:1935/live")
    + k("fourCcList")
    + b"\x0a\x00\x00\x00\x03"
    + s("av01")
    + s("vp09")
    + s("hvc1")
    + END
)

CONNECT_RESULT_VALUES = [
    "_result",
    1.0,
    {"fmsVer": "FMS/3,5,3,888", "capabilities": 127.0, "mode": 1.0},
    {
        "level": "status",
        "code": "NetConnection.Connect.Success",
        "description": "Connection succeeded",
        "objectEncoding": 0.0,
        "data": ECMAArray({"version": "3,5,3,888", "srs_server": "livesrv"}),
    },
]
CONNECT_RESULT_BYTES = (
    s("_result")
    + n(1.0)
    + b"\x03"
    + k("fmsVer")
    + s("FMS/3,5,3,888")
    + k("capabilities")
    + n(127.0)
    + k("mode")
    + n(1.0)
    + END
    + b"\x03"
    + k("level")
    + s("status")
    + k("code")
    + s("NetConnection.Connect.Success")
    + k("description")
    + s("Connection succeeded")
    + k("objectEncoding")
    + n(0.0)
    + k("data")
    + b"\x08\x00\x00\x00\x02"
    + k("version")
    + s("3,5,3,888")
    + k("srs_server")
    + s("livesrv")
    + END
    + END
)

ON_STATUS_VALUES = [
    "onStatus",
    0.0,
    None,
    {"level": "status", "code": "NetStream.Publish.Start", "description": "Started publishing stream."},
]
ON_STATUS_BYTES = (
    s("onStatus")
    + n(0.0)
    + NULL
    + b"\x03"
    + k("level")
    + s("status")
    + k("code")
    + s("NetStream.Publish.Start")
    + k("description")
    + s("Started publishing stream.")
    + END
)

METADATA_VALUES = [
    "@setDataFrame",
    "onMetaData",
    ECMAArray(
        {
            "duration": 0.0,
            "width": 1280.0,
            "height": 720.0,
            "videodatarate": 2500.0,
            "framerate": 30.0,
            "videocodecid": 7.0,
            "audiodatarate": 128.0,
            "audiosamplerate": 44100.0,
            "audiosamplesize": 16.0,
            "stereo": True,
            "audiocodecid": 10.0,
            "encoder": "Lavf61.7.100",
            "filesize": 0.0,
        }
    ),
]
METADATA_BYTES = (
    s("@setDataFrame")
    + s("onMetaData")
    + b"\x08\x00\x00\x00\x0d"
    + k("duration")
    + n(0.0)
    + k("width")
    + n(1280.0)
    + k("height")
    + n(720.0)
    + k("videodatarate")
    + n(2500.0)
    + k("framerate")
    + n(30.0)
    + k("videocodecid")
    + n(7.0)
    + k("audiodatarate")
    + n(128.0)
    + k("audiosamplerate")
    + n(44100.0)
    + k("audiosamplesize")
    + n(16.0)
    + k("stereo")
    + b"\x01\x01"
    + k("audiocodecid")
    + n(10.0)
    + k("encoder")
    + s("Lavf61.7.100")
    + k("filesize")
    + n(0.0)
    + END
)

LONG_TEXT = "é" * 40000  # 80000 UTF-8 bytes: too long for a short string

# (id, values, canonical bytes): used by both the decode and the encode tests.
CASES: list[tuple[str, list[Any], bytes]] = [
    ("number-zero", [0.0], bytes.fromhex("00 0000000000000000")),
    ("number-one", [1.0], bytes.fromhex("00 3ff0000000000000")),
    ("number-negative", [-2.5], bytes.fromhex("00 c004000000000000")),
    ("number-inf", [math.inf], bytes.fromhex("00 7ff0000000000000")),
    ("boolean-true", [True], b"\x01\x01"),
    ("boolean-false", [False], b"\x01\x00"),
    ("string-empty", [""], b"\x02\x00\x00"),
    ("string", ["live"], b"\x02\x00\x04live"),
    ("string-utf8", ["é中"], b"\x02\x00\x05" + "é中".encode()),
    ("long-string", [LONG_TEXT], b"\x0c" + struct.pack(">I", 80000) + LONG_TEXT.encode()),
    ("object-empty", [{}], b"\x03" + END),
    ("object", [{"a": 1.0, "b": "x"}], b"\x03" + k("a") + n(1.0) + k("b") + s("x") + END),
    ("object-empty-key", [{"": None}], b"\x03\x00\x00\x05" + END),
    ("null", [None], b"\x05"),
    ("undefined", [UNDEFINED], b"\x06"),
    ("ecma-empty", [ECMAArray()], b"\x08\x00\x00\x00\x00" + END),
    ("ecma", [ECMAArray({"k": False})], b"\x08\x00\x00\x00\x01" + k("k") + b"\x01\x00" + END),
    ("strict-array-empty", [[]], b"\x0a\x00\x00\x00\x00"),
    ("strict-array", [[1.0, "a", None]], b"\x0a\x00\x00\x00\x03" + n(1.0) + s("a") + NULL),
    ("date", [AMFDate(1700000000000.0, 0)], b"\x0b" + struct.pack(">d", 1700000000000.0) + b"\x00\x00"),
    ("date-tz", [AMFDate(0.0, -60)], b"\x0b" + bytes(8) + b"\xff\xc4"),
    ("xml", [XMLDocument("<a/>")], b"\x0f\x00\x00\x00\x04<a/>"),
    ("typed-object", [TypedObject("Cls", {"x": 1.0})], b"\x10" + k("Cls") + k("x") + n(1.0) + END),
    ("nested", [{"o": {"l": [ECMAArray({"d": {}})]}}], (
        b"\x03" + k("o") + b"\x03" + k("l") + b"\x0a\x00\x00\x00\x01"
        + b"\x08\x00\x00\x00\x01" + k("d") + b"\x03" + END + END + END + END
    )),
    ("several", ["a", 2.0, None], s("a") + n(2.0) + NULL),
    ("ffmpeg-connect", FFMPEG_CONNECT_VALUES, FFMPEG_CONNECT_BYTES),
    ("connect-result", CONNECT_RESULT_VALUES, CONNECT_RESULT_BYTES),
    ("onStatus", ON_STATUS_VALUES, ON_STATUS_BYTES),
    ("setDataFrame-onMetaData", METADATA_VALUES, METADATA_BYTES),
]
CASE_IDS = [c[0] for c in CASES]


def same(a: Any, b: Any) -> bool:
    """Equality that also checks the container types that decide the wire encoding."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        if isinstance(a, TypedObject) and a.class_name != b.class_name:
            return False
        return list(a) == list(b) and all(same(a[x], b[x]) for x in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.mark.parametrize(("name", "values", "data"), CASES, ids=CASE_IDS)
def test_decode_all(name: str, values: list[Any], data: bytes) -> None:
    assert same(amf0.decode_all(data), values)
    assert same(amf0.decode_all(memoryview(data)), values)
    assert same(amf0.decode_all(bytearray(data)), values)


@pytest.mark.parametrize(("name", "values", "data"), CASES, ids=CASE_IDS)
def test_encode(name: str, values: list[Any], data: bytes) -> None:
    assert amf0.encode(*values) == data
    assert b"".join(amf0.encode_value(v) for v in values) == data


@pytest.mark.parametrize(("name", "values", "data"), CASES, ids=CASE_IDS)
def test_decode_offsets(name: str, values: list[Any], data: bytes) -> None:
    prefix = b"junk"
    offset = len(prefix)
    buf = prefix + data
    for v in values:
        got, offset = amf0.decode(buf, offset)
        assert same(got, v)
    assert offset == len(buf)


@pytest.mark.parametrize(("name", "values", "data"), CASES, ids=CASE_IDS)
def test_every_truncation_raises(name: str, values: list[Any], data: bytes) -> None:
    if len(values) != 1:
        return
    cuts = range(len(data)) if len(data) < 500 else [*range(300), *range(len(data) - 50, len(data))]
    for cut in cuts:
        if cut == len(data) - 3 and isinstance(values[0], ECMAArray) and values[0]:
            continue  # an ECMA array missing only its end marker is accepted on purpose
        with pytest.raises(AMF0Error):
            amf0.decode_all(data[:cut]) if cut else amf0.decode(data[:cut])


def test_encode_int_as_number_and_bool_as_boolean() -> None:
    assert amf0.encode(3) == n(3.0)
    assert amf0.encode(True) == b"\x01\x01"
    assert amf0.encode(False) != n(0.0)


def test_encode_tuple_as_strict_array() -> None:
    assert amf0.encode((1, "a")) == b"\x0a\x00\x00\x00\x02" + n(1.0) + s("a")


def test_encode_picks_long_string_at_boundary() -> None:
    assert amf0.encode("a" * 65535)[:3] == b"\x02\xff\xff"
    assert amf0.encode("a" * 65536)[:5] == b"\x0c\x00\x01\x00\x00"


def test_encode_rejects_unsupported_types() -> None:
    with pytest.raises(TypeError):
        amf0.encode(object())
    with pytest.raises(TypeError):
        amf0.encode({1: 2})
    with pytest.raises(ValueError):
        amf0.encode({"k" * 70000: 1})


def test_encode_rejects_too_deep_nesting() -> None:
    v: Any = []
    for _ in range(amf0.MAX_DEPTH + 1):
        v = [v]
    with pytest.raises(ValueError):
        amf0.encode(v)


def test_undefined_is_a_falsy_singleton() -> None:
    assert amf0.Undefined() is UNDEFINED
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"


def test_ecma_array_count_may_lie() -> None:
    # Real encoders often write 0 (or garbage) as the count; the end marker is what counts.
    for count in (0, 1, 7, 0xFFFFFFFF):
        data = b"\x08" + struct.pack(">I", count) + k("a") + n(1.0) + k("b") + n(2.0) + END
        assert same(amf0.decode_all(data), [ECMAArray({"a": 1.0, "b": 2.0})])


def test_ecma_array_missing_end_marker_after_declared_entries() -> None:
    data = b"\x08\x00\x00\x00\x01" + k("a") + n(1.0)
    assert same(amf0.decode_all(data), [ECMAArray({"a": 1.0})])
    with pytest.raises(AMF0Error):
        amf0.decode_all(b"\x08\x00\x00\x00\x02" + k("a") + n(1.0))
    with pytest.raises(AMF0Error):
        amf0.decode_all(b"\x03" + k("a") + n(1.0))


def test_boolean_nonzero_byte_is_true() -> None:
    assert amf0.decode_all(b"\x01\x7f") == [True]


def test_invalid_utf8_is_replaced() -> None:
    assert amf0.decode_all(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    "data",
    [
        b"\x04",  # movieclip
        b"\x07\x00\x00",  # reference
        b"\x09",  # object end at top level
        b"\x0d",  # unsupported
        b"\x0e",  # recordset
        b"\x11\x01",  # AMF3 switch
        b"\x12",
        b"\xff",
    ],
)
def test_unsupported_markers(data: bytes) -> None:
    with pytest.raises(AMF0Error):
        amf0.decode_all(data)


def test_lying_lengths() -> None:
    for data in (
        b"\x02\xff\xff" + b"a" * 10,
        b"\x0c\xff\xff\xff\xff" + b"a" * 10,
        b"\x0f\x00\x10\x00\x00abc",
        b"\x0a\xff\xff\xff\xff\x05\x05",
        b"\x03\xff\xffab",
        b"\x10\x00\x09abc",
    ):
        with pytest.raises(AMF0Error):
            amf0.decode_all(data)


def test_nesting_limit() -> None:
    ok = b"\x0a\x00\x00\x00\x01" * (amf0.MAX_DEPTH - 1) + b"\x05"
    assert amf0.decode_all(ok)
    for opener in (b"\x0a\x00\x00\x00\x01", b"\x03\x00\x01a", b"\x08\x00\x00\x00\x00\x00\x01a"):
        deep = opener * (amf0.MAX_DEPTH + 1) + b"\x05"
        with pytest.raises(AMF0Error):
            amf0.decode_all(deep)
    with pytest.raises(AMF0Error):
        amf0.decode_all(b"\x0a\x00\x00\x00\x01" * 100_000)


def test_decode_offset_out_of_range() -> None:
    for off in (-1, 5, 100):
        with pytest.raises(AMF0Error):
            amf0.decode(b"\x05\x05\x05\x05\x05", off)
    assert amf0.decode(b"\x05\x05", 1) == (None, 2)


def test_decode_all_empty() -> None:
    assert amf0.decode_all(b"") == []


# --------------------------------------------------------------------------- properties

keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.builds(AMFDate, st.floats(allow_nan=False), st.integers(-32768, 32767)),
    st.builds(XMLDocument, st.text(max_size=10)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=4).map(ECMAArray),
        st.builds(TypedObject, keys, st.dictionaries(keys, children, max_size=3)),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=4))
def test_roundtrip_values(vs: list[Any]) -> None:
    data = amf0.encode(*vs)
    back = amf0.decode_all(data)
    assert same(back, vs)
    assert amf0.encode(*back) == data


# Canonical bytes built directly from the wire format (not by the encoder under test).
canonical_scalars = st.one_of(
    st.just(b"\x05"),
    st.just(b"\x06"),
    st.sampled_from([b"\x01\x00", b"\x01\x01"]),
    st.floats(allow_nan=False).map(n),
    st.text(max_size=20).map(s),
    st.text(min_size=1, max_size=5).map(lambda t: b"\x0f" + struct.pack(">I", len(t.encode())) + t.encode()),
    st.tuples(st.floats(allow_nan=False), st.integers(-32768, 32767)).map(
        lambda p: b"\x0b" + struct.pack(">dh", *p)
    ),
)


def _props(pairs: list[tuple[str, bytes]]) -> bytes:
    seen: dict[str, bytes] = dict(pairs)  # duplicate names would not survive a dict
    return b"".join(k(name) + v for name, v in seen.items()) + END


def _canonical_containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    pairs = st.lists(st.tuples(keys, children), max_size=4)
    return st.one_of(
        st.lists(children, max_size=4).map(lambda xs: b"\x0a" + struct.pack(">I", len(xs)) + b"".join(xs)),
        pairs.map(lambda ps: b"\x03" + _props(ps)),
        pairs.map(lambda ps: b"\x08" + struct.pack(">I", len(dict(ps))) + _props(ps)),
        st.tuples(keys, pairs).map(lambda t: b"\x10" + k(t[0]) + _props(t[1])),
    )


canonical_values = st.recursive(canonical_scalars, _canonical_containers, max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(canonical_values, max_size=4).map(b"".join))
def test_roundtrip_canonical_bytes(data: bytes) -> None:
    assert amf0.encode(*amf0.decode_all(data)) == data


def test_nan_roundtrips_bytewise() -> None:
    data = n(math.nan)
    assert amf0.encode(*amf0.decode_all(data)) == data


# --------------------------------------------------------------------------- fuzzing

SEEDS = [data for _, _, data in CASES if len(data) < 2000]


def _decode_only_protocol_errors(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except ProtocolError as exc:
        assert isinstance(exc, AMF0Error)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_protocol_errors(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == 1:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == 2:
            del buf[pos : pos + draw(st.integers(1, 4))]
        else:
            del buf[pos:]
    return bytes(buf)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_valid_inputs(data: bytes) -> None:
    _decode_only_protocol_errors(data)
