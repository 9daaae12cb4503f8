"""Slow, idle and too many clients (``http_limits``, ``max_connections``) against a real server; the shared
connection budget's rate-limited log and the open-file limit as units.

Every wait is on a condition or a socket event with a deadline; the server's timeouts are short (about 1 s)
so that each test proves a timeout fired without making the suite slow. A close is timed from *before* the
connection was opened, so "not before its timeout" holds however slow the machine is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from livesrv.app import App
from livesrv.config import HttpLimitsConfig
from livesrv.servers import limits
from livesrv.servers.http import MAX_REQUEST_HEADERS, HTTPConnection, HTTPServer, Request, Response
from livesrv.servers.limits import ConnectionBudget, check_open_file_limit, raise_open_file_limit
from tests.helpers import FlvViewer, wait_until

#: What a slowloris client sends: a request head that never ends.
UNFINISHED_HEAD = b"GET /live/x.flv HTTP/1.1\r\nHost: x\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MakeServer = Callable[..., Awaitable[App]]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _capture(name: str) -> Iterator[list[str]]:
    """The messages of logger ``name`` (whatever the root's set-up: the CLI's stops propagation)."""
    logger = logging.getLogger(name)
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def limits_log() -> Iterator[list[str]]:
    yield from _capture("livesrv.limits")


@pytest.fixture
def http_log() -> Iterator[list[str]]:
    yield from _capture("livesrv.http")


async def _open(port: int, n: int, data: bytes = UNFINISHED_HEAD) -> list[Conn]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if data:
            writer.write(data)
        conns.append((reader, writer))
    return conns


async def _closed_by_server(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Read until the server closes (EOF or reset): when that was, and what it had sent first."""
    got = b""
    try:
        while chunk := await reader.read(65536):
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic(), got


async def _all_closed(conns: list[Conn], within: float) -> list[tuple[float, bytes]]:
    return await asyncio.wait_for(asyncio.gather(*(_closed_by_server(r) for r, _ in conns)), within)


