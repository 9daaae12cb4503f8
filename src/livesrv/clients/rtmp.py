"""An asyncio RTMP client that publishes to or plays from another RTMP server.

Forwarding (pushing a local stream to another server) and edge pulling (playing a stream from an origin to feed
the local hub) both need one; the tests use it too. It drives the sans-IO
:class:`~livesrv.codec.rtmp.client.ClientSession` from an :class:`asyncio.Protocol`: bytes go from
``data_received`` straight into the chunk decoder (no stream buffer, no polling), and what the session queues
(handshake, commands, acknowledgements, ping answers, media) goes straight to the transport.

Every wait is bounded by a timeout, and every way a connection can fail raises one :class:`RtmpClientError`
subclass that says what went wrong and at which step, so a forwarder or puller can log one clear line and
retry::

    client = await RtmpClient.connect("rtmp://origin:1935/live/stream?token=x", timeout=10)
    try:
        await client.publish()
        client.send_media(messages.VIDEO, timestamp, payload)
        await client.drain()  # back-pressure: waits while the destination is slower than the source
    finally:
        await client.close()

URLs follow SRS's convention: in ``rtmp://host[:port]/app[/...]/stream[?query]`` the last path element is the
stream name and everything before it the app; the query stays on the stream name (SRS reads tokens and
``vhost=`` from there); ``tcUrl`` is ``rtmp://host:port/app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.client import (
    ClientEvent,
    ClientSession,
    CommandReply,
    HandshakeComplete,
    MediaEvent,
    StatusEvent,
)

__all__ = [
    "DEFAULT_PORT",
    "RtmpClient",
    "RtmpClientError",
    "RtmpClosedError",
    "RtmpConnectError",
    "RtmpProtocolError",
    "RtmpRefusedError",
    "RtmpTimeoutError",
    "RtmpUrl",
    "RtmpUrlError",
]

DEFAULT_PORT = 1935
#: Bytes the transport may hold for a slow destination before :meth:`RtmpClient.drain` waits: a few seconds of
#: a typical stream, so a short hiccup costs nothing and a stuck destination costs a bounded amount of memory.
DEFAULT_WRITE_BUFFER_LIMIT = 512 * 1024
#: Received messages :meth:`RtmpClient.messages` may hold before the client stops reading the socket.
DEFAULT_MAX_QUEUED = 1024

# onStatus codes that end a publish or play attempt even when a server does not mark them level "error".
_FAILURE_CODES = frozenset(
    {
        "NetStream.Publish.BadName",
        "NetStream.Publish.Denied",
        "NetStream.Publish.Rejected",
        "NetStream.Play.Failed",
        "NetStream.Play.StreamNotFound",
    }
)


# ---------------------------------------------------------------------------------------------- errors


class RtmpClientError(Exception):
    """Anything that stops an RTMP client; ``reason`` is one word for logs and metrics, ``step`` the step
    that failed (``"TCP connect"``, ``"handshake"``, ``"connect"``, ``"createStream"``, ``"publish"``,
    ``"play"``, ``"drain"``, a command name, or ``""`` when it happened outside any step)."""

    reason: ClassVar[str] = "error"

    def __init__(self, message: str, *, step: str = "") -> None:
        super().__init__(message)
        self.step = step


class RtmpUrlError(RtmpClientError):
    """The URL is not ``rtmp://host[:port]/app/stream``."""

    reason = "url"


class RtmpConnectError(RtmpClientError):
    """The TCP connection could not be made: unknown host, refused, unreachable."""

    reason = "connect"


class RtmpTimeoutError(RtmpClientError):
    """The server did not answer a step in time; ``step`` names it."""

    reason = "timeout"


class RtmpRefusedError(RtmpClientError):
    """The server said no: ``_error`` to a command, or an error ``onStatus`` to publish or play.

    ``code`` and ``description`` are the server's own (e.g. ``NetStream.Publish.BadName``, ``Stream already
    exists or busy``), so the operator sees why.
    """

    reason = "refused"

    def __init__(self, step: str, code: str, description: str) -> None:
        super().__init__(f"{step} refused by the server: {code}: {description}", step=step)
        self.code = code
        self.description = description


class RtmpClosedError(RtmpClientError):
    """The connection ended (by the server, a network error, or :meth:`RtmpClient.close`) before a step ended,
    or an operation was attempted on a closed client."""

    reason = "closed"


