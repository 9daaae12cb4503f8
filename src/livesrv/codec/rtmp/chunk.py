"""RTMP chunk stream: reassembly of interleaved chunks into messages, and the two ways to write them.

Wire format of a chunk: basic header (fmt + chunk stream id, 1/2/3 bytes), message header (11/7/3/0 bytes
for fmt 0/1/2/3), optional 4-byte extended timestamp, then at most ``chunk_size`` payload bytes.

Timestamp rules implemented (they follow what FFmpeg's rtmppkt.c reads and writes, which SRS and librtmp
interoperate with):

* fmt 0 carries the absolute timestamp; fmt 1 and 2 carry a delta added to the previous message's
  timestamp on that chunk stream, modulo 2**32.
* The 24-bit field (absolute or delta) is the "timestamp field". 0xFFFFFF means the real value follows as a
  32-bit extended timestamp; the chunk stream then remembers it "uses the extended field".
* fmt 3 that starts a new message reuses the previous length, type, stream id and timestamp field of the
  chunk stream, and adds that field as a delta - even when the previous header was a fmt 0, whose field is
  an absolute time (that is what FFmpeg and SRS do). If the previous header used an extended field, the fmt 3
  header carries a fresh 4-byte extended value, read unconditionally and used as the delta (FFmpeg writes a
  fmt 3 whenever the 24-bit fields are both 0xFFFFFF, so that value may differ from the previous one).
* fmt 3 continuation chunks of a message whose header used the extended field: FFmpeg, librtmp and SRS
  repeat the 4 bytes; some older encoders do not. As SRS does, the decoder peeks: if the next 4 bytes equal
  the extended value of the message's header they are the repeated field and are skipped, otherwise they are
  payload. Both encoders here always repeat it. (The peek needs 4 bytes, so such a chunk is only decoded
  once 4 bytes follow its basic header, even if the sender omitted the field and the chunk is shorter.)
* A fmt 0/1/2 header on a chunk stream whose message is still incomplete is taken as a continuation
  (lenient, as SRS is) provided the length does not change; its timestamp field is ignored.

The decoder applies Set Chunk Size and Abort itself, as soon as they are complete, because they change how
the very next bytes parse; it still returns them so the session sees them.

Two shortcuts make the common case cheap without changing what is decoded (``fast=False`` turns them off, so
tests can check that both ways give the same messages): a read that starts on a chunk boundary with nothing
held back is parsed where it lies, and only an unfinished tail is copied into the decoder's buffer; and a
message whose fmt 3 continuation chunks all follow its first chunk back to back, on a one-byte chunk stream id
(what every encoder sends: a message is written whole), is gathered with one join instead of chunk by chunk
through a bytearray. Anything else (interleaved chunk streams, a header other than fmt 3 mid-message, a
message cut by the read) takes the general path.
"""

from __future__ import annotations

import struct

from livesrv.codec.errors import ChunkError
from livesrv.codec.rtmp.messages import ABORT, MAX_CHUNK_SIZE, SET_CHUNK_SIZE, Message

__all__ = [
    "ChunkDecoder",
    "ChunkEncoder",
    "encode_message",
    "DEFAULT_CHUNK_SIZE",
    "MAX_MESSAGE_LENGTH",
    "MIN_CSID",
    "MAX_CSID",
]

DEFAULT_CHUNK_SIZE = 128
MAX_MESSAGE_LENGTH = 0xFFFFFF  # the message length field has 24 bits
MIN_CSID = 2
MAX_CSID = 65599
_EXTENDED = 0xFFFFFF
_MASK32 = 0xFFFFFFFF

_U32 = struct.Struct(">I")
_LE32 = struct.Struct("<I")
_U24_PAIR = struct.Struct(">HBBH")  # two 24-bit big-endian fields as (hi16, lo8, hi8, lo16)


class _InStream:
    """What the decoder remembers of one chunk stream between chunks."""

    __slots__ = ("timestamp", "field", "ext", "length", "type_id", "stream_id", "partial")

    def __init__(self) -> None:
        self.timestamp = 0  # absolute timestamp of the current (or last) message
        self.field = 0  # last timestamp field: absolute after fmt 0, delta after fmt 1/2/3
        self.ext = False  # the last message header's 24-bit field was 0xFFFFFF
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.partial: bytearray | None = None  # payload of a message still being reassembled


