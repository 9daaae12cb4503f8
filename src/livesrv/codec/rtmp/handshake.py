"""The RTMP handshake, simple and complex (HMAC-SHA256 digest), as sans-IO state machines.

Server: C0+C1 in -> S0+S1+S2 out at once -> C2 in -> done. Client: C0+C1 out -> S0+S1 in -> C2 out -> S2 in
-> done. Bytes that arrive after the last handshake packet belong to the chunk stream and are kept in
``leftover`` (clients commonly pipeline ``connect`` right behind C2).

The "complex" handshake is not in the published RTMP spec; Flash Player, FMLE and some hardware encoders
send it, and Flash Player refuses to play H.264/AAC from a server that does not answer it. A 1536-byte C1/S1
is ``time(4) version(4)`` then two 764-byte blocks, a key block and a digest block, in either order:

* schema 0: key block at 8, digest block at 772; the digest offset is ``sum(c1[772:776]) % 728 + 776``;
* schema 1: digest block at 8, key block at 772; the digest offset is ``sum(c1[8:12]) % 728 + 12``.

The 32-byte digest is HMAC-SHA256 over the other 1504 bytes, keyed with the first 30 bytes of the "Genuine
Adobe Flash Player 001" key (client) or the first 36 bytes of the "Genuine Adobe Flash Media Server 001" key
(server). The answer S2 (or C2) is 1504 random bytes followed by HMAC(HMAC(full key, peer digest), those 1504
bytes). C2 is not validated here, as SRS, nginx-rtmp and FFmpeg do not: several clients get it wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from livesrv.codec.errors import HandshakeError

__all__ = ["ServerHandshake", "ClientHandshake", "HANDSHAKE_SIZE", "RTMP_VERSION"]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32
# Bytes covered by a digest: the packet without its 32 digest bytes.
_DIGESTED_SIZE = HANDSHAKE_SIZE - DIGEST_SIZE

_KEY_SUFFIX = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_SUFFIX  # 62 bytes
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_SUFFIX  # 68 bytes
_FP_DIGEST_KEY = GENUINE_FP_KEY[:30]
_FMS_DIGEST_KEY = GENUINE_FMS_KEY[:36]

# Version fields (bytes 4..7 of C1/S1): nonzero announces the digest handshake.
SERVER_VERSION = 0x04050001
CLIENT_VERSION = 0x80000702  # what Flash Player 10+ sends

_U32 = struct.Struct(">I")
_ENCRYPTED_VERSIONS = (6, 8)


def _digest_offset(packet: bytes | bytearray, schema: int) -> int:
    """Where the 32 digest bytes sit in a C1/S1 for the given schema (see the module docstring)."""
    if schema == 0:
        return sum(packet[772:776]) % 728 + 776
    return sum(packet[8:12]) % 728 + 12


def _hmac(key: bytes, data: bytes | bytearray) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    return _hmac(key, bytes(packet[:offset]) + bytes(packet[offset + DIGEST_SIZE :]))


def _find_digest(packet: bytes, key: bytes, schemas: tuple[int, ...] = (1, 0)) -> tuple[int, bytes] | None:
    """Return ``(schema, digest)`` if the packet carries a digest made with ``key``, else None."""
    for schema in schemas:
        offset = _digest_offset(packet, schema)
        digest = packet[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(digest, _packet_digest(packet, offset, key)):
            return schema, digest
    return None


def _sign(packet: bytearray, schema: int, key: bytes) -> bytes:
    """Write the digest into ``packet`` in place and return it."""
    offset = _digest_offset(packet, schema)
    digest = _packet_digest(packet, offset, key)
    packet[offset : offset + DIGEST_SIZE] = digest
    return digest


def _response(random_part: bytes, peer_digest: bytes, full_key: bytes) -> bytes:
    """S2 / C2 of the digest handshake: proves we know the full key and saw the peer's digest."""
    return random_part + _hmac(_hmac(full_key, peer_digest), random_part)


def _random(random_bytes: Callable[[int], bytes], n: int) -> bytes:
    data = random_bytes(n)
    if len(data) != n:
        raise RuntimeError(f"random_bytes({n}) returned {len(data)} bytes")
    return data


def _check_version(version: int, who: str) -> None:
    if version == RTMP_VERSION:
        return
    if version in _ENCRYPTED_VERSIONS:
        raise HandshakeError(f"{who} asked for encrypted RTMPE (version {version}), which is not supported")
    raise HandshakeError(f"{who} sent unsupported RTMP version {version}, expected {RTMP_VERSION}")


