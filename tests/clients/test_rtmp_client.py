"""livesrv's outbound RTMP client (livesrv.clients.rtmp) against the real server and against small fake servers.

The fake servers are plain asyncio servers made to misbehave on purpose (silent, closing, garbage, never
reading); the well-behaved peer is livesrv itself. Every wait has a deadline; ports come from the OS.
"""

from __future__ import annotations

import ast
import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import livesrv.clients.rtmp
from livesrv.clients.rtmp import (
    RtmpClient,
    RtmpClientError,
    RtmpClosedError,
    RtmpConnectError,
    RtmpProtocolError,
    RtmpRefusedError,
    RtmpTimeoutError,
    RtmpUrl,
    RtmpUrlError,
)
from livesrv.codec import amf0
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.session import ConnectRequest, PublishRequest, ServerSession
from tests.helpers import wait_until
from tests.servers.rtmp_client import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, aac_frame, inter_frame, keyframe

Media = tuple[int, int, bytes]  # (type, timestamp, payload)


def url(port: int, stream: str = "client-test") -> str:
    return f"rtmp://127.0.0.1:{port}/live/{stream}"


def frames(first: int, count: int) -> list[Media]:
    """Video at 25 fps starting with a keyframe larger than the chunk size, an AAC frame after each."""
    out: list[Media] = []
    for n in range(first, first + count):
        out.append((m.VIDEO, 40 * n, keyframe(n, 6000) if n == first else inter_frame(n, 200)))
        out.append((m.AUDIO, 40 * n + 20, aac_frame(n)))
    return out


async def collect(player: RtmpClient, want: int, got: list[m.Message]) -> None:
    """Read ``player.messages()`` into ``got`` until it holds ``want`` audio/video messages."""
    async for msg in player.messages():
        got.append(msg)
        if sum(1 for x in got if x.type_id in (m.AUDIO, m.VIDEO)) >= want:
            return


# ------------------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("text", "host", "port", "app", "stream", "tc_url"),
    [
        ("rtmp://example.com/live/cam", "example.com", 1935, "live", "cam", "rtmp://example.com:1935/live"),
        ("rtmp://10.0.0.1:19350/live/cam?token=a&vhost=v", "10.0.0.1", 19350, "live", "cam?token=a&vhost=v",
         "rtmp://10.0.0.1:19350/live"),
        ("rtmp://h/app/sub/stream", "h", 1935, "app/sub", "stream", "rtmp://h:1935/app/sub"),
        ("RTMP://[::1]:1936/live/s/", "::1", 1936, "live", "s", "rtmp://[::1]:1936/live"),
    ],
)
def test_url_follows_srs_conventions(text: str, host: str, port: int, app: str, stream: str, tc_url: str) -> None:
    parsed = RtmpUrl.parse(text)
    assert (parsed.host, parsed.port, parsed.app, parsed.stream, parsed.tc_url) == (host, port, app, stream, tc_url)


@pytest.mark.parametrize(
    "text",
    ["http://h/live/s", "rtmp:///live/s", "rtmp://h/live", "rtmp://h/", "rtmp://h:port/live/s", "rtmp://h:70000/live/s",
     "rtmp://user:pw@h/live/s", "rtmp://h:0/live/s", "live/s"],
)
async def test_bad_url_raises_before_any_network(text: str) -> None:
    with pytest.raises(RtmpUrlError) as info:
        await RtmpClient.connect(text, timeout=1)
    assert isinstance(info.value, RtmpClientError) and info.value.reason == "url"
    assert repr(text) in str(info.value)