class ChunkDecoder:
    """Bytes in, complete messages out. Any malformed input raises :class:`ChunkError`.

    Once it has raised, the decoder is unusable (the byte stream has lost its framing) and every later
    ``feed`` raises the same error again.
    """

    __slots__ = (
        "_buf",
        "_pos",
        "_chunk_size",
        "_streams",
        "_max_message_size",
        "_max_chunk_streams",
        "_max_pending",
        "_pending",
        "_failed",
        "_fast",
        "bytes_received",
    )

    def __init__(
        self,
        *,
        max_message_size: int = 16 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_pending: int | None = None,
        fast: bool = True,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _InStream] = {}
        self._max_message_size = max_message_size
        self._max_chunk_streams = max_chunk_streams
        # Bytes of unfinished messages held across all chunk streams: without this bound a peer could start a
        # maximal message on every chunk stream and never finish any (64 x max_message_size per connection).
        self._max_pending = 2 * max_message_size if max_pending is None else max_pending
        self._pending = 0
        self._failed: ChunkError | None = None
        self._fast = fast  # the shortcuts of the module docstring; off only to test them against the general path
        #: Every byte ever fed, for acknowledgements (the caller wraps it to 32 bits).
        self.bytes_received = 0

    @property
    def chunk_size(self) -> int:
        """The peer's current chunk size, as last set by a Set Chunk Size message."""
        return self._chunk_size

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        if self._failed is not None:
            raise ChunkError(f"chunk stream already broken: {self._failed}")
        size = len(data)
        self.bytes_received += size
        buf = self._buf
        pos = self._pos
        if pos >= len(buf) and self._fast:
            # Nothing held back (the usual case: a publisher writes whole messages): parse the caller's bytes
            # in place and keep only what is left of an unfinished chunk, instead of copying the whole read.
            if pos:
                buf.clear()
                self._pos = 0
            out: list[Message] = []
            if size:
                mv = memoryview(data)
                try:
                    end = self._parse(data, mv, 0, out)
                    if end < size:
                        buf += mv[end:]
                except ChunkError as exc:
                    self._failed = exc
                    raise
                finally:
                    mv.release()
            return out
        if pos:
            # Compact only when the consumed prefix is at least as large as what remains, so the copying
            # stays linear in the bytes fed however small the pieces are.
            if pos >= len(buf):
                buf.clear()
                pos = 0
            elif pos * 2 >= len(buf):
                del buf[:pos]
                pos = 0
        buf += data
        out = []
        if pos < len(buf):
            mv = memoryview(buf)
            try:
                pos = self._parse(buf, mv, pos, out)
            except ChunkError as exc:
                self._failed = exc
                raise
            finally:
                mv.release()
        self._pos = pos
        return out

    def _parse(self, buf: bytes | bytearray | memoryview, mv: memoryview, pos: int, out: list[Message]) -> int:
        """Consume every complete chunk from ``pos``; return where the first incomplete one starts."""
        n = len(buf)
        fast = self._fast
        streams = self._streams
        chunk_size = self._chunk_size
        max_size = self._max_message_size
        u32 = _U32.unpack_from
        le32 = _LE32.unpack_from

        while pos < n:
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid < 2:
                if csid == 0:
                    if p + 1 > n:
                        break
                    csid = 64 + buf[p]
                    p += 1
                else:
                    if p + 2 > n:
                        break
                    csid = 64 + buf[p] + (buf[p + 1] << 8)
                    p += 2
            st = streams.get(csid)
            if st is None and fmt != 0:
                raise ChunkError(f"chunk stream {csid} never announced (fmt {fmt} chunk before any fmt 0)")

            if fmt == 3:
                assert st is not None
                partial = st.partial
                if partial is None:
                    # A new message that repeats the previous header of this chunk stream.
                    length = st.length
                    if st.ext:
                        if p + 4 > n:
                            break
                        field = u32(buf, p)[0]
                        p += 4
                    else:
                        field = st.field
                    new = True
                    timestamp = (st.timestamp + field) & _MASK32
                    ext = st.ext
                    type_id = st.type_id
                    stream_id = st.stream_id
                else:
                    length = st.length
                    new = False
                    if st.ext:
                        if p + 4 > n:
                            break
                        if u32(buf, p)[0] == st.field:
                            p += 4
            else:
                if fmt == 0:
                    if p + 11 > n:
                        break
                    # The 24-bit fields are read as 32-bit words that start one byte early.
                    field = u32(buf, p - 1)[0] & 0xFFFFFF
                    length = u32(buf, p + 2)[0] & 0xFFFFFF
                    type_id = buf[p + 6]
                    stream_id = le32(buf, p + 7)[0]
                    p += 11
                elif fmt == 1:
                    assert st is not None
                    if p + 7 > n:
                        break
                    field = u32(buf, p - 1)[0] & 0xFFFFFF
                    length = u32(buf, p + 2)[0] & 0xFFFFFF
                    type_id = buf[p + 6]
                    stream_id = st.stream_id
                    p += 7
                else:
                    assert st is not None
                    if p + 3 > n:
                        break
                    field = u32(buf, p - 1)[0] & 0xFFFFFF
                    length = st.length
                    type_id = st.type_id
                    stream_id = st.stream_id
                    p += 3
                ext = field == _EXTENDED
                if ext:
                    if p + 4 > n:
                        break
                    field = u32(buf, p)[0]
                    p += 4
                if length > max_size:
                    raise ChunkError(f"message length {length} exceeds limit {max_size} (chunk stream {csid})")
                partial = st.partial if st is not None else None
                if partial is None:
                    new = True
                    if fmt == 0:
                        timestamp = field
                    else:
                        assert st is not None
                        timestamp = (st.timestamp + field) & _MASK32
                else:
                    assert st is not None
                    new = False
                    if length != st.length:
                        raise ChunkError(
                            f"message length changed from {st.length} to {length} in the middle of a message "
                            f"on chunk stream {csid}"
                        )

            have = len(partial) if partial is not None else 0
            size = length - have
            if size > chunk_size:
                size = chunk_size
            end = p + size
            if end > n:
                break

            # The whole chunk is here: commit the header.
            if new:
                if st is None:
                    if len(streams) >= self._max_chunk_streams:
                        raise ChunkError(f"too many chunk streams (limit {self._max_chunk_streams})")
                    st = streams[csid] = _InStream()
                st.timestamp = timestamp
                st.field = field
                st.ext = ext
                st.length = length
                st.type_id = type_id
                st.stream_id = stream_id
            assert st is not None
            pos = end
            if have + size < length:
                if partial is None and fast and csid < 64:
                    got = _gather(buf, mv, p, end, n, length, chunk_size, 0xC0 | csid, field if ext else -1)
                    # The general path would refuse the message if its chunks took the held bytes over the
                    # bound on the way: so does this one, by leaving it to the general path.
                    if got is not None and self._pending + (length - 1) // chunk_size * chunk_size <= self._max_pending:
                        payload, pos = got
                        type_id = st.type_id
                        out.append(Message(type_id, st.stream_id, st.timestamp, payload))
                        if type_id == SET_CHUNK_SIZE or type_id == ABORT:
                            chunk_size = self._control(type_id, payload)
                        continue
                self._pending += size
                if self._pending > self._max_pending:
                    raise ChunkError(
                        f"{self._pending} bytes of unfinished messages held (limit {self._max_pending})"
                    )
                if partial is None:
                    st.partial = bytearray(mv[p:end])
                else:
                    partial += mv[p:end]
                continue

            if partial is None:
                payload = bytes(mv[p:end])
            else:
                self._pending -= have
                partial += mv[p:end]
                payload = bytes(partial)
                st.partial = None
            type_id = st.type_id
            out.append(Message(type_id, st.stream_id, st.timestamp, payload))
            if type_id == SET_CHUNK_SIZE or type_id == ABORT:
                chunk_size = self._control(type_id, payload)
        return pos

    def _control(self, type_id: int, payload: bytes) -> int:
        """Apply a Set Chunk Size or an Abort at once; return the chunk size for what follows."""
        if type_id == SET_CHUNK_SIZE:
            self._chunk_size = _parse_chunk_size(payload)
        else:
            if len(payload) < 4:
                raise ChunkError(f"abort message of {len(payload)} bytes, expected 4")
            target = self._streams.get(_U32.unpack_from(payload, 0)[0])
            if target is not None and target.partial is not None:
                self._pending -= len(target.partial)
                target.partial = None
        return self._chunk_size


