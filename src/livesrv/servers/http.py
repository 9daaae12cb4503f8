"""HTTP/1.1 over TCP: h11 (sans-IO) parses requests, an asyncio.Protocol owns the socket.

h11 rather than a framework: live responses (HTTP-FLV, HTTP-TS) are long bodies written as shared bytes
objects straight to the transport, and a framework's per-write coroutine and drain would put Python work per
viewer per message on the hot path. Ordinary responses (API JSON, playlists, files) go through
:meth:`HTTPConnection.respond`.

Routes never change at runtime: the application looks each request up when it arrives (see
``livesrv.app``), so nothing can stay "mounted" after its stream is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from typing import Any

import h11

log = logging.getLogger("livesrv.http")

MAX_REQUEST_HEADERS = 16 * 1024


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    ip: str
    body: bytes = b""

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
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.streaming = False  # the handler owns the body (live stream)
        self.write_paused = False
        self.viewer: Any = None  # the hub Viewer of a live body, told about back-pressure
        self.viewer_owner: Any = None  # gets the bytes a live viewer sends (WebSocket frames)
        self.on_close: list[Callable[[], None]] = []
        self._pending_req: h11.Request | None = None
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        # A live viewer whose buffer passes this stops getting batches until it drains (see hub.stream).
        transport.set_write_buffer_limits(high=self.server.max_write_buffer)
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            if self.viewer_owner is not None:
                self.viewer_owner.data_received(data)
            return  # an HTTP-FLV viewer has nothing more to say; ignore rather than buffer
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
            elif isinstance(ev, h11.Data):
                self._body.append(bytes(ev.data))
                if sum(map(len, self._body)) > 1024 * 1024:
                    self._bad_request("request body too large")
                    return
            elif isinstance(ev, h11.EndOfMessage):
                req = self._pending_req
                self._pending_req = None
                if req is not None:
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
        if not self.closed and not self.streaming:
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                self.close()
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                self.close()
                return
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
        self.write("\r\n".join(lines).encode("latin-1"))

    def take_over(self, head: bytes) -> None:
        """Leave HTTP for another protocol (WebSocket): ``head`` is the 101 response, built by its library."""
        self.streaming = True
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
        log.info("event=http-bad-request ip=%s reason=%r", self.ip, reason)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self.write(
                    self.conn.send(h11.Response(status_code=400, headers=[("Content-Length", "0"), ("Connection", "close")]))
                )
                self.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.close()

    def close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.connections.discard(self)
        callbacks, self.on_close = self.on_close, []
        for cb in callbacks:
            cb()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class HTTPServer:
    def __init__(self, handler: Handler, name: str = "http", max_write_buffer: int = 4 * 1024 * 1024) -> None:
        self.handler = handler
        self.name = name
        self.max_write_buffer = max_write_buffer
        self.connections: set[HTTPConnection] = set()
        self._servers: list[asyncio.base_events.Server] = []

    async def start(self, addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        for host, port in addresses:
            server = await loop.create_server(lambda: HTTPConnection(self.handler, self), host or None, port, reuse_address=True)
            self._servers.append(server)
            bound.extend(sock.getsockname()[:2] for sock in server.sockets)
        return bound

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in tuple(self.connections):
            conn.close(abort=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
