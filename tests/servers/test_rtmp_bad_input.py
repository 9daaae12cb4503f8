"""Bad RTMP clients against a running server: each is closed with one log line, and nobody else notices.

Every test runs a healthy publisher and player on their own stream for its whole length, lets one bad client
do its thing (a malformed handshake, a lying length, an unknown message type or chunk stream, a stalled
handshake, an idle or stuck connection), then checks that

* the bad connection is closed by the server,
* exactly one ``event=close client=... reason=...`` line is logged, and it names the reason,
* the healthy player keeps receiving every frame the healthy publisher sends after that.

The bad bytes are spelled out here, independent of livesrv's encoders.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from livesrv.codec import amf0
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.handshake import ClientHandshake
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

MAX_MESSAGE = 65536
MAX_WRITE_BUFFER = 256 * 1024
LIMITS = f"""rtmp_limits {{
    max_message_size {MAX_MESSAGE};
    handshake_timeout 1;
    idle_timeout 1;
    max_write_buffer {MAX_WRITE_BUFFER};
}}"""


# ------------------------------------------------------------------------------------ wire builders


def u24(x: int) -> bytes:
    return x.to_bytes(3, "big")


def h0(csid: int, length: int, type_id: int, ts: int = 0, sid: int = 0) -> bytes:
    """A fmt 0 chunk header (basic header + 11-byte message header) for a one-byte-form csid."""
    return bytes([csid]) + u24(ts) + u24(length) + bytes([type_id]) + sid.to_bytes(4, "little")


def message(csid: int, type_id: int, payload: bytes, sid: int = 0) -> bytes:
    """One message in one chunk: payloads up to the default chunk size of 128 bytes."""
    assert len(payload) <= 128
    return h0(csid, len(payload), type_id, sid=sid) + payload


def chunked(csid: int, type_id: int, payload: bytes, sid: int = 0) -> bytes:
    """One message split into 128-byte chunks: a fmt 0 header, then fmt 3 headers."""
    parts = [payload[i : i + 128] for i in range(0, len(payload), 128)]
    return h0(csid, len(payload), type_id, sid=sid) + bytes([0xC0 | csid]).join(parts)


def connect_command() -> bytes:
    return message(3, m.COMMAND_AMF0, amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"}))


# ----------------------------------------------------------------------------------------- fixtures


@dataclass
class Closes:
    caplog: pytest.LogCaptureFixture

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.getMessage().startswith("event=close ")]


@pytest.fixture
def closes(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Closes:
    # livesrv.log.setup() (the CLI) stops propagation; in tests the records must reach caplog's handler.
    monkeypatch.setattr(logging.getLogger("livesrv"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="livesrv")
    return Closes(caplog)


class LiveStream:
    """A publisher pushing ~100 small frames a second and a player that must receive every one of them."""

    def __init__(self, pub: RTMPClient, player: RTMPClient, frame_size: int = 32) -> None:
        self.pub = pub
        self.player = player
        self.frame_size = frame_size
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, port: int, name: str, frame_size: int = 32) -> LiveStream:
        pub = await RTMPClient.open(port)
        await pub.publish(name, port=port)
        player = await RTMPClient.open(port)
        await player.play(name, port=port)
        live = cls(pub, player, frame_size)
        pub.send_metadata({"width": 320.0, "height": 240.0, "videocodecid": 7.0, "audiocodecid": 10.0})
        pub.send_media(m.VIDEO, 0, AVC_SEQUENCE_HEADER)
        pub.send_media(m.AUDIO, 0, AAC_SEQUENCE_HEADER)
        live._task = asyncio.create_task(live._pump(), name=f"publish {name}")
        await live.wait_frames(5)
        return live

    async def _pump(self) -> None:
        n = 0
        while True:
            ts = n * 10
            frame = keyframe(n, self.frame_size) if n % 25 == 0 else inter_frame(n, self.frame_size)
            self.pub.send_media(m.VIDEO, ts, frame)
            self.pub.send_media(m.AUDIO, ts, aac_frame(n))
            await self.pub.drain()
            self.sent = n + 1
            n += 1
            await asyncio.sleep(0.01)  # the source's frame rate, not a wait for anything

    def frames(self) -> list[int]:
        """Frame numbers of the video frames the player received (sequence headers excluded)."""
        return [
            struct.unpack_from(">I", msg.payload, 5)[0]
            for msg in self.player.av()
            if msg.type_id == m.VIDEO and msg.payload[1] == 1
        ]

    async def wait_frames(self, n: int, timeout: float = 10) -> None:
        await wait_until(lambda: len(self.frames()) >= n or self.player.eof, timeout, f"{n} frames at the player")
        assert not self.player.eof, "the server closed a healthy player"

    async def assert_flowing(self, strict: bool = True) -> None:
        """Frames published from now on reach the player, and it has not missed a single one so far.

        ``strict=False`` allows the player to have skipped to a later keyframe (a server may do that when even
        a reading player falls behind a busy stream), but not to get frames out of order.
        """
        target = self.sent + 20
        await wait_until(lambda: self.sent >= target or self.pub.eof, 10, "the publisher to send 20 more frames")
        await wait_until(
            lambda: target - 1 in self.frames() or self.player.eof, 10, f"frame {target - 1} at the player"
        )
        assert not self.player.eof, "the server closed a healthy player"
        frames = self.frames()
        if strict:
            assert frames == list(range(len(frames))), "the healthy player missed or reordered frames"
        else:
            assert frames == sorted(set(frames)), "the player got frames out of order or twice"
            gaps = [b for a, b in zip(frames, frames[1:]) if b != a + 1]
            assert all(n % 25 == 0 for n in gaps), f"the player resumed on frames that are not keyframes: {gaps}"
        assert not self.pub.eof, "the server closed the healthy publisher"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, ConnectionError):
                pass
        await self.pub.close()
        await self.player.close()


async def _server_with_live_stream(make_server, vhost: str) -> AsyncIterator[tuple[int, LiveStream]]:  # type: ignore[no-untyped-def]
    app = await make_server(extra=LIMITS, vhost=vhost)
    port = app.port("rtmp")
    live = await LiveStream.start(port, "healthy")
    yield port, live
    await live.close()


@pytest.fixture
async def setup(make_server, closes: Closes) -> AsyncIterator[tuple[int, LiveStream]]:  # type: ignore[no-untyped-def]
    """A server with a healthy stream; per-message delivery to players keeps these many short tests fast."""
    async for value in _server_with_live_stream(make_server, "min_latency on;"):
        yield value


@pytest.fixture
async def setup_batched(make_server, closes: Closes) -> AsyncIterator[tuple[int, LiveStream]]:  # type: ignore[no-untyped-def]
    """The same with the default delivery to players (which may write in batches)."""
    async for value in _server_with_live_stream(make_server, ""):
        yield value


def reason_of(line: str) -> str:
    found = re.search(r' reason=("[^"]*"|\S+)', line)
    assert found, line
    return found.group(1).strip('"')


async def assert_closed_alone(
    closes: Closes, conn: RawConn, reason: str, live: LiveStream, timeout: float = 10
) -> None:
    """The one bad connection is closed with one log line naming ``reason``; the healthy stream goes on."""
    await conn.wait_closed(timeout)
    await wait_until(lambda: closes.lines(), 5, "the close log line")
    lines = closes.lines()
    assert len(lines) == 1, lines
    assert re.search(reason, reason_of(lines[0])), lines[0]
    assert re.match(r"event=close client=\w+ ip=127\.0\.0\.1 ", lines[0]), lines[0]
    await live.assert_flowing()
    assert closes.lines() == lines, "another connection was closed"


# ----------------------------------------------------------------------------------- the bad clients

BadClient = Callable[[RawConn], Awaitable[None]]


def sends(data: bytes, *, handshake: bool = True) -> BadClient:
    async def run(conn: RawConn) -> None:
        if handshake:
            await conn.handshake()
        await conn.send(data)

    return run


def random_c1() -> bytes:
    return os.urandom(1536)


def aggregate_overrun() -> bytes:
    # One FLV-shaped sub-message (type, size, timestamp, stream id, body, back pointer) that claims 1000 bytes.
    sub = bytes([m.VIDEO]) + u24(1000) + u24(0) + b"\x00" + u24(0) + keyframe(0, 8) + struct.pack(">I", 30)
    return message(4, m.AGGREGATE, sub, sid=1)


def nested_aggregate(depth: int) -> bytes:
    def sub(type_id: int, body: bytes) -> bytes:
        return bytes([type_id]) + u24(len(body)) + bytes(7) + body + struct.pack(">I", 11 + len(body))

    inner = sub(m.AUDIO, aac_frame(0))
    for _ in range(depth):
        inner = sub(m.AGGREGATE, inner)
    return chunked(4, m.AGGREGATE, inner, sid=1)


def many_chunk_streams() -> bytes:
    # Each chunk stream carries one harmless Window Acknowledgement Size; the decoder must cap how many it tracks.
    return b"".join(message(csid, m.WINDOW_ACK_SIZE, struct.pack(">I", 2_500_000)) for csid in range(3, 64))


def wide_csid_messages(count: int) -> bytes:
    out = b""
    for i in range(count):
        csid = 64 + i  # two-byte basic header form
        out += bytes([0, csid - 64]) + u24(0) + u24(4) + bytes([m.WINDOW_ACK_SIZE]) + bytes(4) + struct.pack(">I", 2_500_000)
    return out


BAD_CLIENTS: dict[str, tuple[BadClient, str]] = {
    # Handshake.
    "version-5": (sends(b"\x05" + random_c1(), handshake=False), r"unsupported RTMP version 5\b"),
    "rtmpe": (sends(b"\x06" + random_c1(), handshake=False), r"encrypted RTMPE"),
    "http-request": (
        sends(b"GET /live/test.flv HTTP/1.1\r\nHost: localhost\r\n\r\n", handshake=False),
        r"unsupported RTMP version 71\b",
    ),
    "garbage": (sends(b"\xff" * 3000, handshake=False), r"unsupported RTMP version 255\b"),
    # Lengths.
    "oversized": (sends(h0(3, MAX_MESSAGE + 1, m.COMMAND_AMF0)), rf"message length {MAX_MESSAGE + 1} exceeds limit"),
    "negative-length": (sends(h0(3, 0xFFFFFF, m.VIDEO, sid=1)), r"message length 16777215 exceeds limit"),
    "length-changes-mid-message": (
        sends(h0(3, 300, m.COMMAND_AMF0) + bytes(128) + h0(3, 200, m.COMMAND_AMF0)),
        r"length changed from 300 to 200",
    ),
    "aggregate-overrun": (sends(connect_command() + aggregate_overrun()), r"overruns"),
    "nested-aggregate": (sends(connect_command() + nested_aggregate(2000)), r"aggregate message nested"),
    "amf-string-overrun": (sends(message(3, m.COMMAND_AMF0, b"\x02\x10\x00connect")), r"truncated AMF0"),
    "short-set-chunk-size": (sends(message(2, m.SET_CHUNK_SIZE, b"\x00\x10")), r"set chunk size message of 2 bytes"),
    "set-chunk-size-0": (sends(message(2, m.SET_CHUNK_SIZE, bytes(4))), r"set chunk size 0\b"),
    # Types, chunk streams, commands.
    "unknown-type-7": (sends(message(3, 7, b"\x00\x01\x02\x03")), r"unknown message type 7\b"),
    "unknown-type-99": (sends(message(3, 99, b"\x00\x01\x02\x03")), r"unknown message type 99\b"),
    "fmt1-first-chunk": (sends(b"\x43" + u24(0) + u24(4) + bytes([20]) + bytes(4)), r"chunk stream 3 never announced"),
    "fmt2-first-chunk": (sends(b"\x83" + u24(40) + bytes(8)), r"chunk stream 3 never announced"),
    "fmt3-first-chunk": (sends(b"\xc3" + bytes(8)), r"chunk stream 3 never announced"),
    "fmt3-wide-csid": (sends(b"\xc0\x05" + bytes(8)), r"chunk stream 69 never announced"),
    "too-many-chunk-streams": (sends(many_chunk_streams() + wide_csid_messages(10)), r"too many chunk streams"),
    "command-without-name": (sends(message(3, m.COMMAND_AMF0, amf0.encode(1.0, 2.0))), r"without a command name"),
    "publish-before-connect": (
        sends(message(8, m.COMMAND_AMF0, amf0.encode("publish", 0.0, None, "healthy", "live"), sid=1)),
        r"'publish' before connect",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CLIENTS))
async def test_bad_input_closes_only_that_connection(setup, closes: Closes, name: str) -> None:  # type: ignore[no-untyped-def]
    port, live = setup
    bad, reason = BAD_CLIENTS[name]
    conn = await RawConn.open(port)
    try:
        await bad(conn)
        await assert_closed_alone(closes, conn, reason, live)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------- the stalls


async def silent(conn: RawConn) -> None:
    pass


async def half_c1(conn: RawConn) -> None:
    await conn.send(b"\x03" + os.urandom(700))


async def no_c2(conn: RawConn) -> None:
    hs = ClientHandshake()
    await conn.send(hs.initiate())
    got = b""
    while len(got) < 1 + 2 * 1536:  # S0 S1 S2: the server is done with its part; we never send C2
        data = await asyncio.wait_for(conn.reader.read(65536), 10)
        assert data, "closed before S2"
        got += data


@pytest.mark.parametrize("stall", [silent, half_c1, no_c2], ids=["silent", "half-c1", "no-c2"])
async def test_handshake_timeout(setup, closes: Closes, stall: BadClient) -> None:  # type: ignore[no-untyped-def]
    port, live = setup
    conn = await RawConn.open(port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await stall(conn)
        await assert_closed_alone(closes, conn, r"handshake not done after 1s", live)
    finally:
        await conn.close()
    # Closed by the timeout, not at once (the sweeper looks every 0.5 s; allow for a loaded machine).
    assert loop.time() - started >= 0.9


async def test_idle_after_connect(setup, closes: Closes) -> None:  # type: ignore[no-untyped-def]
    """A client that connects but never publishes nor plays is closed after idle_timeout."""
    port, live = setup
    conn = await RawConn.open(port)
    try:
        await conn.handshake()
        await conn.send(connect_command())
        await assert_closed_alone(closes, conn, r"idle for 1s", live)
    finally:
        await conn.close()


async def test_idle_client_that_keeps_talking(setup, closes: Closes) -> None:  # type: ignore[no-untyped-def]
    """Chatter (pings, acknowledgements) is neither publishing nor playing: still closed after idle_timeout.

    Otherwise a client can hold a connection, and whatever it has buffered, forever by sending a byte now
    and then.
    """
    port, live = setup
    conn = await RawConn.open(port)
    try:
        await conn.handshake()
        await conn.send(connect_command())

        async def chatter() -> None:
            while True:
                await conn.send(message(2, m.ACK, struct.pack(">I", 1)))
                await asyncio.sleep(0.1)  # a keep-alive interval, not a wait for anything

        task = asyncio.create_task(chatter())
        try:
            await assert_closed_alone(closes, conn, r"idle for 1s", live, timeout=5)
        finally:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, ConnectionError):
                pass
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------ a stuck viewer


def close_field(line: str, name: str) -> int:
    found = re.search(rf" {name}=(\d+)", line)
    assert found, line
    return int(found.group(1))


def tcp_queues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int] | None:
    """The kernel's (send queue, receive queue) bytes of one IPv4 TCP socket, from /proc/net/tcp."""

    def addr(a: tuple[str, int]) -> str:
        return f"{struct.unpack('<I', bytes(map(int, a[0].split('.'))))[0]:08X}:{a[1]:04X}"

    want = (addr(local), addr(remote))
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