def _close(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


#: Linux's TCP_CLOSE, the state of a socket that got a reset (TCP_INFO's first byte).
TCP_CLOSE = 7


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _stuck_client(port: int, request: bytes) -> socket.socket:
    """A client that sends ``request`` and never reads: its receive window closes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def _rejects(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("event=reject ")]


def _suppressed(lines: list[str]) -> int:
    """Rejections the reject lines account for: one each, plus the count each says it left out."""
    counts = [re.search(r" suppressed=(\d+)", line) for line in _rejects(lines)]
    return sum(1 + int(m.group(1)) for m in counts if m is not None)


# ------------------------------------------------------------------------------------- slowloris


async def test_slowloris_on_http_and_api_closed_by_header_timeout_others_served(make_server: MakeServer) -> None:
    timeout = 1.5
    html = Path("objs/nginx/html")  # the test runs in its own directory (conftest)
    html.mkdir(parents=True)
    (html / "index.html").write_bytes(b"hello\n")
    app = await make_server(extra=f"http_limits {{ header_timeout {timeout}; idle_timeout {timeout}; }}",
                            max_connections=1000)
    http, api = app.port("http"), app.port("api")
    # Live viewers (no publisher yet: they wait, body open) must outlive every HTTP timeout.
    flv = FlvViewer(f"http://127.0.0.1:{http}/live/wait.flv").start()
    ws = FlvViewer(f"http://127.0.0.1:{http}/live/wait.flv", ws=True).start()
    try:
        await wait_until(lambda: flv.status == 200 and ws.status == 101, 10, "two live viewers")
        start = time.monotonic()
        held = await _open(http, 200) + await _open(api, 200)
        await wait_until(lambda: len(app.http.connections) == 202 and len(app.api.connections) == 200, 10,
                         "the server to hold every slowloris connection")
        assert app.budget.open == 402
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{api}/api/v1/versions") as r:
                assert r.status == 200 and (await r.json())["code"] == 0
            async with s.get(f"http://127.0.0.1:{http}/index.html") as r:
                assert r.status == 200 and await r.read() == b"hello\n"
        served = time.monotonic()
        ends = await _all_closed(held, timeout + 10)
        assert all(got == b"" for _, got in ends)  # closed, not answered
        first = min(t for t, _ in ends)
        assert first >= start + timeout, "a slowloris connection was closed before header_timeout"
        assert served < first, "the normal clients were served while the slowloris connections were held"
        _close(held)
        await wait_until(lambda: app.budget.open == 2, 5, "only the live viewers left")
        assert not flv.ended.is_set() and not ws.ended.is_set()
        assert all(c.streaming for c in app.http.connections)
    finally:
        await flv.close()
        await ws.close()


async def test_exporter_port_has_the_same_protection(make_server: MakeServer) -> None:
    app = await make_server(extra="exporter { enabled on; listen 127.0.0.1:0; } http_limits { header_timeout 0.5; }")
    port = app.port("exporter")
    start = time.monotonic()
    held = await _open(port, 20)
    await wait_until(lambda: app.budget.open == 20, 10, "the exporter's connections counted in the budget")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200 and "srs_" in await r.text()
    ends = await _all_closed(held, 10)
    assert min(t for t, _ in ends) >= start + 0.5
    _close(held)
    await wait_until(lambda: app.budget.open == 0, 5, "every exporter connection released")


# ------------------------------------------------------------------------------- max_connections


async def test_max_connections_counts_every_listener_and_refuses_at_once(
        make_server: MakeServer, limits_log: list[str]) -> None:
    app = await make_server(max_connections=20)  # default timeouts (10 s): nothing here waits for them
    rtmp, http, api = app.port("rtmp"), app.port("http"), app.port("api")
    rtmp_held = await _open(rtmp, 10, b"")  # TCP only: the RTMP handshake is never started
    http_held = await _open(http, 5) + await _open(api, 5)
    await wait_until(lambda: app.budget.open == 20, 10, "20 connections held")
    assert (len(app.rtmp.connections), len(app.http.connections), len(app.api.connections)) == (10, 5, 5)

    burst_start = time.monotonic()
    refused: list[Conn] = []
    for _ in range(10):
        for port in (rtmp, http, api):
            refused += await _open(port, 1, b"")
    burst = time.monotonic() - burst_start
    ends = await _all_closed(refused, 10)
    assert all(got == b"" for _, got in ends)
    assert max(t for t, _ in ends) - burst_start < 5, "refused at once, not by a timeout (10 s)"
    assert app.budget.open == 20 and app.budget.rejected == 30
    _close(refused)

    # One line at once, then one summary for the rest of the interval: never one line per connection.
    await wait_until(lambda: _suppressed(limits_log) == 30, 5, "every rejection accounted for in the log")
    rejects = _rejects(limits_log)
    assert 2 <= len(rejects) <= 2 + int(burst / limits.REJECT_LOG_INTERVAL)
    assert re.fullmatch(r'event=reject listener=(rtmp|http|api) ip=127\.0\.0\.1 open=20 suppressed=0 '
                        r'reason="max_connections 20 reached"', rejects[0]), rejects[0]

    # Slots that are given back can be taken again, by any listener.
    _close(rtmp_held[:3] + http_held[:2])
    await wait_until(lambda: app.budget.open == 15, 10, "5 slots released")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{api}/api/v1/versions") as r:
            assert r.status == 200
    more = await _open(rtmp, 3, b"")
    await wait_until(lambda: len(app.rtmp.connections) == 10, 10, "new RTMP connections accepted")
    assert app.budget.rejected == 30
    _close(rtmp_held[3:] + http_held[2:] + more)


async def test_reload_applies_new_limits_to_new_connections(make_server: MakeServer) -> None:
    app = await make_server()
    assert app.reload(app.config.model_copy(update={
        "max_connections": 3, "http_limits": HttpLimitsConfig(header_timeout=0.5)})) == []
    start = time.monotonic()
    held = await _open(app.port("api"), 3)
    await wait_until(lambda: app.budget.open == 3, 10, "3 connections")
    extra = await _open(app.port("http"), 1)
    (t, got), = await _all_closed(extra, 10)
    assert got == b"" and t - start < 5 and app.budget.rejected == 1
    ends = await _all_closed(held, 10)
    assert min(t for t, _ in ends) >= start + 0.5
    _close(held + extra)


# ---------------------------------------------------------------------------- idle and bodies


async def test_idle_keepalive_connection_closed_after_idle_timeout(make_server: MakeServer) -> None:
    header, idle = 5.0, 1.0
    app = await make_server(extra=f"http_limits {{ header_timeout {header}; idle_timeout {idle}; }}")
    start = time.monotonic()
    (reader, writer), = await _open(app.port("api"), 1, b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = re.search(rb"(?i)content-length: (\d+)", head)
    assert length is not None
    await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    answered = time.monotonic()
    t, got = await asyncio.wait_for(_closed_by_server(reader), header + 10)
    assert got == b""
    assert t >= start + idle, "closed before idle_timeout"
    assert t - answered < header, "closed by idle_timeout, not header_timeout"
    writer.close()


async def test_a_response_being_read_slowly_is_not_idle(make_server: MakeServer) -> None:
    """idle_timeout runs once the response is out: a client still reading a big one is not cut off, one that
    reads nothing is reset after idle_timeout, whether its connection is kept alive or closing (the
    descriptor is held until the queue is out: it stays counted and swept)."""
    idle = 0.5
    size = 32 * 1024 * 1024  # far more than the socket buffers hold
    html = Path("objs/nginx/html")
    html.mkdir(parents=True)
    (html / "big.bin").write_bytes(b"x" * size)
    app = await make_server(extra=f"http_limits {{ idle_timeout {idle}; }}")
    request = b"GET /big.bin HTTP/1.1\r\nHost: x\r\n"
    start = time.monotonic()
    (reader, writer), = await _open(app.port("http"), 1, request + b"Connection: close\r\n\r\n")
    stuck = [_stuck_client(app.port("http"), request + b"\r\n"),
             _stuck_client(app.port("http"), request + b"Connection: close\r\n\r\n")]
    await wait_until(lambda: len(app.http.connections) == 3, 10, "three connections")
    ports = {sock.getsockname()[1] for sock in stuck}
    stuck_conns = [c for c in app.http.connections if c.transport.get_extra_info("peername")[1] in ports]
    await wait_until(lambda: {c.phase for c in stuck_conns} == {"idle", "closing"}, 10, "both responses queued")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    got = 0
    while got < size:  # about 2 MiB every 0.1 s: the whole body takes several idle_timeouts
        got += len(await asyncio.wait_for(reader.readexactly(min(2 * 1024 * 1024, size - got)), 10))
        await asyncio.sleep(0.1)  # the client's pace, not a synchronization
    assert time.monotonic() - start > 2 * idle
    assert await asyncio.wait_for(reader.read(), 10) == b""  # then the end of the body, cleanly
    # Those that read nothing: reset by the server (their responses could not be delivered).
    await wait_until(lambda: all(_tcp_state(sock) == TCP_CLOSE for sock in stuck), 10, "the stuck readers reset")
    await wait_until(lambda: app.budget.open == 0 and not app.http.connections, 10, "every connection released")
    writer.close()
    for sock in stuck:
        sock.close()


async def test_keepalive_connection_reused_within_idle_timeout(make_server: MakeServer) -> None:
    app = await make_server(extra="http_limits { idle_timeout 1; }")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        for _ in range(3):
            async with s.get(f"http://127.0.0.1:{app.port('api')}/api/v1/versions") as r:
                assert r.status == 200
                await r.read()
        assert len(app.api.connections) == 1  # one kept-alive connection served all three
        await wait_until(lambda: not app.api.connections, 10, "the idle connection closed by the server")


async def test_pipelined_unfinished_head_gets_header_timeout_not_idle_timeout(make_server: MakeServer) -> None:
    header, idle = 0.5, 30.0
    app = await make_server(extra=f"http_limits {{ header_timeout {header}; idle_timeout {idle}; }}")
    (reader, writer), = await _open(app.port("api"), 1, b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\n\r\n"
                                                      b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\n")
    _, got = await asyncio.wait_for(_closed_by_server(reader), 10)  # idle_timeout (30 s) would time this out
    assert got.startswith(b"HTTP/1.1 200 ") and got.count(b"HTTP/1.1 ") == 1
    writer.close()


async def test_pipelined_bytes_while_a_handler_runs_are_bounded() -> None:
    """A client that pipelines without end while its request is handled is read no further than one
    request's worth (the kernel pushes back), and is read again once the handler has answered."""

    release = asyncio.Event()

    async def slow(req: Request, conn: HTTPConnection) -> Response:
        await release.wait()
        return Response(200, b"ok")

    limits_cfg = HttpLimitsConfig(max_body_size=1024)
    server = HTTPServer(slow, "test", budget=ConnectionBudget(10), limits=limits_cfg)
    (host, port), = await server.start([("127.0.0.1", 0)])
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: any(c.task is not None for c in server.connections), 5, "the handler running")
        conn = next(iter(server.connections))
        writer.write(b"x" * (4 * 1024 * 1024))  # more than the socket buffers hold: drain() would block

        await wait_until(lambda: conn._reading_paused, 5, "reading paused")
        buffered = len(conn.conn.trailing_data[0])
        assert MAX_REQUEST_HEADERS + limits_cfg.max_body_size < buffered < 2 * 1024 * 1024
        release.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        # Reading resumes: the garbage is then parsed as the next head, refused, and the connection closed.
        await wait_until(lambda: not conn._reading_paused, 5, "reading resumed")
        await wait_until(lambda: conn.closed and not server.connections, 10, "the garbage refused")
        assert server.budget.open == 0
        writer.close()
    finally:
        await server.close()


