"""RTMP handshake tests: simple and digest handshakes checked against digests computed here with hmac."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec.errors import HandshakeError, ProtocolError
from livesrv.codec.rtmp.handshake import ClientHandshake, ServerHandshake

SIZE = 1536

# The published constants (librtmp, FFmpeg, SRS all carry them): text, then the same 32 bytes.
SUFFIX = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
FP_KEY = b"Genuine Adobe Flash Player 001" + SUFFIX
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + SUFFIX


def sha(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def offset(block: bytes, schema: int) -> int:
    if schema == 0:
        return (block[772] + block[773] + block[774] + block[775]) % 728 + 776
    return (block[8] + block[9] + block[10] + block[11]) % 728 + 12


def digest_of(block: bytes, schema: int, key: bytes) -> bytes:
    off = offset(block, schema)
    return sha(key, block[:off] + block[off + 32 :])


def digest_valid(block: bytes, schema: int, key: bytes) -> bool:
    off = offset(block, schema)
    return block[off : off + 32] == digest_of(block, schema, key)


def signed_c1(schema: int, seed: int = 1, version: bytes = b"\x80\x00\x07\x02") -> bytes:
    """A Flash-Player-like C1 built by hand, with its digest at the schema's offset."""
    rng = random.Random(seed)
    block = bytearray(struct.pack(">I", 1234) + version + rng.randbytes(SIZE - 8))
    off = offset(block, schema)
    block[off : off + 32] = digest_of(bytes(block), schema, FP_KEY[:30])
    return bytes(block)


def counter_random() -> object:
    """Deterministic random_bytes: reproducible failures, and distinguishable from echoes."""
    rng = random.Random(42)
    return lambda n: rng.randbytes(n)


# --------------------------------------------------------------------------- simple handshake


def test_simple_handshake_server_echoes_c1() -> None:
    server = ServerHandshake(random_bytes=counter_random(), epoch=77)
    c1 = struct.pack(">II", 5, 0) + bytes(range(256)) * 6
    c1 = c1[:SIZE]
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    assert len(out) == 1 + 2 * SIZE
    assert out[0] == 3
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert struct.unpack(">II", s1[:8]) == (77, 0)
    assert s2 == c1
    assert not server.complex
    assert not server.done
    assert server.data_to_send() == b""
    server.receive_data(s1)  # C2: an echo of S1, but the server does not check
    assert server.done
    assert server.leftover == b""


def test_simple_handshake_byte_by_byte_with_pipelined_chunks() -> None:
    server = ServerHandshake()
    client = ClientHandshake()
    c0c1 = client.initiate()
    assert c0c1[0] == 3 and len(c0c1) == 1 + SIZE
    assert c0c1[5:9] == b"\x00\x00\x00\x00"
    for b in c0c1:
        server.receive_data(bytes([b]))
    s = server.data_to_send()
    assert len(s) == 1 + 2 * SIZE
    for i in range(0, len(s), 100):
        client.receive_data(s[i : i + 100])
        if i + 100 < 1 + SIZE:
            assert client.data_to_send() == b""
    assert client.done
    c2 = client.data_to_send()
    assert c2 == s[1 : 1 + SIZE]  # the simple client echoes S1
    server.receive_data(c2[:1000])
    assert not server.done
    server.receive_data(c2[1000:] + b"\x02connect...")
    assert server.done
    assert server.leftover == b"\x02connect..."
    server.receive_data(b"more")
    assert server.leftover == b"\x02connect...more"
    assert not client.server_digest_valid


def test_whole_exchange_in_one_buffer() -> None:
    server = ServerHandshake()
    client = ClientHandshake()
    c0c1 = client.initiate()
    server.receive_data(c0c1)
    client.receive_data(server.data_to_send() + b"S-chunks")
    server.receive_data(client.data_to_send() + b"C-chunks")
    assert server.done and client.done
    assert server.leftover == b"C-chunks"
    assert client.leftover == b"S-chunks"