class RtmpProtocolError(RtmpClientError):
    """The server sent bytes that are not valid RTMP; the connection has been aborted."""

    reason = "protocol"


# ------------------------------------------------------------------------------------------------- URL


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RtmpUrl:
    """Where to connect and what to ask for, from ``rtmp://host[:port]/app[/...]/stream[?query]``."""

    host: str
    port: int
    app: str
    #: The stream name as sent in publish/play, with the URL's query (``stream?token=...``).
    stream: str

    @classmethod
    def parse(cls, url: str) -> RtmpUrl:
        def bad(why: str) -> RtmpUrlError:
            return RtmpUrlError(f"bad RTMP URL {url!r}: {why}")

        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise bad(str(exc)) from None
        if parts.scheme.lower() != "rtmp":
            raise bad("want rtmp://host[:port]/app/stream")
        if not parts.hostname:
            raise bad("no host")
        if parts.username is not None:
            raise bad("credentials in the URL are not supported (put tokens in the query)")
        if port == 0:
            raise bad("port 0")
        elements = [p for p in parts.path.split("/") if p]
        if len(elements) < 2:
            raise bad("want an app and a stream: rtmp://host[:port]/app/stream")
        stream = elements[-1] + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, port or DEFAULT_PORT, "/".join(elements[:-1]), stream)

    @property
    def tc_url(self) -> str:
        """``rtmp://host:port/app``, as sent in ``connect``."""
        return f"rtmp://{_netloc(self.host, self.port)}/{self.app}"

    def __str__(self) -> str:
        return f"{self.tc_url}/{self.stream}"


# ---------------------------------------------------------------------------------------------- client


@dataclass(slots=True)
class _Step:
    """The step an operation is in, for the error that ends it (a timeout names the step it interrupted)."""

    name: str


@dataclass(slots=True)
class _Waiter:
    match: Callable[[ClientEvent], bool]
    future: asyncio.Future[ClientEvent]
    step: str


class _Protocol(asyncio.Protocol):
    """Forwards the transport's callbacks to the client, keeping them off :class:`RtmpClient`'s API."""

    __slots__ = ("client",)

    def __init__(self, client: RtmpClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)

    def pause_writing(self) -> None:
        self.client._write_paused = True

    def resume_writing(self) -> None:
        self.client._resume_writing()