def _gather(
    buf: bytes | bytearray | memoryview, mv: memoryview, p: int, end: int, n: int, length: int, chunk_size: int,
    cont: int, ext_field: int,
) -> tuple[bytes, int] | None:
    """The payload of a message whose first chunk is ``buf[p:end]`` and whose continuation chunks follow it back to
    back with the one-byte fmt 3 header ``cont`` (and, when ``ext_field >= 0``, the repeated 4-byte extended
    timestamp ``ext_field``), and where it ends; None when they are not all there in that form."""
    rest = length - (end - p)
    count = (rest + chunk_size - 1) // chunk_size
    header = 1 if ext_field < 0 else 5
    if end + rest + count * header > n:
        return None
    parts = [mv[p:end]]
    append = parts.append
    q = end
    while rest > 0:
        if buf[q] != cont:
            return None
        if header == 5:
            if _U32.unpack_from(buf, q + 1)[0] != ext_field:
                return None
        q += header
        take = chunk_size if rest > chunk_size else rest
        append(mv[q : q + take])
        q += take
        rest -= take
    return b"".join(parts), q


def _parse_chunk_size(payload: bytes) -> int:
    if len(payload) < 4:
        raise ChunkError(f"set chunk size message of {len(payload)} bytes, expected 4")
    value: int = _U32.unpack_from(payload)[0]
    if value & 0x80000000:
        raise ChunkError(f"set chunk size 0x{value:08x} has the reserved high bit set")
    if value == 0:
        raise ChunkError("set chunk size 0")
    if value > MAX_CHUNK_SIZE:
        raise ChunkError(f"set chunk size {value} exceeds limit {MAX_CHUNK_SIZE}")
    return value


