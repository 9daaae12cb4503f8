"""AMF0 (Action Message Format 0) encoder and decoder.

RTMP commands (``connect``, ``publish``, ``_result``, ``onStatus``...) and FLV script tags
(``@setDataFrame``/``onMetaData``) are sequences of AMF0 values. The value mapping is chosen so
that a decode/encode round trip of canonical bytes is byte-exact: objects keep insertion order,
ECMA arrays and typed objects keep their own Python types.

Every byte string either decodes or raises :class:`~livesrv.codec.errors.AMF0Error`; lengths
and counts read from the wire are checked against the bytes actually present before anything is
sliced or allocated. References (0x07) are refused on purpose: no RTMP encoder emits them and
shared or cyclic object graphs would let a peer build values that are exponentially expensive
to walk or re-encode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from livesrv.codec.errors import AMF0Error

__all__ = [
    "MAX_DEPTH",
    "UNDEFINED",
    "AMFDate",
    "ECMAArray",
    "TypedObject",
    "Undefined",
    "XMLDocument",
    "decode",
    "decode_all",
    "encode",
    "encode_value",
]

# Type markers (AMF0 specification, section 2.1).
NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS_OBJECT: Final = 0x11

#: Containers nested deeper than this are rejected, so hostile input cannot exhaust the stack.
MAX_DEPTH: Final = 64

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_OBJECT_END_BYTES: Final = b"\x00\x00\x09"


class Undefined:
    """AMF0 ``undefined``; distinct from ``null`` (None) so round trips stay byte-exact."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class ECMAArray(dict[str, Any]):
    """An associative array; its own type so it is re-encoded as 0x08 rather than as an object.

    ``onMetaData`` is conventionally an ECMA array and some players only accept that form.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


class TypedObject(dict[str, Any]):
    """An object with a registered class name (marker 0x10), kept so it re-encodes identically."""

    __slots__ = ("class_name",)

    def __init__(self, class_name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_name = class_name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedObject):
            return self.class_name == other.class_name and dict.__eq__(self, other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TypedObject({self.class_name!r}, {dict.__repr__(self)})"


class XMLDocument(str):
    """An XML document string (marker 0x0F); a str subclass so it re-encodes with its marker."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AMFDate:
    """A date: milliseconds since the Unix epoch plus the (deprecated, usually 0) tz offset."""

    ms: float
    tz: int = 0


# --------------------------------------------------------------------------- encoding


def encode(*values: Any) -> bytes:
    """Encode values back to back, as in an RTMP command message body."""
    out: list[bytes] = []
    for v in values:
        _encode_into(v, out, 0)
    return b"".join(out)


def encode_value(v: Any) -> bytes:
    out: list[bytes] = []
    _encode_into(v, out, 0)
    return b"".join(out)


def _encode_key(key: Any, out: list[bytes]) -> None:
    if not isinstance(key, str):
        raise TypeError(f"AMF0 property names must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 property name longer than 65535 bytes")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _encode_props(d: dict[Any, Any], out: list[bytes], depth: int) -> None:
    for k, v in d.items():
        _encode_key(k, out)
        _encode_into(v, out, depth)
    out.append(_OBJECT_END_BYTES)


def _encode_into(v: Any, out: list[bytes], depth: int) -> None:
    # Order matters: bool is an int subclass, and the dict/str subclasses must win over their bases.
    if v is None:
        out.append(b"\x05")
    elif v is True:
        out.append(b"\x01\x01")
    elif v is False:
        out.append(b"\x01\x00")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out.append(b"\x00")
        out.append(_DOUBLE.pack(v))
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        if isinstance(v, XMLDocument):
            out.append(b"\x0f" + _U32.pack(len(raw)))
        elif len(raw) > 0xFFFF:
            out.append(b"\x0c" + _U32.pack(len(raw)))
        else:
            out.append(b"\x02" + _U16.pack(len(raw)))
        out.append(raw)
    elif isinstance(v, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"AMF0 value nested deeper than {MAX_DEPTH}")
        if isinstance(v, ECMAArray):
            out.append(b"\x08" + _U32.pack(len(v)))
        elif isinstance(v, TypedObject):
            out.append(b"\x10")
            _encode_key(v.class_name, out)
        else:
            out.append(b"\x03")
        _encode_props(v, out, depth + 1)
    elif isinstance(v, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"AMF0 value nested deeper than {MAX_DEPTH}")
        out.append(b"\x0a" + _U32.pack(len(v)))
        for item in v:
            _encode_into(item, out, depth + 1)
    elif v is UNDEFINED:
        out.append(b"\x06")
    elif isinstance(v, AMFDate):
        out.append(b"\x0b" + _DATE.pack(v.ms, v.tz))
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as AMF0")