def test_the_client_does_not_import_the_servers() -> None:
    """Layering: clients sit beside servers, above hub and codec."""
    tree = ast.parse(Path(livesrv.clients.rtmp.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in imported if name.startswith("livesrv.servers")], imported


# ---------------------------------------------------------------------------------- against livesrv


async def test_publish_then_play_back_byte_exact(server) -> None:  # type: ignore[no-untyped-def]
    port = server.port("rtmp")
    metadata: dict[str, Any] = {"width": 320.0, "height": 240.0, "videocodecid": 7.0, "audiocodecid": 10.0}
    headers = [(m.VIDEO, 0, AVC_SEQUENCE_HEADER), (m.AUDIO, 0, AAC_SEQUENCE_HEADER)]
    first, second = frames(0, 8), frames(8, 8)
    async with await RtmpClient.connect(url(port), timeout=5, complex_handshake=True) as pub:
        await pub.publish(timeout=5)
        assert pub.publishing and pub.stream_id > 0
        pub.send_metadata(metadata)
        for type_id, ts, payload in headers + first:
            pub.send_media(type_id, ts, payload)
        await pub.drain()
        await pub.call("getStreamLength", "x")  # the server has taken the first GOP

        async with await RtmpClient.connect(url(port), timeout=5) as player:
            await player.play(timeout=5)
            got: list[m.Message] = []
            await asyncio.wait_for(collect(player, len(headers + first), got), 10)
            for type_id, ts, payload in second:
                pub.send_media(type_id, ts, payload)
            await pub.drain()
            await asyncio.wait_for(collect(player, len(headers + first + second), got), 10)

            av = [(x.type_id, x.timestamp, x.payload) for x in got if x.type_id in (m.AUDIO, m.VIDEO)]
            assert sorted(av[:2]) == sorted(headers)
            assert av[2:] == first + second, "every frame, byte-exact, in order, with its timestamp"
            data = [amf0.decode_all(x.payload) for x in got if x.type_id == m.DATA_AMF0]
            assert ["onMetaData", metadata] in data
            payload_bytes = sum(len(p) for _, _, p in headers + first + second)
            assert pub.send_bytes > payload_bytes and player.recv_bytes > payload_bytes
    assert pub.closed and player.closed and pub.error is None and player.error is None


async def test_a_small_message_queue_loses_nothing(server) -> None:  # type: ignore[no-untyped-def]
    """messages() holds at most max_queued messages before the client stops reading, then reads on as they
    are consumed: every frame still arrives, in order."""
    port = server.port("rtmp")
    async with await RtmpClient.connect(url(port), timeout=5, max_queued=2) as player:
        await player.play(timeout=5)  # before the publisher: the server holds the viewer
        async with await RtmpClient.connect(url(port), timeout=5) as pub:
            await pub.publish(timeout=5)
            sent = [(m.VIDEO, 0, AVC_SEQUENCE_HEADER), *frames(0, 100)]
            for type_id, ts, payload in sent:
                pub.send_media(type_id, ts, payload)
            await pub.drain()
            got: list[m.Message] = []
            await asyncio.wait_for(collect(player, len(sent), got), 10)
    assert [(x.type_id, x.timestamp, x.payload) for x in got if x.type_id in (m.AUDIO, m.VIDEO)] == sent


async def test_refused_publish_carries_the_servers_status(make_server) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="publish { takeover off; }")
    port = app.port("rtmp")
    first = await RtmpClient.connect(url(port), timeout=5)
    second = await RtmpClient.connect(url(port), timeout=5)
    try:
        await first.publish()
        with pytest.raises(RtmpRefusedError) as info:
            await second.publish(timeout=5)
        err = info.value
        assert isinstance(err, RtmpClientError) and err.reason == "refused" and err.step == "publish"
        assert err.code == "NetStream.Publish.BadName"
        assert err.description.startswith("Stream already exists or busy")
        assert "NetStream.Publish.BadName: Stream already exists or busy" in str(err)
        await asyncio.wait_for(second.wait_closed(), 5)  # the server hangs up on a refused publisher
        assert isinstance(second.error, RtmpClosedError)
        with pytest.raises(RtmpClosedError):
            second.send_media(m.VIDEO, 0, keyframe(0))
        assert first.publishing and not first.closed
    finally:
        await first.close()
        await second.close()