def test_c0_c1_c2_at_once() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(SIZE) + bytes(SIZE) + b"tail")
    assert server.done
    assert len(server.data_to_send()) == 1 + 2 * SIZE
    assert server.leftover == b"tail"


# --------------------------------------------------------------------------- version byte


@pytest.mark.parametrize("version", [0, 1, 2, 4, 5, 7, 9, 0x10, 0xFF])
def test_bad_version_rejected(version: int) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match="version"):
        server.receive_data(bytes([version]))


@pytest.mark.parametrize("version", [6, 8])
def test_encrypted_versions_unsupported(version: int) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match="not supported"):
        server.receive_data(bytes([version]) + bytes(SIZE))


def test_client_rejects_bad_server_version() -> None:
    client = ClientHandshake()
    client.initiate()
    with pytest.raises(HandshakeError):
        client.receive_data(b"\x09" + bytes(2 * SIZE))


def test_client_rejects_data_before_initiate() -> None:
    with pytest.raises(HandshakeError):
        ClientHandshake().receive_data(b"\x03")


def test_initiate_twice_is_a_bug() -> None:
    client = ClientHandshake()
    client.initiate()
    with pytest.raises(RuntimeError):
        client.initiate()


# --------------------------------------------------------------------------- complex handshake, server side


def check_complex_answer(out: bytes, c1: bytes, schema: int) -> None:
    assert out[0] == 3
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert len(s1) == len(s2) == SIZE
    assert s1[4:8] != b"\x00\x00\x00\x00"
    # S1 is signed with the first 36 bytes of the FMS key, with the client's schema.
    assert digest_valid(s1, schema, FMS_KEY[:36])
    # S2 = random 1504 bytes + HMAC(HMAC(full FMS key, C1 digest), those bytes).
    c1_off = offset(c1, schema)
    c1_digest = c1[c1_off : c1_off + 32]
    assert s2[1504:] == sha(sha(FMS_KEY, c1_digest), s2[:1504])
    assert s2 != c1


@pytest.mark.parametrize("schema", [0, 1])
def test_server_answers_hand_built_c1(schema: int) -> None:
    c1 = signed_c1(schema)
    assert digest_valid(c1, schema, FP_KEY[:30])
    server = ServerHandshake(random_bytes=counter_random(), epoch=9)
    server.receive_data(b"\x03" + c1)
    assert server.complex
    out = server.data_to_send()
    check_complex_answer(out, c1, schema)
    assert struct.unpack(">I", out[1:5]) == (9,)
    server.receive_data(bytes(SIZE))
    assert server.done


def test_server_answers_client_handshake_c1() -> None:
    client = ClientHandshake(complex=True, random_bytes=counter_random())
    c0c1 = client.initiate()
    c1 = c0c1[1:]
    assert c1[4:8] == b"\x80\x00\x07\x02"
    assert digest_valid(c1, 1, FP_KEY[:30])  # schema 1, as Flash Player sends
    server = ServerHandshake()
    server.receive_data(c0c1)
    assert server.complex
    check_complex_answer(server.data_to_send(), c1, 1)


def test_known_schema0_digest_value() -> None:
    """A fixed vector, so a change in offset rules or key bytes cannot go unnoticed by both sides at once."""
    c1 = bytearray(SIZE)
    c1[772:776] = b"\x01\x02\x03\x04"  # sum 10 -> digest at 786
    assert offset(bytes(c1), 0) == 786
    c1[786:818] = sha(FP_KEY[:30], bytes(c1[:786]) + bytes(c1[818:]))
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    assert server.complex
    assert FP_KEY[:30] == b"Genuine Adobe Flash Player 001"
    assert len(FMS_KEY) == 68 and len(FP_KEY) == 62


@pytest.mark.parametrize("schema", [0, 1])
def test_bad_digest_falls_back_to_simple(schema: int) -> None:
    c1 = bytearray(signed_c1(schema))
    off = offset(bytes(c1), schema)
    c1[off] ^= 0x01
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    assert not server.complex
    out = server.data_to_send()
    assert out[1 + SIZE :] == bytes(c1)  # S2 echoes C1
    assert out[5:9] == b"\x00\x00\x00\x00"