# --------------------------------------------------------------------------- encoding

_basic_cache: dict[int, bytes] = {}


def _basic_header(fmt: int, csid: int) -> bytes:
    key = (fmt << 17) | csid
    header = _basic_cache.get(key)
    if header is not None:
        return header
    if MIN_CSID <= csid <= 63:
        header = bytes(((fmt << 6) | csid,))
    elif 64 <= csid <= 319:
        header = bytes((fmt << 6, csid - 64))
    elif 320 <= csid <= MAX_CSID:
        header = bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
    else:
        raise ValueError(f"chunk stream id {csid} outside {MIN_CSID}..{MAX_CSID}")
    _basic_cache[key] = header
    return header


def _check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} outside 1..{MAX_CHUNK_SIZE}")


def _check_message(length: int, timestamp: int) -> None:
    if length > MAX_MESSAGE_LENGTH:
        raise ValueError(f"message of {length} bytes does not fit the 24-bit length field")
    if not 0 <= timestamp <= _MASK32:
        raise ValueError(f"timestamp {timestamp} outside 0..2**32-1")


def _chunked(first_header: bytes, cont_header: bytes, payload: bytes, chunk_size: int) -> bytes:
    length = len(payload)
    if length <= chunk_size:
        return first_header + payload
    mv = memoryview(payload)
    parts = [first_header, mv[:chunk_size]]
    append = parts.append
    for off in range(chunk_size, length, chunk_size):
        append(cont_header)
        append(mv[off : off + chunk_size])
    return b"".join(parts)