class ServerHandshake:
    """Answers a client's handshake; detects and answers the digest variant."""

    __slots__ = ("_random_bytes", "_epoch", "_buf", "_out", "_state", "_complex", "_leftover")

    # States: waiting for C0+C1, waiting for C2, done.
    _C0C1, _C2, _DONE = range(3)

    def __init__(self, *, random_bytes: Callable[[int], bytes] = os.urandom, epoch: int = 0) -> None:
        self._random_bytes = random_bytes
        self._epoch = epoch & 0xFFFFFFFF
        self._buf = bytearray()
        self._out = bytearray()
        self._state = self._C0C1
        self._complex = False
        self._leftover = bytearray()

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    @property
    def complex(self) -> bool:
        """The client sent a valid C1 digest and got the digest handshake back."""
        return self._complex

    @property
    def leftover(self) -> bytes:
        """Chunk-stream bytes that arrived with or after C2; the caller feeds them to the chunk decoder."""
        return bytes(self._leftover)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        if self._state == self._DONE:
            self._leftover += data
            return
        buf = self._buf
        buf += data
        if self._state == self._C0C1:
            if buf:
                _check_version(buf[0], "client")
            if len(buf) < 1 + HANDSHAKE_SIZE:
                return
            c1 = bytes(buf[1 : 1 + HANDSHAKE_SIZE])
            del buf[: 1 + HANDSHAKE_SIZE]
            self._out += self._answer(c1)
            self._state = self._C2
        if self._state == self._C2 and len(buf) >= HANDSHAKE_SIZE:
            self._leftover += buf[HANDSHAKE_SIZE:]
            buf.clear()
            self._state = self._DONE

    def _answer(self, c1: bytes) -> bytes:
        s1 = bytearray(_U32.pack(self._epoch))
        found = _find_digest(c1, _FP_DIGEST_KEY)
        if found is None:
            s1 += bytes(4)
            s1 += _random(self._random_bytes, HANDSHAKE_SIZE - 8)
            return bytes((RTMP_VERSION,)) + bytes(s1) + c1
        schema, c1_digest = found
        self._complex = True
        s1 += _U32.pack(SERVER_VERSION)
        s1 += _random(self._random_bytes, HANDSHAKE_SIZE - 8)
        _sign(s1, schema, _FMS_DIGEST_KEY)
        s2 = _response(_random(self._random_bytes, _DIGESTED_SIZE), c1_digest, GENUINE_FMS_KEY)
        return bytes((RTMP_VERSION,)) + bytes(s1) + s2


class ClientHandshake:
    """Opens a handshake to a server, optionally with the Flash Player digest (schema 1)."""

    __slots__ = (
        "_complex",
        "_random_bytes",
        "_epoch",
        "_buf",
        "_out",
        "_state",
        "_leftover",
        "_server_digest_valid",
    )

    # States: initiate() not called yet, waiting for S0+S1, waiting for S2, done.
    _NEW, _S0S1, _S2, _DONE = range(4)

    def __init__(
        self, *, complex: bool = False, random_bytes: Callable[[int], bytes] = os.urandom, epoch: int = 0
    ) -> None:
        self._complex = complex
        self._random_bytes = random_bytes
        self._epoch = epoch & 0xFFFFFFFF
        self._buf = bytearray()
        self._out = bytearray()
        self._state = self._NEW
        self._leftover = bytearray()
        self._server_digest_valid = False

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    @property
    def complex(self) -> bool:
        return self._complex

    @property
    def server_digest_valid(self) -> bool:
        """S1 carried a digest made with the FMS key (only ever true for a complex handshake)."""
        return self._server_digest_valid

    @property
    def leftover(self) -> bytes:
        """Chunk-stream bytes that arrived after S2."""
        return bytes(self._leftover)

    def initiate(self) -> bytes:
        """Returns C0+C1; call once, before feeding the server's bytes."""
        if self._state != self._NEW:
            raise RuntimeError("ClientHandshake.initiate() called twice")
        c1 = bytearray(_U32.pack(self._epoch))
        c1 += _U32.pack(CLIENT_VERSION if self._complex else 0)
        c1 += _random(self._random_bytes, HANDSHAKE_SIZE - 8)
        if self._complex:
            _sign(c1, 1, _FP_DIGEST_KEY)
        self._state = self._S0S1
        return bytes((RTMP_VERSION,)) + bytes(c1)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        if self._state == self._DONE:
            self._leftover += data
            return
        if self._state == self._NEW:
            # A server never speaks first; treat it as the peer's fault so only HandshakeError escapes.
            raise HandshakeError("server sent data before the client handshake was initiated")
        buf = self._buf
        buf += data
        if self._state == self._S0S1:
            if buf:
                _check_version(buf[0], "server")
            if len(buf) < 1 + HANDSHAKE_SIZE:
                return
            s1 = bytes(buf[1 : 1 + HANDSHAKE_SIZE])
            del buf[: 1 + HANDSHAKE_SIZE]
            self._out += self._answer(s1)
            self._state = self._S2
        if self._state == self._S2 and len(buf) >= HANDSHAKE_SIZE:
            self._leftover += buf[HANDSHAKE_SIZE:]
            buf.clear()
            self._state = self._DONE

    def _answer(self, s1: bytes) -> bytes:
        if not self._complex:
            return s1
        found = _find_digest(s1, _FMS_DIGEST_KEY)
        if found is None:
            # An old or simple-only server: echoing S1 is what it expects.
            return s1
        self._server_digest_valid = True
        return _response(_random(self._random_bytes, _DIGESTED_SIZE), found[1], GENUINE_FP_KEY)
