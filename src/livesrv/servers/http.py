"""HTTP/1.1 over TCP: h11 (sans-IO) parses requests, an asyncio.Protocol owns the socket.

h11 rather than a framework: live responses (HTTP-FLV, HTTP-TS) are long bodies written as shared bytes
objects straight to the transport, and a framework's per-write coroutine and drain would put Python work per
viewer per message on the hot path. Ordinary responses (API JSON, playlists, files) go through
:meth:`HTTPConnection.respond`.

Routes never change at runtime: the application looks each request up when it arrives (see
``livesrv.app``), so nothing can stay "mounted" after its stream is gone.

Slow and idle clients (``http_limits``): each connection has one deadline for the phase it is in -- its
request head (``header_timeout``), its request body (``body_timeout``), or the wait for the next request on
a kept-alive connection (``idle_timeout``) -- and one sweeper task per server closes those past it, so a
slowloris attack holds a descriptor for ``header_timeout`` at most. A connection whose handler runs, or that
carries a live body (HTTP-FLV, HTTP-TS, WebSocket), has none: the hub closes a viewer that stops reading.
Every accepted connection takes a slot of the process-wide :class:`ConnectionBudget` (``max_connections``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from http import HTTPStatus
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from typing import Any

import h11

from livesrv.config import HttpLimitsConfig
from livesrv.servers.limits import ConnectionBudget
from livesrv.servers.tls import TlsEndpoint, TlsListener

log = logging.getLogger("livesrv.http")

MAX_REQUEST_HEADERS = 16 * 1024

#: Connection phases; each but BUSY and STREAM has a deadline. CLOSING: closed, its last bytes still queued.
HEAD, BODY, BUSY, IDLE, STREAM, CLOSING = "head", "body", "busy", "idle", "stream", "closing"
NO_DEADLINE = float("inf")
#: SO_LINGER on, 0 s: close() sends a reset and drops what is queued (see HTTPConnection._abort).
_LINGER_RESET = struct.pack("ii", 1, 0)
#: The sweeper's period: at most this, and at most a quarter of the shortest timeout.
SWEEP_INTERVAL = 0.5


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    ip: str
    body: bytes = b""
    scheme: str = "http"  # "https" on a TLS listener

    @property
    def raw_query(self) -> str:
        _, sep, q = self.target.partition("?")
        return sep + q


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request, "HTTPConnection"], Awaitable[Response | None]]
"""Returns a Response to send, or None when it took the connection over (a live stream)."""


class HTTPConnection(asyncio.Protocol):
    def __init__(self, handler: Handler, server: HTTPServer) -> None:
        self.handler = handler
        self.server = server
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEADERS)
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.scheme = "http"
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.streaming = False  # the handler owns the body (live stream)
        self.write_paused = False
        self.viewer: Any = None  # the hub Viewer of a live body, told about back-pressure
        self.viewer_owner: Any = None  # gets the bytes a live viewer sends (WebSocket frames)
        self.on_close: list[Callable[[], None]] = []
        self._pending_req: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.phase = HEAD
        self.deadline = NO_DEADLINE  # time.monotonic() past which the sweeper closes this connection
        self._counted = False  # holds a slot of the connection budget
        self._busy_bytes = 0  # received while the handler runs (pipelined), buffered by h11
        self._reading_paused = False
        self._queued = 0  # write buffer size when the idle deadline was last moved (see _writing)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        if not self.server.budget.try_acquire():
            self.closed = True
            transport.abort()
            self.server.budget.reject(self.server.name, self.ip)
            return
        self._counted = True
        self._enter(HEAD, self.server.limits.header_timeout)
        # A live viewer whose buffer passes this stops getting batches until it drains (see hub.stream).
        transport.set_write_buffer_limits(high=self.server.max_write_buffer)
        self.server.connections.add(self)

    def _enter(self, phase: str, timeout: float | None = None) -> None:
        self.phase = phase
        self.deadline = NO_DEADLINE if timeout is None else time.monotonic() + timeout

    def check_timeout(self, now: float) -> str | None:
        """Close this connection if its phase outlived its deadline; returns the phase it was closed in."""
        if now <= self.deadline:
            return None
        phase, lim = self.phase, self.server.limits
        if phase in (IDLE, CLOSING) and self._writing(now):
            return None
        if phase == CLOSING:
            log.debug("event=http-timeout listener=%s ip=%s phase=%s reason=%r", self.server.name, self.ip, phase,
                      f"took nothing of its last response for {lim.idle_timeout:g}s")
            self._abort()
            return phase
        if self.closed:
            return None
        if phase == BODY:
            self._refuse(408, f"request body not received within {lim.body_timeout:g}s", level=logging.DEBUG)
        else:
            what = (f"idle for {lim.idle_timeout:g}s" if phase == IDLE
                    else f"request head not received within {lim.header_timeout:g}s")
            log.debug("event=http-timeout listener=%s ip=%s phase=%s reason=%r", self.server.name, self.ip, phase, what)
            # A FIN when nothing is queued; a reset otherwise (a client that reads nothing would hold it open).
            self.close(abort=self.transport is not None and self.transport.get_write_buffer_size() > 0)
        return phase

    def _writing(self, now: float) -> bool:
        """A response still being written is not idle: while the client keeps taking it (the queue shrinks),
        the idle deadline moves on; a client that takes nothing for ``idle_timeout`` is closed all the same."""
        queued = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if queued and queued != self._queued:
            self._queued = queued
            self.deadline = now + self.server.limits.idle_timeout
            return True
        return False

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            if self.viewer_owner is not None:
                self.viewer_owner.data_received(data)
            return  # an HTTP-FLV viewer has nothing more to say; ignore rather than buffer
        if self.closed:
            return
        if self.phase == IDLE:  # the next request starts: its head has header_timeout from now
            self._enter(HEAD, self.server.limits.header_timeout)
        elif self.task is not None:
            # Pipelined while the handler runs: h11 buffers it. Past one request's worth, stop reading (the
            # kernel's buffers push back on the client) rather than buffer without bound.
            self._busy_bytes += len(data)
            if self._busy_bytes > MAX_REQUEST_HEADERS + self.server.limits.max_body_size and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            self._bad_request(str(exc))
            return
        self._process()

    def eof_received(self) -> bool | None:
        if not self.streaming:
            try:
                self.conn.receive_data(b"")
            except h11.RemoteProtocolError:
                pass
        return None

    def _process(self) -> None:
        while self.task is None and not self.closed:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._bad_request(str(exc))
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                self._pending_req = ev
                self._body = []
                self._body_size = 0
                if _content_length(ev) > self.server.limits.max_body_size:
                    self._refuse(413, f"request body over max_body_size {self.server.limits.max_body_size}")
                    return
                self._enter(BODY, self.server.limits.body_timeout)
            elif isinstance(ev, h11.Data):
                self._body.append(bytes(ev.data))
                self._body_size += len(ev.data)
                if self._body_size > self.server.limits.max_body_size:  # chunked: no length told up front
                    self._refuse(413, f"request body over max_body_size {self.server.limits.max_body_size}")
                    return
            elif isinstance(ev, h11.EndOfMessage):
                req = self._pending_req
                self._pending_req = None
                if req is not None:
                    self._enter(BUSY)
                    self._busy_bytes = 0
                    self.task = asyncio.ensure_future(self._run(self._make_request(req, b"".join(self._body))))
            elif isinstance(ev, h11.ConnectionClosed):
                self.close()
                return

    def _make_request(self, ev: h11.Request, body: bytes) -> Request:
        target = ev.target.decode("latin-1")
        parts = urlsplit(target)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in ev.headers}
        return Request(
            method=ev.method.decode("ascii", "replace"),
            target=target,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            ip=self.ip,
            body=body,
            scheme=self.scheme,
        )

    async def _run(self, req: Request) -> None:
        try:
            resp = await self.handler(req, self)
        except Exception:  # a handler bug must cost one request, never the server
            log.exception("event=http-error ip=%s path=%s", self.ip, req.path)
            resp = Response(500, b"internal error\n")
        if resp is not None and not self.closed:
            self.respond(resp, head=req.method == "HEAD")
        self.task = None
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if not self.closed and not self.streaming:
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                self.close()
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                self.close()
                return
            # Waiting for the next request; part of it may already be here (pipelined): then it is a head.
            if self.conn.trailing_data[0]:
                self._enter(HEAD, self.server.limits.header_timeout)
            else:
                self._enter(IDLE, self.server.limits.idle_timeout)
                self._queued = 0
            self._process()

    def respond(self, resp: Response, *, head: bool = False) -> None:
        headers = [("Server", "livesrv"), ("Content-Type", resp.content_type), *resp.headers]
        headers.append(("Content-Length", str(len(resp.body))))
        out = self.conn.send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status)))
        if resp.body and not head:
            out += self.conn.send(h11.Data(data=resp.body))
        out += self.conn.send(h11.EndOfMessage())
        self.write(out)

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """Send the head of a live response whose body runs until the connection closes.

        Written by hand, not through h11: h11 would frame an HTTP/1.1 body of unknown length as chunked, and
        then every write would need its own chunk header. With no length and ``Connection: close`` the body is
        raw bytes, so the same bytes object can be written to every viewer.
        """
        lines = [f"HTTP/1.1 {status} {_reason(status)}", "Server: livesrv", *(f"{k}: {v}" for k, v in headers),
                 "Connection: close", "", ""]
        self.streaming = True
        self._enter(STREAM)
        self.write("\r\n".join(lines).encode("latin-1"))

    def take_over(self, head: bytes) -> None:
        """Leave HTTP for another protocol (WebSocket): ``head`` is the 101 response, built by its library."""
        self.streaming = True
        self._enter(STREAM)
        self.write(head)

    def attach_viewer(self, viewer: Any, owner: Any) -> None:
        self.viewer = viewer
        self.viewer_owner = owner

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.viewer is not None:
            self.viewer.pause(time.monotonic())

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.viewer is not None:
            self.viewer.resume()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed and data:
            self.transport.write(data)

    def _bad_request(self, reason: str) -> None:
        self._refuse(400, reason)

    def _refuse(self, status: int, reason: str, level: int = logging.INFO) -> None:
        """Answer an error status (when a response can still be sent) and close."""
        log.log(level, "event=http-bad-request listener=%s ip=%s status=%d reason=%r", self.server.name, self.ip,
                status, reason)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self.write(self.conn.send(h11.Response(
                    status_code=status, headers=[("Content-Length", "0"), ("Connection", "close")],
                    reason=_reason(status))))
                self.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.close()

    def close(self, *, abort: bool = False) -> None:
        """End this connection. Gracefully, what is queued is still sent first: until then the descriptor is
        open, so the connection stays counted and swept (phase ``closing``) and a client that takes nothing
        of it for ``idle_timeout`` is reset."""
        if self.closed:
            if abort and self.phase == CLOSING:
                self._abort()
            return
        self.closed = True
        self.deadline = NO_DEADLINE
        callbacks, self.on_close = self.on_close, []
        for cb in callbacks:
            cb()
        transport = self.transport
        if abort:
            self._abort()
        elif transport is None or not transport.get_write_buffer_size():
            self._forget()
            if transport is not None:
                transport.close()
        else:
            self._enter(CLOSING, self.server.limits.idle_timeout)
            self._queued = 0
            transport.close()  # connection_lost once the queue is out
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _abort(self) -> None:
        """Drop the connection now with a reset: what is queued, in the process or the kernel, is discarded
        (a plain close would leave the kernel trying to deliver it to a client that takes nothing)."""
        self._forget()
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except (OSError, ValueError):
                pass
        transport.abort()

    def _forget(self) -> None:
        """The descriptor is (being) closed: give back the budget slot and leave the server, exactly once."""
        self.deadline = NO_DEADLINE
        if self._counted:
            self._counted = False
            self.server.budget.release()
        self.server.connections.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self._forget()


def _content_length(ev: h11.Request) -> int:
    """The request's Content-Length (h11 has checked it is one decimal number), 0 without one."""
    for name, value in ev.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class HTTPServer:
    """One HTTP listener (its addresses), its connections, and the sweeper that enforces ``http_limits``.

    ``budget`` and ``limits`` are required: every HTTP listener must count against ``max_connections`` and
    close slow clients, whatever it serves.
    """

    def __init__(self, handler: Handler, name: str = "http", max_write_buffer: int = 4 * 1024 * 1024, *,
                 budget: ConnectionBudget, limits: HttpLimitsConfig) -> None:
        self.handler = handler
        self.name = name
        self.max_write_buffer = max_write_buffer
        self.budget = budget
        self.limits = limits  # read when a phase starts: a reload applies to the next phase of every connection
        self.connections: set[HTTPConnection] = set()
        self._servers: list[asyncio.base_events.Server | TlsListener] = []
        self._tls: list[TlsEndpoint] = []  # the HTTPS listeners' handshakes
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, addresses: Sequence[tuple[str, int]], tls: TlsEndpoint | None = None,
                    reuse_port: bool = False) -> list[tuple[str, int]]:
        """Listen on ``addresses``: plain HTTP, or HTTPS with ``tls`` (called once for each). ``reuse_port``: the
        workers of one host share the port (SO_REUSEPORT)."""
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        if tls is not None:
            self._tls.append(tls)
        for host, port in addresses:
            if tls is not None:
                server = await tls.listen(lambda: HTTPConnection(self.handler, self), host or None, port, reuse_port)
            else:
                server = await loop.create_server(lambda: HTTPConnection(self.handler, self), host or None, port,
                                                  reuse_address=True, reuse_port=reuse_port or None)
            self._servers.append(server)
            bound.extend(sock.getsockname()[:2] for sock in server.sockets)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.name}-sweeper")
        return bound

    def _interval(self) -> float:
        lim = self.limits
        return min(SWEEP_INTERVAL, lim.header_timeout / 4, lim.idle_timeout / 4, lim.body_timeout / 4)

    async def _sweep(self) -> None:
        """One task for all connections: those past their phase's deadline are closed; one line per sweep
        says how many slow heads and bodies were (an attack must not write a line per connection)."""
        while True:
            await asyncio.sleep(self._interval())
            try:
                self.sweep(time.monotonic())
            except Exception:  # a bug here must not stop the timeouts of every other connection
                log.exception("event=http-sweep-error listener=%s", self.name)

    def sweep(self, now: float) -> dict[str, int]:
        """Close the connections past their deadline at ``now``; returns how many per phase."""
        closed: dict[str, int] = {}
        for conn in tuple(self.connections):
            if now > conn.deadline:
                phase = conn.check_timeout(now)
                if phase is not None:
                    closed[phase] = closed.get(phase, 0) + 1
        if closed.get(HEAD) or closed.get(BODY):
            lim = self.limits
            log.info("event=http-timeout listener=%s head=%d body=%d idle=%d open=%d reason=%s", self.name,
                     closed.get(HEAD, 0), closed.get(BODY, 0), closed.get(IDLE, 0), len(self.connections),
                     f'"slow clients: request head not received within {lim.header_timeout:g}s '
                     f'or body within {lim.body_timeout:g}s"')
        return closed

    def stop_listening(self) -> None:
        """No new connections (graceful quit); the connections there go on."""
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for server in self._servers:
            server.close()
        for tls in self._tls:
            tls.close()
        for conn in tuple(self.connections):
            conn.close(abort=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