async def test_body_over_max_body_size_is_413_and_closed(make_server: MakeServer) -> None:
    app = await make_server(extra="http_limits { max_body_size 1024; }")
    port = app.port("api")
    # Told up front (Content-Length): refused before any of it is read.
    too_long = b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n"
    (reader, writer), = await _open(port, 1, too_long)
    _, got = await asyncio.wait_for(_closed_by_server(reader), 10)
    assert got.startswith(b"HTTP/1.1 413 ")
    writer.close()
    # Chunked: refused once the chunks pass the limit.
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    (reader, writer), = await _open(port, 1, b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"1\r\nx\r\n")
    _, got = await asyncio.wait_for(_closed_by_server(reader), 10)
    assert got.startswith(b"HTTP/1.1 413 ")
    writer.close()
    # At the limit: read and answered as usual (the route refuses the method, not the size).
    body = b"x" * 1024
    head = b"POST /api/v1/versions HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n"
    (reader, writer), = await _open(port, 1, head + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert not head.startswith(b"HTTP/1.1 413 ") and head.startswith(b"HTTP/1.1 ")
    writer.close()
    await wait_until(lambda: app.budget.open == 0, 5, "every connection released")


async def test_trickled_body_closed_by_body_timeout(make_server: MakeServer) -> None:
    timeout = 1.0
    app = await make_server(extra=f"http_limits {{ body_timeout {timeout}; }}")
    start = time.monotonic()
    head = b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    (reader, writer), = await _open(app.port("api"), 1, head)

    async def trickle() -> None:
        """A byte every 0.1 s: always "active", far too slow to send 1000 bytes within body_timeout."""
        try:
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)  # the client's pace, not a synchronization
        except (ConnectionResetError, BrokenPipeError):
            pass

    sender = asyncio.create_task(trickle())
    try:
        t, got = await asyncio.wait_for(_closed_by_server(reader), timeout + 10)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert got.startswith(b"HTTP/1.1 408 ") or got == b""
    assert t >= start + timeout
    writer.close()
    await wait_until(lambda: app.budget.open == 0, 5, "the connection released")