def encode_message(msg: Message, csid: int, chunk_size: int) -> bytes:
    """Serialize with a fmt 0 header then fmt 3 continuations, independent of anything sent before.

    Statelessness is the point: a media message encoded once can be written to every viewer that uses the
    same chunk size, whatever else each connection sent on that chunk stream. The extended timestamp, when
    used, is repeated on every continuation chunk.
    """
    payload = msg.payload
    length = len(payload)
    ts = msg.timestamp
    _check_message(length, ts)
    if chunk_size < 1:
        raise ValueError(f"chunk size {chunk_size} must be positive")
    if ts >= _EXTENDED:
        ext = _U32.pack(ts)
        head = (
            _basic_header(0, csid)
            + _U24_PAIR.pack(0xFFFF, 0xFF, length >> 16, length & 0xFFFF)
            + bytes((msg.type_id,))
            + _LE32.pack(msg.stream_id)
            + ext
        )
        cont = _basic_header(3, csid) + ext
    else:
        head = (
            _basic_header(0, csid)
            + _U24_PAIR.pack(ts >> 8, ts & 0xFF, length >> 16, length & 0xFFFF)
            + bytes((msg.type_id,))
            + _LE32.pack(msg.stream_id)
        )
        cont = _basic_header(3, csid)
    return _chunked(head, cont, payload, chunk_size)


class _OutStream:
    """What the encoder last sent on one chunk stream, mirrored from the decoder's point of view."""

    __slots__ = ("timestamp", "field", "length", "type_id", "stream_id", "delta_mode")

    def __init__(self, timestamp: int, field: int, length: int, type_id: int, stream_id: int, delta: bool) -> None:
        self.timestamp = timestamp
        self.field = field
        self.length = length
        self.type_id = type_id
        self.stream_id = stream_id
        self.delta_mode = delta


class ChunkEncoder:
    """Stateful encoder that compresses headers (fmt 1/2/3) like FFmpeg and librtmp do.

    A fmt 3 header is only used to start a message after a fmt 1/2/3 header, never right after a fmt 0:
    decoders disagree on whether the field of a fmt 0 is then a delta (FFmpeg, SRS) or absolute (librtmp).
    A timestamp going backwards, or a new message stream id, gets a fresh fmt 0.
    """

    __slots__ = ("_chunk_size", "_streams")

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        _check_chunk_size(chunk_size)
        self._chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        """Change only after the Set Chunk Size message announcing it has been encoded."""
        _check_chunk_size(value)
        self._chunk_size = value

    def encode(self, msg: Message, csid: int) -> bytes:
        payload = msg.payload
        length = len(payload)
        ts = msg.timestamp
        type_id = msg.type_id
        stream_id = msg.stream_id
        _check_message(length, ts)
        st = self._streams.get(csid)
        if st is None or stream_id != st.stream_id or ts < st.timestamp:
            field = ts
            f24 = field if field < _EXTENDED else _EXTENDED
            header = (
                _basic_header(0, csid)
                + _U24_PAIR.pack(f24 >> 8, f24 & 0xFF, length >> 16, length & 0xFFFF)
                + bytes((type_id,))
                + _LE32.pack(stream_id)
            )
            if st is None:
                self._streams[csid] = _OutStream(ts, field, length, type_id, stream_id, False)
            else:
                st.timestamp, st.field, st.length, st.type_id, st.stream_id = ts, field, length, type_id, stream_id
                st.delta_mode = False
        else:
            field = ts - st.timestamp
            f24 = field if field < _EXTENDED else _EXTENDED
            if length != st.length or type_id != st.type_id:
                header = (
                    _basic_header(1, csid)
                    + _U24_PAIR.pack(f24 >> 8, f24 & 0xFF, length >> 16, length & 0xFFFF)
                    + bytes((type_id,))
                )
            elif field == st.field and st.delta_mode:
                header = _basic_header(3, csid)
            else:
                header = _basic_header(2, csid) + _U32.pack(f24)[1:]
            st.timestamp, st.field, st.length, st.type_id = ts, field, length, type_id
            st.delta_mode = True
        if field >= _EXTENDED:
            ext = _U32.pack(field)
            return _chunked(header + ext, _basic_header(3, csid) + ext, payload, self._chunk_size)
        return _chunked(header, _basic_header(3, csid), payload, self._chunk_size)
