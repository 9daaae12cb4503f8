"""The RTMP test client: livesrv's own :class:`~livesrv.clients.rtmp.RtmpClient`, with synthetic media.

Tests use it to publish synthetic FLV-shaped media and to play it back byte-exactly, without ffmpeg, and to
act as a viewer that stops reading. :class:`RawConn` is its counterpart for speaking deliberately wrong RTMP.
Every wait is on a condition with a timeout; nothing here sleeps blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from livesrv.clients.rtmp import RtmpClient
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.client import ClientEvent, ClientSession, HandshakeComplete
from livesrv.codec.rtmp.handshake import ClientHandshake
from tests.helpers import wait_until

HOST = "127.0.0.1"

# Synthetic FLV tag bodies: enough structure for the server to classify them (keyframe, sequence header),
# with a counter inside so every frame is distinct and order can be checked byte for byte. The sequence
# headers are real: an AVCDecoderConfigurationRecord from x264 (Baseline, 320x240) and AAC-LC 44.1 kHz stereo.
AVC_SEQUENCE_HEADER = b"\x17\x00\x00\x00\x00" + bytes.fromhex(
    "0142c00dffe100166742c00dda0507ec0440000003004000000c83c50aa801000468ce0fc8"
)
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"


def keyframe(n: int, size: int = 64) -> bytes:
    return b"\x17\x01\x00\x00\x00" + struct.pack(">I", n) + bytes(size)


def inter_frame(n: int, size: int = 32) -> bytes:
    return b"\x27\x01\x00\x00\x00" + struct.pack(">I", n) + bytes(size)


def aac_frame(n: int, size: int = 16) -> bytes:
    return b"\xaf\x01" + struct.pack(">I", n) + bytes(size)


async def connect_socket(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket connected to the server; ``rcvbuf`` shrinks its kernel receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connecting, to limit the window
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 10) -> None:
    """Discard what the server sends until it closes the connection (EOF or reset); fail on timeout."""

    async def drain() -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    try:
        await asyncio.wait_for(drain(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"the server did not close the connection within {timeout}s") from None


class RTMPClient:
    """A test's RTMP connection: livesrv's :class:`RtmpClient` plus what tests look at.

    Every event and every received message is kept (``events``, ``media``). The package client reads straight
    from the socket into the chunk decoder (no stream buffer in between), so once :meth:`stop_reading` is
    called every byte the server sent is accounted for: ``received_bytes`` read by us, the rest in the kernel
    or still in the server.
    """

    def __init__(self, sock: socket.socket, *, complex_handshake: bool = False, chunk_size: int = 4096) -> None:
        self.sock = sock
        self.events: list[ClientEvent] = []
        #: Audio, video and data messages received, in order.
        self.media: list[m.Message] = []
        self.client = RtmpClient(
            complex_handshake=complex_handshake,
            chunk_size=chunk_size,
            on_event=self.events.append,
            on_media=self.media.append,
        )

    @classmethod
    async def open(
        cls, port: int, *, complex_handshake: bool = False, chunk_size: int = 4096, rcvbuf: int | None = None
    ) -> RTMPClient:
        """Connect and start the handshake; :meth:`publish` or :meth:`play` then say where."""
        sock = await connect_socket(port, rcvbuf=rcvbuf)
        conn = cls(sock, complex_handshake=complex_handshake, chunk_size=chunk_size)
        await conn.client.open(HOST, port, sock=sock)
        return conn

    @property
    def eof(self) -> bool:
        """The connection is gone (the server closed it, or it was reset)."""
        return self.client.closed

    @property
    def received_bytes(self) -> int:
        return self.client.recv_bytes

    @property
    def stream_id(self) -> int:
        return self.client.stream_id

    @property
    def session(self) -> ClientSession:
        """The sans-IO session underneath, for tests that send what no well-behaved client would (raw names)."""
        return self.client._session  # noqa: SLF001

    async def drain(self) -> None:
        """Send what the session queued (raw commands included), then wait while the socket's buffer is full."""
        self.client._flush()  # noqa: SLF001
        await self.client.drain()

    async def create_stream(self) -> int:
        """createStream on its own (for raw publish/play commands); the new message stream id."""
        return int((await self.client.call("createStream"))[1])

    async def wait_event(self, pred: Callable[[ClientEvent], bool], what: str, timeout: float = 10) -> ClientEvent:
        found: list[ClientEvent] = []

        def check() -> bool:
            for ev in self.events:
                if pred(ev):
                    found.append(ev)
                    return True
            if self.eof:
                raise AssertionError(f"connection closed while waiting for {what}; events: {self.events}")
            return False

        await wait_until(check, timeout, what)
        return found[0]

    # -------------------------------------------------------------------------------- RTMP commands

    async def handshake(self) -> HandshakeComplete:
        return await self.client.handshake()

    async def connect(self, app: str = "live", port: int | None = None) -> None:
        """The handshake, then ``connect`` (answered ``_result``)."""
        await self.client.connect_app(app, f"rtmp://{HOST}:{port or 1935}/{app}")

    async def barrier(self) -> None:
        """A command round trip: the server has processed everything we sent before it."""
        await self.client.call("getStreamLength", "x")

    async def publish(self, name: str, app: str = "live", port: int | None = None) -> None:
        """connect, createStream, publish; returns once the server said NetStream.Publish.Start."""
        await self.connect(app, port)
        await self.client.publish(name)

    async def play(self, name: str, app: str = "live", port: int | None = None) -> None:
        """connect, createStream, play; returns once the server said NetStream.Play.Start."""
        await self.connect(app, port)
        await self.client.play(name)

    def send_metadata(self, metadata: dict[str, Any]) -> None:
        self.client.send_metadata(metadata)

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        self.client.send_media(type_id, timestamp, payload)

    # ----------------------------------------------------------------------------------------- state

    def av(self) -> list[m.Message]:
        """Audio and video messages received so far."""
        return [msg for msg in self.media if msg.type_id in (m.AUDIO, m.VIDEO)]

    async def stop_reading(self) -> None:
        """Behave like a stuck viewer: never read again, so the kernel buffers fill and TCP stops the server."""
        self.client.pause_reading()

    async def close(self) -> None:
        await self.client.close()


class RawConn:
    """A bare socket for sending bytes no well-behaved client would; :meth:`handshake` does a correct one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConn:
        return cls(*await asyncio.open_connection(sock=await connect_socket(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def handshake(self, complex_handshake: bool = False) -> None:
        hs = ClientHandshake(complex=complex_handshake)
        await self.send(hs.initiate())
        while not hs.done:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection during a valid handshake"
            hs.receive_data(data)
            out = hs.data_to_send()
            if out:
                await self.send(out)
        assert not hs.leftover

    async def wait_closed(self, timeout: float = 10) -> None:
        await read_until_closed(self.reader, timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