async def test_timeouts_log_one_summary_per_sweep_not_a_line_per_connection(
        make_server: MakeServer, http_log: list[str]) -> None:
    app = await make_server(extra="http_limits { header_timeout 0.5; }")
    held = await _open(app.port("http"), 50)
    await _all_closed(held, 10)
    _close(held)
    summaries = [line for line in http_log if line.startswith("event=http-timeout listener=http head=")]
    heads = [re.search(r" head=(\d+)", line) for line in summaries]
    assert summaries and sum(int(m.group(1)) for m in heads if m is not None) == 50
    assert len(summaries) <= 5  # a few sweeps, never 50 lines at INFO
    await wait_until(lambda: app.budget.open == 0, 5, "every connection released")


# ------------------------------------------------------------------------------------------- units


def test_budget_counts_and_rate_limits_its_log(limits_log: list[str]) -> None:
    now = [100.0]
    budget = ConnectionBudget(2, interval=1.0, clock=lambda: now[0])
    assert budget.try_acquire() and budget.try_acquire() and not budget.try_acquire()
    for _ in range(5):  # no running loop here: the next line carries the count
        budget.reject("http", "10.0.0.1")
    assert len(limits_log) == 1 and "suppressed=0" in limits_log[0]
    now[0] += 0.99
    budget.reject("rtmp", "10.0.0.2")
    assert len(limits_log) == 1
    now[0] += 0.02
    budget.reject("api", "10.0.0.3")
    assert len(limits_log) == 2
    assert limits_log[1] == 'event=reject listener=api ip=10.0.0.3 open=2 suppressed=5 reason="max_connections 2 reached"'
    budget.reject("api", "10.0.0.3")
    budget.close()  # shutdown: what was left out is still reported
    assert limits_log[2] == 'event=reject listener=api ip=10.0.0.3 open=2 suppressed=0 reason="max_connections 2 reached"'
    assert _suppressed(limits_log) == budget.rejected == 8
    budget.release()
    assert budget.try_acquire()