def test_digest_with_wrong_key_falls_back() -> None:
    rng = random.Random(3)
    c1 = bytearray(b"\x00" * 4 + b"\x80\x00\x07\x02" + rng.randbytes(SIZE - 8))
    off = offset(bytes(c1), 1)
    c1[off : off + 32] = digest_of(bytes(c1), 1, FMS_KEY[:36])  # server key: not what a client uses
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    assert not server.complex


# --------------------------------------------------------------------------- complex handshake, client side


def test_complex_client_against_server() -> None:
    client = ClientHandshake(complex=True)
    server = ServerHandshake()
    server.receive_data(client.initiate())
    s = server.data_to_send()
    client.receive_data(s)
    assert client.done
    assert client.server_digest_valid
    c2 = client.data_to_send()
    # C2 = random 1504 + HMAC(HMAC(full FP key, S1 digest), those bytes).
    s1 = s[1 : 1 + SIZE]
    off = offset(s1, 1)
    assert c2[1504:] == sha(sha(FP_KEY, s1[off : off + 32]), c2[:1504])
    server.receive_data(c2)
    assert server.done and server.complex


@pytest.mark.parametrize("schema", [0, 1])
def test_complex_client_verifies_hand_built_s1(schema: int) -> None:
    client = ClientHandshake(complex=True)
    client.initiate()
    rng = random.Random(schema)
    s1 = bytearray(b"\x00" * 4 + b"\x04\x05\x00\x01" + rng.randbytes(SIZE - 8))
    off = offset(bytes(s1), schema)
    s1[off : off + 32] = digest_of(bytes(s1), schema, FMS_KEY[:36])
    client.receive_data(b"\x03" + bytes(s1))
    assert client.server_digest_valid
    assert not client.done
    client.receive_data(bytes(SIZE))
    assert client.done


def test_complex_client_with_simple_server_echoes_s1() -> None:
    client = ClientHandshake(complex=True)
    client.initiate()
    s1 = bytes(range(256)) * 6
    client.receive_data(b"\x03" + s1 + bytes(SIZE))
    assert client.done
    assert not client.server_digest_valid
    assert client.data_to_send() == s1


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=2000), st.booleans())
def test_fuzz_server(data: bytes, step: int, good_version: bool) -> None:
    if good_version:
        data = b"\x03" + data
    server = ServerHandshake()
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
            server.data_to_send()
    except ProtocolError as exc:
        assert isinstance(exc, HandshakeError)
    else:
        if len(data) >= 1 + 2 * SIZE:
            assert server.done
            assert server.leftover == data[1 + 2 * SIZE :]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=2000), st.booleans(), st.booleans())
def test_fuzz_client(data: bytes, step: int, complex_: bool, good_version: bool) -> None:
    if good_version:
        data = b"\x03" + data
    client = ClientHandshake(complex=complex_)
    client.initiate()
    try:
        for i in range(0, len(data), step):
            client.receive_data(data[i : i + step])
            client.data_to_send()
    except ProtocolError as exc:
        assert isinstance(exc, HandshakeError)
    else:
        if len(data) >= 1 + 2 * SIZE:
            assert client.done
            assert client.leftover == data[1 + 2 * SIZE :]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=SIZE - 1), st.integers(min_value=0, max_value=255), st.booleans())
def test_fuzz_mutated_complex_c1(pos: int, value: int, schema1: bool) -> None:
    """Any byte change in a signed C1 either keeps it valid (no-op change) or falls back to simple."""
    c1 = bytearray(signed_c1(1 if schema1 else 0, seed=pos))
    changed = c1[pos] != value
    c1[pos] = value
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1) + bytes(SIZE))
    assert server.done
    out = server.data_to_send()
    if not server.complex:
        assert out[1 + SIZE :] == bytes(c1)
    elif changed:
        # Only possible if the change moved the digest to where the other schema finds a valid one: never.
        pytest.fail("a modified C1 still validated")