async def test_refused_play_carries_the_servers_status(make_server) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost="security { enabled on; deny play all; }")
    async with await RtmpClient.connect(url(app.port("rtmp")), timeout=5) as player:
        with pytest.raises(RtmpRefusedError) as info:
            await player.play(timeout=5)
    assert info.value.step == "play" and info.value.code.startswith("NetStream.Play.")
    assert info.value.description and info.value.description in str(info.value)


async def test_refused_connect_carries_the_servers_status(hook_server, make_server) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost=f"http_hooks {{ enabled on; on_connect {hook_server.url('on_connect', answer='code1')}; }}")
    with pytest.raises(RtmpRefusedError) as info:
        await RtmpClient.connect(url(app.port("rtmp")), timeout=5)
    assert info.value.step == "connect" and info.value.code == "NetConnection.Connect.Rejected"
    assert "on_connect refused" in info.value.description


async def test_close_is_idempotent_and_the_server_sees_the_client_leave(server) -> None:  # type: ignore[no-untyped-def]
    port = server.port("rtmp")
    pub = await RtmpClient.connect(url(port), timeout=5)
    await pub.publish()
    pub.send_media(m.VIDEO, 0, AVC_SEQUENCE_HEADER)
    pub.send_media(m.VIDEO, 0, keyframe(0))
    player = await RtmpClient.connect(url(port), timeout=5)
    await player.play()
    await wait_until(lambda: server.hub.streams, 5, "the stream")

    await asyncio.gather(pub.close(), pub.close())
    await pub.close()
    await player.close()
    await player.close()
    assert pub.closed and player.closed and pub.error is None and player.error is None
    await wait_until(lambda: not server.hub.streams, 5, "the server to drop the stream")
    with pytest.raises(RtmpClosedError, match="closed by the client"):
        pub.send_media(m.VIDEO, 40, inter_frame(1))
    with pytest.raises(RtmpClosedError):
        await pub.drain()
    with pytest.raises(RtmpClosedError):
        await player.call("getStreamLength", "x")


async def test_player_learns_that_the_server_closed(make_server) -> None:  # type: ignore[no-untyped-def]
    """The publisher leaves (no grace period): the player's messages() ends and ``error`` says the server
    closed the connection."""
    app = await make_server(vhost="play { republish_grace 0; }")
    port = app.port("rtmp")
    pub = await RtmpClient.connect(url(port), timeout=5)
    await pub.publish()
    pub.send_media(m.VIDEO, 0, AVC_SEQUENCE_HEADER)
    pub.send_media(m.VIDEO, 0, keyframe(0))
    player = await RtmpClient.connect(url(port), timeout=5)
    try:
        await player.play()
        got: list[m.Message] = []
        await asyncio.wait_for(collect(player, 2, got), 5)
        await pub.close()
        await asyncio.wait_for(collect(player, 10**9, got), 5)  # returns when the iterator ends
        assert player.closed
        assert isinstance(player.error, RtmpClosedError) and "closed by the server" in str(player.error)
    finally:
        await player.close()


# ----------------------------------------------------------------------------------- failing servers


async def test_connection_refused_fails_at_once() -> None:
    with socket.socket() as reserved:  # bound, never listening: connecting is refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RtmpConnectError) as info:
            await RtmpClient.connect(url(port), timeout=5)
    assert loop.time() - started < 2
    assert info.value.reason == "connect" and info.value.step == "TCP connect"
    assert f"127.0.0.1:{port}" in str(info.value)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start plain asyncio servers with a given connection handler; returns their ports."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> int:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        srv = await asyncio.start_server(run, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for srv in servers:
        srv.close()
    for writer in writers:
        writer.close()
    for srv in servers:
        await srv.wait_closed()


