"""livesrv's own RTMP client against the running server: publish, play back byte-exactly, both handshakes.

The digest ("complex") handshake is also checked byte by byte here with an HMAC computation written from the
published descriptions (FFmpeg's rtmpproto.c, SRS, crtmpserver), independent of livesrv's handshake module.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import struct
from typing import Any

import pytest

from livesrv.codec import amf0
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.chunk import ChunkDecoder
from tests.helpers import wait_until
from tests.servers.rtmp_client import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    RawConn,
    RTMPClient,
    aac_frame,
    inter_frame,
    keyframe,
)

Media = tuple[int, int, bytes]  # (type, timestamp, payload)

METADATA: dict[str, Any] = {
    "width": 320.0, "height": 240.0, "framerate": 25.0, "videocodecid": 7.0, "audiocodecid": 10.0,
    "encoder": "livesrv test client",
}


def gop(first: int, frames: int) -> list[Media]:
    """One GOP at 25 fps: a keyframe bigger than any chunk size used here, inter frames, one AAC frame each."""
    out: list[Media] = []
    for n in range(first, first + frames):
        ts = 40 * n
        video = keyframe(n, 5000) if n == first else inter_frame(n, 300)
        out.append((m.VIDEO, ts, video))
        out.append((m.AUDIO, ts + 20, aac_frame(n)))
    return out


def received(client: RTMPClient) -> list[Media]:
    return [(msg.type_id, msg.timestamp, msg.payload) for msg in client.av()]


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(logging.getLogger("livesrv"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="livesrv")
    return caplog


@pytest.mark.parametrize(
    ("complex_handshake", "chunk_size"), [(True, 4096), (False, 128)], ids=["complex-handshake", "simple-handshake"]
)
async def test_publish_then_play_back(
    make_server, server_log: pytest.LogCaptureFixture, complex_handshake: bool, chunk_size: int  # type: ignore[no-untyped-def]
) -> None:
    app = await make_server()
    port = app.port("rtmp")
    pub = await RTMPClient.open(port, complex_handshake=complex_handshake, chunk_size=chunk_size)
    player: RTMPClient | None = None
    try:
        # The server answers a digest C1 with a digest S1 (and a plain C1 with a plain S1).
        assert (await pub.handshake()).server_digest_valid is complex_handshake
        await pub.publish("roundtrip", port=port)
        pub.send_metadata(METADATA)
        headers = [(m.VIDEO, 0, AVC_SEQUENCE_HEADER), (m.AUDIO, 0, AAC_SEQUENCE_HEADER)]
        first, second = gop(0, 10), gop(10, 10)
        for type_id, ts, payload in headers + first:
            pub.send_media(type_id, ts, payload)
        await pub.drain()
        await pub.barrier()  # the server has taken the whole first GOP

        player = await RTMPClient.open(port, complex_handshake=complex_handshake)
        assert (await player.handshake()).server_digest_valid is complex_handshake
        await player.play("roundtrip", port=port)
        # A viewer that joins mid-GOP gets metadata, sequence headers and the GOP so far at once ...
        await wait_until(lambda: len(player.av()) >= 2 + len(first), 10, "the GOP cache at the player")
        # ... then the live messages.
        for type_id, ts, payload in second:
            pub.send_media(type_id, ts, payload)
        await pub.drain()
        await wait_until(lambda: len(player.av()) >= 2 + len(first) + len(second), 10, "the second GOP")

        got = received(player)
        assert sorted(got[:2]) == sorted(headers), "sequence headers first"
        assert got[2:] == first + second, "every frame, byte-exact, in order, with its timestamp"
        data = [amf0.decode_all(msg.payload) for msg in player.media if msg.type_id == m.DATA_AMF0]
        meta = [values[1] for values in data if values and values[0] == "onMetaData"]
        assert meta == [METADATA]
        first_av = next(i for i, msg in enumerate(player.media) if msg.type_id in (m.AUDIO, m.VIDEO))
        assert any(msg.type_id == m.DATA_AMF0 for msg in player.media[:first_av]), "metadata before media"

        handshakes = [r.getMessage() for r in server_log.records if r.getMessage().startswith("event=handshake ")]
        assert len(handshakes) == 2 and all(f"complex={complex_handshake}" in h for h in handshakes), handshakes

    finally:
        await pub.close()
        if player is not None:
            await player.close()


# ----------------------------------------------------------------------- the digest handshake by hand

_SUFFIX = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)
PLAYER_KEY = b"Genuine Adobe Flash Player 001" + _SUFFIX
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _SUFFIX


def digest_at(packet: bytes, schema: int) -> int:
    """Schema 0 puts the digest block second (at 772), schema 1 first (at 8); its first 4 bytes place it."""
    base = 772 if schema == 0 else 8
    return base + 4 + sum(packet[base : base + 4]) % 728


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def without(packet: bytes, at: int) -> bytes:
    return packet[:at] + packet[at + 32 :]


def signed_c1(schema: int) -> tuple[bytes, bytes]:
    c1 = bytearray(struct.pack(">II", 0, 0x80000702) + os.urandom(1528))
    at = digest_at(c1, schema)
    digest = mac(PLAYER_KEY[:30], without(bytes(c1), at))
    c1[at : at + 32] = digest
    return bytes(c1), digest


async def read_exactly(conn: RawConn, n: int) -> bytes:
    return await asyncio.wait_for(conn.reader.readexactly(n), 10)


async def connect_works(conn: RawConn) -> None:
    """After C2, the chunk stream is open: connect gets its _result."""
    body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
    await conn.send(bytes([3]) + bytes(3) + len(body).to_bytes(3, "big") + bytes([m.COMMAND_AMF0]) + bytes(4) + body)
    decoder = ChunkDecoder()
    while True:
        data = await asyncio.wait_for(conn.reader.read(65536), 10)
        assert data, "the server closed the connection after the handshake"
        for msg in decoder.feed(data):
            if msg.type_id == m.COMMAND_AMF0 and amf0.decode_all(msg.payload)[:2] == ["_result", 1.0]:
                return


@pytest.mark.parametrize("schema", [0, 1])
async def test_digest_handshake_bytes(server, schema: int) -> None:  # type: ignore[no-untyped-def]
    conn = await RawConn.open(server.port("rtmp"))
    try:
        c1, c1_digest = signed_c1(schema)
        await conn.send(b"\x03" + c1)
        s0, s1, s2 = (await read_exactly(conn, 1))[0], await read_exactly(conn, 1536), await read_exactly(conn, 1536)
        assert s0 == 3
        assert s1[4:8] != bytes(4), "S1 must announce a version to a digest client"
        # S1 carries a digest made with the server key, in the layout the client used.
        at = digest_at(s1, schema)
        assert s1[at : at + 32] == mac(SERVER_KEY[:36], without(s1, at))
        # S2 proves the server saw our digest: its last 32 bytes sign the first 1504 with a key derived from it.
        assert s2[1504:] == mac(mac(SERVER_KEY, c1_digest), s2[:1504])
        # C2 answers S1 the same way, then the chunk stream works.
        s1_digest = s1[at : at + 32]
        random_part = os.urandom(1504)
        await conn.send(random_part + mac(mac(PLAYER_KEY, s1_digest), random_part))
        await connect_works(conn)
    finally:
        await conn.close()


async def test_plain_c1_with_a_version_gets_the_simple_handshake(server) -> None:  # type: ignore[no-untyped-def]
    """A nonzero version but no valid digest (old encoders do this): S2 echoes C1, as in the simple handshake."""
    conn = await RawConn.open(server.port("rtmp"))
    try:
        c1 = struct.pack(">II", 1234, 0x80000702) + os.urandom(1528)
        await conn.send(b"\x03" + c1)
        s0s1 = await read_exactly(conn, 1537)
        assert s0s1[0] == 3
        s2 = await read_exactly(conn, 1536)
        assert s2 == c1
        await conn.send(s0s1[1:])  # C2 echoes S1
        await connect_works(conn)
    finally:
        await conn.close()


async def test_rtmp_viewer_survives_republish_then_gets_unpublish_notify_after_grace(make_server) -> None:  # type: ignore[no-untyped-def]
    """Within the grace period a returning publisher goes unnoticed (no UnpublishNotify: FFmpeg would stop);
    after it the player gets onStatus NetStream.Play.UnpublishNotify and the connection is closed."""
    from livesrv.codec.rtmp.client import StatusEvent
    from tests.servers.rtmp_client import AAC_SEQUENCE_HEADER as ASH, AVC_SEQUENCE_HEADER as VSH

    app = await make_server(vhost="min_latency on; play { republish_grace 1; }")
    port = app.port("rtmp")

    async def publish(first: int) -> RTMPClient:
        pub = await RTMPClient.open(port)
        await pub.publish("test", port=port)
        pub.send_media(m.VIDEO, 0, VSH)
        pub.send_media(m.AUDIO, 0, ASH)
        for kind, ts, payload in gop(first, 5):
            pub.send_media(kind, ts - 40 * first, payload)
        await pub.drain()
        return pub

    pub = await publish(0)
    player = await RTMPClient.open(port)
    await player.play("test", port=port)
    await wait_until(lambda: len(player.av()) >= 10, 10, "the first GOP")
    await pub.close()
    pub = await publish(5)  # back within the grace period
    await wait_until(lambda: any(msg.payload == keyframe(5, 5000) for msg in player.av()), 10, "the new publisher's media")
    stamps = [msg.timestamp for msg in player.av() if msg.type_id == m.VIDEO]
    assert stamps == sorted(stamps)
    assert not any(isinstance(e, StatusEvent) and "Unpublish" in e.code for e in player.events)
    await pub.close()
    await wait_until(lambda: player.eof, 10, "the player to be closed after the grace period")
    codes = [e.code for e in player.events if isinstance(e, StatusEvent)]
    assert codes[-1] == "NetStream.Play.UnpublishNotify"
    await player.close()
    await wait_until(lambda: not app.hub.streams, 5, "nothing left")