async def test_budget_reports_the_end_of_a_burst_without_a_next_rejection(limits_log: list[str]) -> None:
    budget = ConnectionBudget(0, interval=0.2)
    for _ in range(10):
        budget.reject("http", "10.0.0.1")
    assert len(limits_log) == 1
    await wait_until(lambda: len(limits_log) == 2, 5, "the summary line")
    assert "suppressed=8" in limits_log[1] and _suppressed(limits_log) == 10
    budget.close()


class _FakeRlimit:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, max_settable: int | None = None) -> None:
        self.limit = (soft, hard)
        self.max_settable = max_settable
        monkeypatch.setattr(resource, "getrlimit", lambda which: self.limit)
        monkeypatch.setattr(resource, "setrlimit", self.set)

    def set(self, which: int, value: tuple[int, int]) -> None:
        if self.max_settable is not None and value[0] > self.max_settable:
            raise ValueError("not allowed")
        self.limit = value


def test_open_file_limit_raised_to_the_hard_limit(monkeypatch: pytest.MonkeyPatch, limits_log: list[str]) -> None:
    fake = _FakeRlimit(monkeypatch, 1024, 65536)
    assert raise_open_file_limit(1000, 64) == 65536 and fake.limit == (65536, 65536)
    assert not [line for line in limits_log if "nofile-limit-low" in line]


def test_open_file_limit_below_max_connections_warns(monkeypatch: pytest.MonkeyPatch, limits_log: list[str]) -> None:
    _FakeRlimit(monkeypatch, 1024, 1024)
    assert raise_open_file_limit(1000, 64) == 1024
    low = [line for line in limits_log if line.startswith("event=nofile-limit-low")]
    assert len(low) == 1 and "soft=1024 need=1128" in low[0]
    assert check_open_file_limit(100, 64, 1024) and not check_open_file_limit(1000, 64, 1024)


def test_open_file_limit_with_an_infinite_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRlimit(monkeypatch, 256, resource.RLIM_INFINITY, max_settable=70000)
    assert raise_open_file_limit(1000) == 1 << 16 and fake.limit[0] == 1 << 16