class RtmpClient:
    """One outbound RTMP connection that publishes or plays one stream.

    :meth:`connect` does everything up to a connected ``NetConnection``; then :meth:`publish` or :meth:`play`.
    The steps are also available one by one (:meth:`open`, :meth:`handshake`, :meth:`connect_app`) for callers
    that need to look between them.

    Received audio, video and data messages go to ``on_media`` when given (called from the event loop, in
    order: the cheapest path, for a puller that feeds the hub), otherwise to :meth:`messages` once :meth:`play`
    was sent. ``on_event`` sees every :data:`~livesrv.codec.rtmp.client.ClientEvent` (status messages such as
    ``NetStream.Play.UnpublishNotify``, control messages), media included. Neither callback may block.
    """

    def __init__(
        self,
        *,
        complex_handshake: bool = False,
        chunk_size: int = 4096,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
        max_queued: int = DEFAULT_MAX_QUEUED,
        on_media: Callable[[m.Message], None] | None = None,
        on_event: Callable[[ClientEvent], None] | None = None,
    ) -> None:
        self._session = ClientSession(complex_handshake=complex_handshake, out_chunk_size=chunk_size)
        self._write_buffer_limit = write_buffer_limit
        self._max_queued = max(1, max_queued)
        self._on_media = on_media
        self._on_event = on_event
        #: The URL given to :meth:`connect` (None after a bare :meth:`open`).
        self.url: RtmpUrl | None = None
        #: ``host:port`` of the server, for messages.
        self.peer = ""
        #: Bytes read from and written to the socket, handshake included.
        self.recv_bytes = 0
        self.send_bytes = 0
        #: The message stream of the publish or play (0 before createStream).
        self.stream_id = 0
        #: What ended the connection, when it was not :meth:`close` (None while open or after close()).
        self.error: RtmpClientError | None = None
        self._stream_name = ""
        self._mode = ""  # "", "publish" or "play": set when the command is sent
        self._can_send = False  # publishing and open: the one check on the send path
        self._connected = False  # NetConnection.Connect succeeded
        self._handshake: HandshakeComplete | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._closed_future: asyncio.Future[None] | None = None
        self._closing = False  # close() or abort() was called
        self._closed = False
        self._end_cause = ""  # how the connection ended, for the errors of operations caught by it
        self._waiters: list[_Waiter] = []
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._queue: deque[m.Message] = deque()
        self._queue_waiter: asyncio.Future[None] | None = None
        self._user_paused = False
        self._queue_paused = False
        self._reading = True

    # ------------------------------------------------------------------------------------- connecting

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        timeout: float | None = 10.0,
        sock: socket.socket | None = None,
        complex_handshake: bool = False,
        chunk_size: int = 4096,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
        max_queued: int = DEFAULT_MAX_QUEUED,
        on_media: Callable[[m.Message], None] | None = None,
        on_event: Callable[[ClientEvent], None] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> RtmpClient:
        """Resolve, connect TCP, handshake and ``connect`` to the URL's app, all within ``timeout`` seconds.

        ``sock`` is an already connected socket to use instead (e.g. one with custom socket options); the URL
        still names the app and stream. ``properties`` are added to the connect command object.
        """
        target = RtmpUrl.parse(url)
        client = cls(
            complex_handshake=complex_handshake,
            chunk_size=chunk_size,
            write_buffer_limit=write_buffer_limit,
            max_queued=max_queued,
            on_media=on_media,
            on_event=on_event,
        )
        client.url = target
        try:
            async with client._bounded(timeout, "TCP connect") as step:
                await client._open(step, target.host, target.port, sock)
                await client._connect_app(step, target.app, target.tc_url, properties)
        except BaseException:
            client.abort()
            raise
        return client

    async def open(
        self, host: str, port: int = DEFAULT_PORT, *, timeout: float | None = 10.0, sock: socket.socket | None = None
    ) -> None:
        """Open the TCP connection (or take over ``sock``) and send C0+C1; the handshake goes on by itself."""
        async with self._bounded(timeout, "TCP connect") as step:
            await self._open(step, host, port, sock)

    async def handshake(self, *, timeout: float | None = 10.0) -> HandshakeComplete:
        """Wait for the handshake to finish; the result says whether the server signed its S1 (complex)."""
        async with self._bounded(timeout, "handshake") as step:
            return await self._wait_handshake(step)

    async def connect_app(
        self, app: str, tc_url: str, *, timeout: float | None = 10.0, properties: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send ``connect`` (after the handshake) and wait for its ``_result``; returns the server's info
        object (``code`` ``NetConnection.Connect.Success``, ...)."""
        async with self._bounded(timeout, "handshake") as step:
            return await self._connect_app(step, app, tc_url, properties)

    async def _open(self, step: _Step, host: str, port: int, sock: socket.socket | None) -> None:
        if self._loop is not None:
            raise RuntimeError("RtmpClient is already open")
        loop = self._loop = asyncio.get_running_loop()
        self._closed_future = loop.create_future()
        self.peer = _netloc(host, port)
        step.name = "TCP connect"
        try:
            if sock is None:
                await loop.create_connection(lambda: _Protocol(self), host, port)
            else:
                await loop.create_connection(lambda: _Protocol(self), sock=sock)
        except OSError as exc:
            if isinstance(exc, socket.gaierror):
                error = RtmpConnectError(f"cannot resolve {host!r}: {exc.strerror or exc}", step=step.name)
            else:
                error = RtmpConnectError(f"cannot connect to {self.peer}: {exc.strerror or exc}", step=step.name)
            self.error, self._end_cause = error, "never connected"
            self._mark_closed()
            raise error from exc
        except BaseException:
            self.abort()
            raise

    async def _wait_handshake(self, step: _Step) -> HandshakeComplete:
        step.name = "handshake"
        if self._handshake is not None:
            return self._handshake
        waiter = self._expect(lambda ev: type(ev) is HandshakeComplete, step.name)
        return cast(HandshakeComplete, await self._wait(waiter))

    async def _connect_app(
        self, step: _Step, app: str, tc_url: str, properties: dict[str, Any] | None
    ) -> dict[str, Any]:
        await self._wait_handshake(step)
        step.name = "connect"
        reply = await self._command(step, self._session.connect(app, tc_url, **(properties or {})))
        self._connected = True
        return next((v for v in reply.values if isinstance(v, dict)), {})

    # --------------------------------------------------------------------------------- publish, play

    async def publish(
        self, stream: str | None = None, *, timeout: float | None = 10.0, publish_type: str = "live"
    ) -> None:
        """createStream and publish ``stream`` (default: the URL's); returns on ``NetStream.Publish.Start``.

        ``releaseStream`` and ``FCPublish`` go first, unanswered, as FFmpeg and OBS send them: some servers
        and CDNs expect them, and the others ignore them.
        """
        name = self._begin(stream, "publish")
        async with self._bounded(timeout, "createStream") as step:
            self._session.call("releaseStream", name)
            self._session.call("FCPublish", name)
            sid = await self._create_stream(step)
            self._mode = "publish"
            step.name = "publish"
            self._session.publish(sid, name, publish_type)
            await self._status(step, sid, "NetStream.Publish.Start")
            self._can_send = not self._closing and not self._closed

    async def play(self, stream: str | None = None, *, timeout: float | None = 10.0, start: float = -2.0) -> None:
        """createStream and play ``stream`` (default: the URL's); returns on ``NetStream.Play.Start``.

        Media the server sends from then on (it may come right behind the status) goes to ``on_media`` or
        :meth:`messages`.
        """
        name = self._begin(stream, "play")
        async with self._bounded(timeout, "createStream") as step:
            sid = await self._create_stream(step)
            self._mode = "play"
            step.name = "play"
            self._session.play(sid, name, start)
            await self._status(step, sid, "NetStream.Play.Start")

    async def call(self, name: str, *args: Any, timeout: float | None = 10.0) -> list[Any]:
        """Send a command on the connection and wait for its ``_result``; returns the values after the
        transaction id. A round trip also proves the server has read everything sent before it."""
        self._check_open(name)
        async with self._bounded(timeout, name) as step:
            return (await self._command(step, self._session.call(name, *args))).values

    def _begin(self, stream: str | None, what: str) -> str:
        self._check_open(what)
        if not self._connected:
            raise RuntimeError(f"{what}() before connect")
        if self._mode:
            raise RuntimeError(f"{what}(): this client already sent {self._mode}")
        name = stream if stream is not None else (self.url.stream if self.url is not None else "")
        if not name:
            raise ValueError(f"{what}() needs a stream name")
        self._stream_name = name
        return name

    async def _create_stream(self, step: _Step) -> int:
        step.name = "createStream"
        reply = await self._command(step, self._session.create_stream())
        sid = reply.values[1] if len(reply.values) > 1 else None
        if not isinstance(sid, float) or not 0 < sid < 2**31:
            error = RtmpProtocolError(f"createStream answered {reply.values!r}"[:200], step=step.name)
            self._fail(error)
            raise error
        self.stream_id = int(sid)
        return self.stream_id

    async def _command(self, step: _Step, txn: float) -> CommandReply:
        """Wait for the reply to the command just queued as ``txn``; ``_error`` raises RtmpRefusedError."""
        waiter = self._expect(lambda ev: type(ev) is CommandReply and ev.transaction_id == txn, step.name)
        self._flush()
        reply = cast(CommandReply, await self._wait(waiter))  # the waiter matches only replies
        if reply.name == "_error":
            info = next((v for v in reply.values if isinstance(v, dict)), {})
            raise RtmpRefusedError(step.name, str(info.get("code", "_error")), str(info.get("description", "")))
        return reply

    async def _status(self, step: _Step, sid: int, success: str) -> None:
        def match(ev: ClientEvent) -> bool:
            return (
                type(ev) is StatusEvent
                and ev.stream_id == sid
                and (ev.code == success or ev.level == "error" or ev.code in _FAILURE_CODES)
            )

        waiter = self._expect(match, step.name)
        self._flush()
        ev = cast(StatusEvent, await self._wait(waiter))  # the waiter matches only status events
        if ev.code != success:
            raise RtmpRefusedError(step.name, ev.code, ev.description)

    # ------------------------------------------------------------------------------------------ sending

    def send_metadata(self, metadata: dict[str, Any]) -> None:
        """Send ``@setDataFrame onMetaData`` (written at once; see :meth:`drain`)."""
        if not self._can_send:
            self._cannot_send("send_metadata")
        self._session.send_metadata(self.stream_id, metadata)
        self._flush()

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Send one audio (8), video (9) or data (18) message, an FLV tag body, at ``timestamp`` ms.

        Written to the transport at once; call :meth:`drain` between batches so a slow destination makes the
        caller wait instead of buffering without bound.
        """
        if not self._can_send:
            self._cannot_send("send_media")
        self._session.send_media(self.stream_id, type_id, timestamp, payload)
        self._flush()

    async def drain(self, *, timeout: float | None = None) -> None:
        """Wait while more than ``write_buffer_limit`` bytes wait for the socket; raises once it is closed."""
        self._check_open("drain")
        if not self._write_paused:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drainers.append(future)
        try:
            async with self._bounded(timeout, "drain"):
                await future
        finally:
            self._drainers.remove(future)

    def _cannot_send(self, what: str) -> None:
        if self._ending:
            raise self._ended_error(what)
        raise RuntimeError(f"{what}() before publish() succeeded")

    def _flush(self) -> None:
        out = self._session.data_to_send()
        if out and self._transport is not None:
            self._transport.write(out)
            self.send_bytes += len(out)

    def _resume_writing(self) -> None:
        self._write_paused = False
        for future in self._drainers:
            if not future.done():
                future.set_result(None)

    # ---------------------------------------------------------------------------------------- receiving

    async def messages(self) -> AsyncIterator[m.Message]:
        """The audio, video and data messages received while playing, in order; ends when the connection
        closes (``error`` says why, None after :meth:`close`).

        Once ``max_queued`` messages wait here (plus the rest of the read that brought the last one), the client
        stops reading the socket until half of them are consumed, so TCP slows the server down instead of this
        process buffering a stream it cannot keep up with.
        """
        if self._on_media is not None:
            raise RuntimeError("messages() is not available with on_media")
        queue = self._queue
        while True:
            while queue:
                msg = queue.popleft()
                if self._queue_paused and len(queue) <= self._max_queued // 2:
                    self._queue_paused = False
                    self._update_reading()
                yield msg
            if self._closed or self._loop is None:
                return
            waiter = self._queue_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._queue_waiter = None

    def pause_reading(self) -> None:
        """Stop reading the socket (the server is then held back by TCP) until :meth:`resume_reading`."""
        self._user_paused = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._user_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        want = not (self._user_paused or self._queue_paused)
        if want != self._reading and self._transport is not None and not (self._closed or self._closing):
            self._reading = want
            if want:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()

    def _deliver(self, msg: m.Message) -> None:
        if self._on_media is not None:
            self._on_media(msg)
            return
        if self._mode != "play":
            return  # nobody asked for media: a publisher does not queue what a server might echo
        self._queue.append(msg)
        waiter = self._queue_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self._queue) >= self._max_queued and not self._queue_paused:
            self._queue_paused = True
            self._update_reading()

    # ----------------------------------------------------------------------------- transport callbacks

    def _made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        transport.set_write_buffer_limits(high=self._write_buffer_limit)
        self._flush()  # C0+C1

    def _received(self, data: bytes) -> None:
        self.recv_bytes += len(data)
        try:
            events = self._session.receive_data(data)
        except ProtocolError as exc:
            self._fail(RtmpProtocolError(f"{self.peer} sent malformed RTMP: {exc}"))
            return
        on_event = self._on_event
        for ev in events:
            if on_event is not None:
                on_event(ev)
            if type(ev) is MediaEvent:
                self._deliver(ev.message)
                continue
            if type(ev) is HandshakeComplete:
                self._handshake = ev
            for waiter in self._waiters:
                if not waiter.future.done() and waiter.match(ev):
                    waiter.future.set_result(ev)
        self._flush()  # handshake answers, acknowledgements, ping responses

    def _lost(self, exc: Exception | None) -> None:
        if not self._end_cause:
            if self._closing:
                self._end_cause = "closed by the client"
            elif exc is None:
                self._end_cause = "closed by the server"
            else:
                self._end_cause = f"lost: {exc}"
            if not self._closing:
                self.error = RtmpClosedError(f"connection to {self.peer} {self._end_cause}")
        self._mark_closed()

    def _fail(self, error: RtmpClientError) -> None:
        """End the connection because of ``error`` (which the waiting operations raise)."""
        if not self._end_cause:
            self._end_cause = str(error)
            self.error = error
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(self._ended_error(waiter.step))
        self._can_send = False
        if self._transport is not None:
            self._transport.abort()

    def _mark_closed(self) -> None:
        self._closed = True
        self._can_send = False
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(self._ended_error(waiter.step))
        for future in self._drainers:
            if not future.done():
                future.set_exception(self._ended_error("drain"))
        if self._queue_waiter is not None and not self._queue_waiter.done():
            self._queue_waiter.set_result(None)
        if self._closed_future is not None and not self._closed_future.done():
            self._closed_future.set_result(None)

    # ---------------------------------------------------------------------------------------- waiting

    @contextlib.asynccontextmanager
    async def _bounded(self, timeout: float | None, first_step: str) -> AsyncIterator[_Step]:
        """Bound an operation by ``timeout`` seconds; a timeout raises RtmpTimeoutError naming its step."""
        step = _Step(first_step)
        try:
            async with asyncio.timeout(timeout):
                yield step
        except TimeoutError:
            server = f" (server {self.peer})" if self.peer else ""
            raise RtmpTimeoutError(f"{step.name} timed out after {timeout:g}s{server}", step=step.name) from None

    def _expect(self, match: Callable[[ClientEvent], bool], step: str) -> _Waiter:
        """Register interest in an event before the command that causes it is sent."""
        self._check_open(step)
        waiter = _Waiter(match, asyncio.get_running_loop().create_future(), step)
        self._waiters.append(waiter)
        return waiter

    async def _wait(self, waiter: _Waiter) -> ClientEvent:
        try:
            return await waiter.future
        finally:
            self._waiters.remove(waiter)

    def _check_open(self, step: str) -> None:
        if self._loop is None:
            raise RuntimeError(f"{step}: the client is not open")
        if self._ending:
            raise self._ended_error(step)

    @property
    def _ending(self) -> bool:
        """Closed, or on its way there: no new operation may start."""
        return self._closed or self._closing or bool(self._end_cause)

    def _ended_error(self, step: str) -> RtmpClientError:
        cause = self._end_cause or "closed by the client"
        if isinstance(self.error, RtmpProtocolError):
            return RtmpProtocolError(f"{step}: {self.error}", step=step)
        return RtmpClosedError(f"{step}: connection to {self.peer} {cause}", step=step)

    # ---------------------------------------------------------------------------------------- closing

    @property
    def closed(self) -> bool:
        """The connection is gone: closed by either side, lost, or it could not be opened."""
        return self._closed

    @property
    def publishing(self) -> bool:
        return self._can_send

    @property
    def writing_paused(self) -> bool:
        """More than ``write_buffer_limit`` bytes wait for the socket: :meth:`drain` would wait."""
        return self._write_paused

    async def wait_closed(self) -> None:
        """Return once the connection is gone, whoever closed it."""
        if self._closed_future is not None:
            await asyncio.shield(self._closed_future)

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes included."""
        self._closing = True
        self._can_send = False
        if self._transport is None:
            self._mark_closed()
        elif not self._closed:
            self._transport.abort()

    async def close(self, *, timeout: float = 5.0) -> None:
        """Say goodbye (FCUnpublish, deleteStream), flush, close; idempotent.

        Waits up to ``timeout`` seconds for the unsent bytes to leave, then aborts: a destination that stopped
        reading cannot hold the caller.
        """
        transport = self._transport
        if transport is None:
            self.abort()
            return
        if not self._closing and not self._closed:
            self._closing = True
            self._can_send = False
            if self._connected and not self._end_cause:
                if self._mode == "publish":
                    self._session.call("FCUnpublish", self._stream_name)
                if self.stream_id:
                    self._session.delete_stream(self.stream_id)
                self._flush()
            transport.close()
        closed = self._closed_future
        if closed is not None and not closed.done():  # (it exists whenever the transport does)
            try:
                await asyncio.wait_for(asyncio.shield(closed), timeout)
            except TimeoutError:
                transport.abort()
                await asyncio.shield(closed)

    async def __aenter__(self) -> RtmpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
