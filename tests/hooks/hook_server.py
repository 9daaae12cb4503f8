"""A real HTTP hook receiver for tests: records every callback and answers as it is told.

Use it from any test (client unit tests here, RTMP/HTTP end-to-end tests elsewhere)::

    from tests.hooks.hook_server import HookServer, REJECT_CODE1  # the fixture comes via tests/conftest.py

    async def test_publish_refused(hook_server: HookServer, make_server):
        hook_server.set_answer(REJECT_CODE1, stream="secret", hook="on_publish")
        app = await make_server(vhost=f"http_hooks {{ enabled on; on_publish {hook_server.url('on_publish')}; }}")
        ...
        call = await hook_server.wait_call("on_publish")
        assert call.payload["param"] == "?token=abc"

The answer to a request is chosen, first match wins, by: an answer name in the path
(``url(hook, answer="status500")`` -> ``/status500/on_publish``), then ``set_answer`` for (hook, stream), for
the stream, for the hook, then ``default`` (``0``). The stream is the payload's ``stream`` field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import free_port, wait_until


@dataclass(frozen=True)
class Answer:
    """How to answer: ``status`` with ``body``; ``hold`` first waits until :meth:`HookServer.release`
    (or close), which lets a test make a hook slower than the client's timeout, or overlap requests."""

    status: int = 200
    body: bytes = b"0"
    hold: bool = False
    headers: tuple[tuple[str, str], ...] = ()


ACCEPT_ZERO = Answer(200, b"0")
ACCEPT_CODE0 = Answer(200, b'{"code":0}')
ACCEPT_CREATED = Answer(201, b'{"code":0,"data":null}')
REJECT_CODE1 = Answer(200, b'{"code":1}')
STATUS_500 = Answer(500, b'{"code":0}')
EMPTY = Answer(200, b"")
NOT_JSON = Answer(200, b"ok")
HANG = Answer(200, b"0", hold=True)
REDIRECT = Answer(302, b"", headers=(("Location", "/zero/redirected"),))

#: Answers addressable by name in the URL path.
ANSWERS: dict[str, Answer] = {
    "zero": ACCEPT_ZERO,
    "code0": ACCEPT_CODE0,
    "created": ACCEPT_CREATED,
    "code1": REJECT_CODE1,
    "status500": STATUS_500,
    "empty": EMPTY,
    "notjson": NOT_JSON,
    "hang": HANG,
    "redirect": REDIRECT,
    "held": Answer(200, b"0", hold=True),
    "zero_newline": Answer(200, b"0\n"),
    "code_string": Answer(200, b'{"code":"0"}'),
    "code_float": Answer(200, b'{"code":0.0}'),
    "code_bool": Answer(200, b'{"code":false}'),
    "no_code": Answer(200, b'{"data":0}'),
    "json_string_zero": Answer(200, b'"0"'),
    "json_array": Answer(200, b"[0]"),
    "json_nan": Answer(200, b'{"code":0,"x":NaN}'),
    "huge": Answer(200, b'{"code":0,"pad":"' + b"x" * (128 * 1024) + b'"}'),
}


@dataclass
class HookCall:
    """One request the server received."""

    hook: str  # last path element: on_publish, on_play, ...
    path: str
    query: str
    body: bytes
    payload: Any  # parsed JSON, None if the body was not JSON
    headers: dict[str, str]
    peer: tuple[str, int]
    answer: Answer = field(repr=False, default=ACCEPT_ZERO)


class HookServer:
    """An aiohttp server on 127.0.0.1 and an OS-chosen port."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []
        self.default: Answer = ACCEPT_ZERO
        self.answers: dict[str, Answer] = dict(ANSWERS)
        self._by_key: dict[tuple[str | None, str | None], Answer] = {}
        self._release = asyncio.Event()
        self._peers: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> HookServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ what to answer

    def url(self, hook: str, answer: str | None = None, query: str = "") -> str:
        """The URL to configure for ``hook``; ``answer`` names an entry of :attr:`answers` that this URL
        always gets, whatever the stream."""
        if answer is not None and answer not in self.answers:
            raise KeyError(f"unknown answer {answer!r}; add it to hook_server.answers first")
        path = f"/{answer}/{hook}" if answer else f"/{hook}"
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def set_answer(self, answer: Answer, *, stream: str | None = None, hook: str | None = None) -> None:
        """Answer requests for ``stream`` (payload field) and/or ``hook`` (last path element) with ``answer``;
        with neither, change the default answer."""
        if hook is None and stream is None:
            self.default = answer
        else:
            self._by_key[(hook, stream)] = answer

    def release(self) -> None:
        """Let held requests (and every later one) answer."""
        self._release.set()

    def rearm(self) -> None:
        """Hold again: later requests with a ``hold`` answer wait for the next :meth:`release`."""
        if self._release.is_set():  # else requests are held already
            self._release = asyncio.Event()

    def _choose(self, path_answer: str | None, hook: str, stream: str | None) -> Answer:
        if path_answer is not None:
            return self.answers[path_answer]
        for key in ((hook, stream), (None, stream), (hook, None)):
            if key in self._by_key:
                return self._by_key[key]
        return self.default

    # ------------------------------------------------------------------ what was received

    @property
    def payloads(self) -> list[Any]:
        """Parsed bodies of every request, in arrival order."""
        return [c.payload for c in self.calls]

    def calls_for(self, hook: str) -> list[HookCall]:
        return [c for c in self.calls if c.hook == hook]

    @property
    def connections(self) -> int:
        """Distinct TCP connections the requests arrived on."""
        return len(self._peers)

    async def wait_call(self, hook: str, count: int = 1, timeout: float = 10) -> HookCall:
        """Wait until ``count`` requests for ``hook`` arrived; return the last of them."""
        await wait_until(lambda: len(self.calls_for(hook)) >= count, timeout, f"{count} {hook} call(s)")
        return self.calls_for(hook)[count - 1]

    async def wait_in_flight(self, count: int, timeout: float = 10) -> None:
        await wait_until(lambda: self.in_flight >= count, timeout, f"{count} request(s) in flight")

    # ------------------------------------------------------------------ handler

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        hook = parts[-1] if parts else ""
        path_answer = parts[0] if len(parts) >= 2 and parts[0] in self.answers else None
        body = await request.read()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        stream = payload.get("stream") if isinstance(payload, dict) else None
        answer = self._choose(path_answer, hook, stream)
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        self._peers.add(tuple(peer[:2]))
        self.calls.append(HookCall(hook, request.path, request.query_string, body, payload,
                                   dict(request.headers), tuple(peer[:2]), answer))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if answer.hold:
                await self._release.wait()
            return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers),
                                content_type="application/json")
        finally:
            self.in_flight -= 1


def unused_port() -> int:
    """A port nothing listens on (bound by the OS, then closed): connecting to it is refused."""
    return free_port()


@pytest.fixture
async def hook_server() -> AsyncIterator[HookServer]:
    """A started :class:`HookServer`, closed at teardown."""
    server = HookServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()