async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read everything, say nothing."""
    while await reader.read(65536):
        pass


async def test_silent_server_times_out_naming_the_handshake(fake_server) -> None:  # type: ignore[no-untyped-def]
    port = await fake_server(read_all)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RtmpTimeoutError) as info:
        await RtmpClient.connect(url(port), timeout=0.3)
    elapsed = loop.time() - started
    assert 0.25 <= elapsed < 2, elapsed
    assert info.value.reason == "timeout" and info.value.step == "handshake"
    assert str(info.value) == f"handshake timed out after 0.3s (server 127.0.0.1:{port})"


async def test_server_that_hangs_up_during_the_handshake(fake_server) -> None:  # type: ignore[no-untyped-def]
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1537)  # C0+C1
        writer.close()

    port = await fake_server(hang_up)
    with pytest.raises(RtmpClosedError) as info:
        await RtmpClient.connect(url(port), timeout=5)
    assert info.value.step == "handshake" and "closed by the server" in str(info.value)


async def test_server_that_speaks_something_else(fake_server) -> None:  # type: ignore[no-untyped-def]
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1537)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await read_all(reader, writer)

    port = await fake_server(http)
    with pytest.raises(RtmpProtocolError, match="malformed RTMP") as info:
        await RtmpClient.connect(url(port), timeout=5)
    assert info.value.step == "handshake"


# ------------------------------------------------------------------------------- a slow destination


class OneShotServer(asyncio.Protocol):
    """livesrv's sans-IO ServerSession on a socket: accepts connect and, unless told not to, publish."""

    def __init__(self, answer_publish: bool = True) -> None:
        self.session = ServerSession()
        self.answer_publish = answer_publish
        self.transport: asyncio.Transport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        for ev in self.session.receive_data(data):
            if isinstance(ev, ConnectRequest):
                self.session.accept_connect(ev)
            elif isinstance(ev, PublishRequest) and self.answer_publish:
                self.session.accept_publish(ev)
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


@pytest.fixture
async def one_shot() -> AsyncIterator[Callable[..., Awaitable[tuple[int, OneShotServer]]]]:
    servers: list[asyncio.Server] = []
    peers: list[OneShotServer] = []

    async def start(answer_publish: bool = True) -> tuple[int, OneShotServer]:
        peer = OneShotServer(answer_publish)
        peers.append(peer)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: a small window fills fast
        listener.bind(("127.0.0.1", 0))
        srv = await asyncio.get_running_loop().create_server(lambda: peer, sock=listener)
        servers.append(srv)
        return int(listener.getsockname()[1]), peer

    yield start
    for peer in peers:
        if peer.transport is not None:
            peer.transport.abort()
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def test_publish_timeout_names_the_step(one_shot) -> None:  # type: ignore[no-untyped-def]
    port, _ = await one_shot(answer_publish=False)
    async with await RtmpClient.connect(url(port), timeout=5) as client:
        with pytest.raises(RtmpTimeoutError, match=r"^publish timed out after 0\.3s") as info:
            await client.publish(timeout=0.3)
    assert info.value.step == "publish"


async def test_drain_waits_while_the_destination_does_not_read(one_shot) -> None:  # type: ignore[no-untyped-def]
    port, peer = await one_shot()
    limit = 64 * 1024
    client = await RtmpClient.connect(url(port), timeout=5, write_buffer_limit=limit)
    try:
        await client.publish(timeout=5)
        frame = keyframe(0, 32 * 1024)
        client.send_media(m.VIDEO, 0, frame)
        await asyncio.wait_for(client.drain(), 5)  # a small buffer: returns at once
        assert not client.writing_paused
        assert peer.transport is not None
        peer.transport.pause_reading()

        async def fill() -> None:
            for n in range(2000):  # at most 64 MB: far more than any socket buffer
                client.send_media(m.VIDEO, 40 * n, frame)
                if client.writing_paused:
                    return
            raise AssertionError("the client never stopped writing")

        await fill()
        with pytest.raises(RtmpTimeoutError) as info:
            await client.drain(timeout=0.2)  # the destination reads nothing: drain waits
        assert info.value.step == "drain"
        waiting = asyncio.ensure_future(client.drain())
        peer.transport.resume_reading()
        await asyncio.wait_for(waiting, 10)  # it reads again: drain returns
        assert not client.writing_paused

        peer.transport.pause_reading()
        await fill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.close(timeout=0.3)  # unsent bytes cannot leave: close gives up on them and aborts
        assert client.closed and loop.time() - started < 3
    finally:
        await client.close()