async def test_player_that_stops_reading(setup, closes: Closes) -> None:  # type: ignore[no-untyped-def]
    await stuck_player(*setup, closes, batched=False)


async def test_player_that_stops_reading_batched(setup_batched, closes: Closes) -> None:  # type: ignore[no-untyped-def]
    await stuck_player(*setup_batched, closes, batched=True)


async def stuck_player(port: int, live: LiveStream, closes: Closes, *, batched: bool) -> None:
    """A viewer that never reads is closed after idle_timeout; what the server held for it stayed bounded.

    A second publisher pushes ~6 MB/s of 60 kB frames to a second stream, watched by a stuck player and a
    healthy one. Every byte the server queued for the stuck player (``send_bytes`` of its close line) is either
    read by it, in the kernel (its receive queue, the server socket's send queue), or held by the server
    process: that last part must stay within max_write_buffer (plus the frame being written), although far
    more was published while the player was stuck. With merged writes (every 350 ms) the bound is
    max_write_buffer plus one batch: a batch goes to a viewer whose buffer is empty, never to one that holds
    anything over the limit.
    """
    frame = 60_000
    big = await LiveStream.start(port, "big", frame_size=frame)
    stuck = await RTMPClient.open(port, rcvbuf=4096)
    try:
        await stuck.play("big", port=port)
        await stuck.stop_reading()
        published_before = big.sent
        loop = asyncio.get_running_loop()
        stalled_at = loop.time()
        client = stuck.sock.getsockname()[:2]
        server = stuck.sock.getpeername()[:2]
        kernel: list[tuple[int, int]] = []

        def closed() -> bool:
            server_side, client_side = tcp_queues(server, client), tcp_queues(client, server)
            if server_side is not None and client_side is not None and not closes.lines():
                kernel.append((server_side[0], client_side[1]))
            return bool(closes.lines())

        await wait_until(closed, 10, "the stuck player to be closed")
        assert loop.time() - stalled_at >= 0.9, "closed before idle_timeout"
        published = (big.sent - published_before) * frame
        lines = closes.lines()
        assert len(lines) == 1, lines
        assert re.search(r"stopped reading", reason_of(lines[0])), lines[0]
        server_txq, client_rxq = kernel[-1]
        sent = close_field(lines[0], "send_bytes")
        held = sent - stuck.received_bytes - server_txq - client_rxq
        rate = published / max(loop.time() - stalled_at, 0.1)  # bytes/s
        bound = MAX_WRITE_BUFFER + 2 * frame + (int(0.35 * rate) if batched else 0)
        # send_bytes counts every byte written for this client, media included (a little slack for kernel
        # bytes counted twice: received by the client's socket but not yet acknowledged).
        assert held >= -65536, f"send_bytes={sent} is less than the {sent - held} bytes that reached the client"
        assert held <= bound, f"the server held {held} bytes for a stuck player (published {published})"
        # Without skipping frames it would have had to hold what the kernel did not take: make sure that was a lot.
        assert published - server_txq - client_rxq > 2 * bound, f"published only {published} bytes: test too weak"
        await big.assert_flowing(strict=False)
        await live.assert_flowing()
        assert closes.lines() == lines, "another connection was closed"
    finally:
        await stuck.close()
        await big.close()