# --------------------------------------------------------------------------- decoding


class _Reader:
    """Cursor over one buffer; a class so the recursive decoder shares state without globals."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def need(self, n: int) -> int:
        """Reserve ``n`` bytes and return their start; checked before any slice is taken."""
        p = self.pos
        if n > self.end - p:
            raise AMF0Error(f"truncated AMF0 data: need {n} bytes at offset {p}, have {self.end - p}")
        self.pos = p + n
        return p

    def u16(self) -> int:
        p = self.need(2)
        d = self.data
        return (d[p] << 8) | d[p + 1]

    def u32(self) -> int:
        p = self.need(4)
        return int.from_bytes(self.data[p : p + 4], "big")

    def utf8(self, n: int) -> str:
        p = self.need(n)
        return str(self.data[p : p + n], "utf-8", "replace")

    def value(self, depth: int) -> Any:
        p = self.need(1)
        marker = self.data[p]
        if marker == NUMBER:
            p = self.need(8)
            return _DOUBLE.unpack_from(self.data, p)[0]
        if marker == BOOLEAN:
            p = self.need(1)
            return self.data[p] != 0
        if marker == STRING:
            return self.utf8(self.u16())
        if marker == OBJECT:
            return self.props({}, depth)
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == ECMA_ARRAY:
            count = self.u32()
            return self.props(ECMAArray(), depth, count)
        if marker == STRICT_ARRAY:
            return self.strict_array(depth)
        if marker == DATE:
            p = self.need(10)
            ms, tz = _DATE.unpack_from(self.data, p)
            return AMFDate(ms, tz)
        if marker == LONG_STRING:
            return self.utf8(self.u32())
        if marker == XML_DOCUMENT:
            return XMLDocument(self.utf8(self.u32()))
        if marker == TYPED_OBJECT:
            name = self.utf8(self.u16())
            return self.props(TypedObject(name), depth)
        if marker == OBJECT_END:
            raise AMF0Error(f"unexpected AMF0 object-end marker at offset {p}")
        if marker == REFERENCE:
            raise AMF0Error("AMF0 references are not supported")
        if marker == AVMPLUS_OBJECT:
            raise AMF0Error("AMF3 (avmplus-object) values are not supported inside AMF0")
        raise AMF0Error(f"unsupported AMF0 type marker 0x{marker:02x} at offset {p}")

    def props(self, target: dict[str, Any], depth: int, count: int = -1) -> dict[str, Any]:
        """Read name/value pairs until the object-end marker.

        ``count`` is the ECMA array's declared length, which is only advisory (many encoders
        write 0); it is used solely to accept arrays whose end marker was omitted.
        """
        if depth >= MAX_DEPTH:
            raise AMF0Error(f"AMF0 value nested deeper than {MAX_DEPTH}")
        data = self.data
        depth += 1
        n = 0
        while True:
            if self.pos == self.end and 0 < count <= n:
                return target  # ECMA array cut off right after its declared entries.
            key = self.utf8(self.u16())
            if not key:
                p = self.pos
                if p < self.end and data[p] == OBJECT_END:
                    self.pos = p + 1
                    return target
            target[key] = self.value(depth)
            n += 1

    def strict_array(self, depth: int) -> list[Any]:
        if depth >= MAX_DEPTH:
            raise AMF0Error(f"AMF0 value nested deeper than {MAX_DEPTH}")
        count = self.u32()
        # Every element takes at least one byte: refuse counts the buffer cannot possibly hold.
        if count > self.end - self.pos:
            raise AMF0Error(f"AMF0 strict array claims {count} elements, only {self.end - self.pos} bytes left")
        depth += 1
        return [self.value(depth) for _ in range(count)]


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode the value starting at ``offset``; returns it and the offset just past it."""
    if not 0 <= offset < len(data):
        raise AMF0Error(f"no AMF0 value at offset {offset} (buffer holds {len(data)} bytes)")
    reader = _Reader(data, offset)
    value = reader.value(0)
    return value, reader.pos


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode consecutive values until the buffer is exhausted (an RTMP command body)."""
    reader = _Reader(data, 0)
    values: list[Any] = []
    while reader.pos < reader.end:
        values.append(reader.value(0))
    return values
