"""The embedded stream registry: what Redis is to a cluster of hosts, a master process is to the workers of one
host (``workers N;``), so that one host needs no external service.

:class:`RegistryServer` holds the registry in the master's memory and answers on a unix socket;
:class:`LocalRegistry` is a worker's client, with the same methods and the same meaning as the Redis one
(:class:`livesrv.clients.registry.Registry`): one atomic step per call (the server handles each request
synchronously, between two reads, as Redis runs a Lua script), a generation counter per stream as the fencing
token, node records and claims that expire with a TTL their heartbeat refreshes, a claim's notification to every
subscriber. The state lives as long as the master: a worker that crashes and is restarted finds it intact (its
old claims expire with its old node's TTL, or are taken over at once).

Hand-written instead of a library: the protocol is newline-delimited JSON over a private socket between
processes of one program, a few dozen lines; a broker (or a Redis server) would be the external service the
embedded mode exists to avoid.

Wire format, one JSON object per line. Requests ``{"i": ID, "op": NAME, "a": {ARGS}}`` are answered
``{"i": ID, "r": RESULT}`` or ``{"i": ID, "e": REASON}``; a connection whose first line is
``{"op": "subscribe"}`` then only receives the claims' messages, one per line (the bytes a Redis subscriber
gets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Final

from livesrv.clients.claims import Claimed, Owner, RegistryError
from livesrv.log import event

__all__ = ["SCHEME", "LocalRegistry", "LocalRegistryError", "LocalSubscription", "RegistryServer", "socket_path"]

log = logging.getLogger("livesrv.registry")

#: ``cluster { registry livesrv+unix:///path/to/registry.sock; }``: the embedded registry at that socket.
SCHEME: Final = "livesrv+unix://"
#: Seconds a generation counter outlives its stream's last claim (Redis: ``P:gen:K`` is kept a day).
GENERATION_KEPT: Final = 86400.0
#: Seconds between two sweeps of expired entries (lookups also ignore them at once).
SWEEP_EVERY: Final = 5.0
#: A subscriber that does not read this many bytes of messages is dropped; it subscribes again and its node's
#: heartbeat finds whatever it missed (Pub/Sub is a hint there too).
SUBSCRIBER_BUFFER: Final = 1 << 20
#: The longest request line accepted (records are small JSON objects).
LINE_LIMIT: Final = 1 << 16


class LocalRegistryError(RegistryError):
    """The embedded registry answered with an error (a bad request); a lost connection raises
    :class:`ConnectionError` (an ``OSError``)."""


def socket_path(url: str) -> str:
    """``livesrv+unix:///run/x.sock`` -> ``/run/x.sock``."""
    if not url.startswith(SCHEME):
        raise ValueError(f"not an embedded registry URL: {url!r}")
    path = url[len(SCHEME):]
    if not path.startswith("/"):
        raise ValueError(f"the embedded registry's socket path must be absolute: {url!r}")
    return path


# --------------------------------------------------------------------------------------------- the server


@dataclass(slots=True)
class _Entry:
    value: Any
    expires: float  # time.monotonic()


class _State:
    """The registry itself: plain dicts with expiry times, changed only by synchronous methods (one request is
    one step: nothing else runs between its check and its write)."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Entry] = {}  # node id -> record
        self.streams: dict[str, _Entry] = {}  # stream -> (node, generation)
        self.generations: dict[str, _Entry] = {}  # stream -> last generation given

    @staticmethod
    def _live(table: dict[str, _Entry], key: str, now: float) -> _Entry | None:
        entry = table.get(key)
        if entry is not None and entry.expires <= now:
            del table[key]
            return None
        return entry

    def sweep(self, now: float) -> None:
        for table in (self.nodes, self.streams, self.generations):
            for key in [k for k, e in table.items() if e.expires <= now]:
                del table[key]

    def _next_generation(self, stream: str, now: float) -> int:
        entry = self._live(self.generations, stream, now)
        gen = (entry.value if entry is not None else 0) + 1
        self.generations[stream] = _Entry(gen, now + GENERATION_KEPT)
        return gen

    # The operations, with the Lua scripts' meaning (see clients/registry.py).

    def register(self, now: float, node: str, record: dict[str, Any], ttl: float) -> None:
        self.nodes[node] = _Entry(record, now + ttl)

    def unregister(self, now: float, node: str) -> None:
        self.nodes.pop(node, None)

    def claim(self, now: float, stream: str, node: str, takeover: bool, ttl: float) -> tuple[bool, str, int]:
        cur = self._live(self.streams, stream, now)
        if cur is not None and not takeover:
            owner, gen = cur.value
            if owner != node and self._live(self.nodes, owner, now) is not None:
                return False, owner, gen
        gen = self._next_generation(stream, now)
        self.streams[stream] = _Entry((node, gen), now + ttl)
        return True, node, gen

    def renew(self, now: float, stream: str, node: str, generation: int, ttl: float) -> int:
        cur = self._live(self.streams, stream, now)
        if cur is not None:
            if cur.value == (node, generation):
                cur.expires = now + ttl
                return 1
            return 0
        # Expired or never known here (a registry that lost its data): the holder makes it again, and the
        # counter follows it, so a later claim elsewhere still gets a larger generation.
        counter = self._live(self.generations, stream, now)
        if counter is None or counter.value < generation:
            self.generations[stream] = _Entry(generation, now + GENERATION_KEPT)
        self.streams[stream] = _Entry((node, generation), now + ttl)
        return 2

    def release(self, now: float, stream: str, node: str, generation: int) -> bool:
        cur = self._live(self.streams, stream, now)
        if cur is None or cur.value != (node, generation):
            return False
        del self.streams[stream]
        return True

    def owner(self, now: float, stream: str) -> list[Any] | None:
        cur = self._live(self.streams, stream, now)
        if cur is None:
            return None
        node, gen = cur.value
        record = self._live(self.nodes, node, now)
        return [node, gen, record.value if record is not None else {}]

    def all_nodes(self, now: float) -> dict[str, Any]:
        return {k: e.value for k, e in self.nodes.items() if e.expires > now}

    def all_streams(self, now: float) -> dict[str, list[Any]]:
        return {k: list(e.value) for k, e in self.streams.items() if e.expires > now}


class RegistryServer:
    """The master's registry, on a unix socket only its user can open (mode 0600)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.state = _State()
        self._server: asyncio.AbstractServer | None = None
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return SCHEME + self.path

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a master that died
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=LINE_LIMIT)
        os.chmod(self.path, 0o600)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="registry sweep")
        event(log, "registry-start", path=self.path)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for writer in list(self._subscribers):
            writer.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, *([self._sweeper] if self._sweeper else []), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            self.state.sweep(time.monotonic())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                request: Any = None
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise TypeError("a request is a JSON object")
                    if request.get("op") == "subscribe":
                        self._subscribers.add(writer)
                        await reader.read()  # (a subscriber sends nothing more: wait for it to go)
                        return
                    reply = {"i": request["i"], "r": self._handle(request["op"], request.get("a") or {})}
                except (ValueError, KeyError, TypeError, AttributeError) as exc:  # (bad input: this request fails)
                    reply = {"i": request.get("i") if isinstance(request, dict) else None, "e": repr(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self._subscribers.discard(writer)
            self._connections.discard(task)
            writer.close()

    def _handle(self, op: str, a: dict[str, Any]) -> Any:
        """One request, one synchronous step."""
        now = time.monotonic()
        s = self.state
        if op == "register":
            return s.register(now, str(a["node"]), dict(a["record"]), float(a["ttl"]))
        if op == "unregister":
            return s.unregister(now, str(a["node"]))
        if op == "claim":
            ok, node, gen = s.claim(now, str(a["stream"]), str(a["node"]), bool(a["takeover"]), float(a["ttl"]))
            if ok:
                self._publish({"stream": a["stream"], "node": node, "gen": gen})
            return [ok, node, gen]
        if op == "renew":
            return s.renew(now, str(a["stream"]), str(a["node"]), int(a["gen"]), float(a["ttl"]))
        if op == "release":
            released = s.release(now, str(a["stream"]), str(a["node"]), int(a["gen"]))
            if released:
                self._publish({"stream": a["stream"], "node": "", "gen": int(a["gen"])})
            return released
        if op == "owner":
            return s.owner(now, str(a["stream"]))
        if op == "nodes":
            return s.all_nodes(now)
        if op == "streams":
            return s.all_streams(now)
        raise ValueError(f"unknown op {op!r}")

    def drop_node(self, node: str) -> list[str]:
        """(the master) ``node``'s process is known to be dead (it was reaped): its record and claims go now, with
        a release message for each, instead of when their TTL runs out. So its streams are free at once, even
        without takeover, and the pulls of them look for the next owner at once. Returns the streams released."""
        now = time.monotonic()
        s = self.state
        released = []
        for stream, (owner, gen) in s.all_streams(now).items():
            if owner == node and s.release(now, stream, node, gen):
                self._publish({"stream": stream, "node": "", "gen": gen})
                released.append(stream)
        s.unregister(now, node)
        return released

    def _publish(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        for writer in list(self._subscribers):
            transport = writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > SUBSCRIBER_BUFFER:
                self._subscribers.discard(writer)
                writer.close()
                continue
            writer.write(data)


# --------------------------------------------------------------------------------------------- the client


class LocalSubscription:
    """The claims' messages (bytes, as a Redis subscriber gets them); :meth:`get` returns None on a quiet
    ``timeout`` and raises ``ConnectionError`` when the registry went away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def get(self, timeout: float) -> bytes | None:
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout)
        except asyncio.TimeoutError:
            return None
        if not line:
            raise ConnectionError("the embedded registry closed the subscription")
        return line.rstrip(b"\n")

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class LocalRegistry:
    """A worker's connection to the master's registry: the same calls as
    :class:`livesrv.clients.registry.Registry`, each bounded by ``timeout`` seconds. A lost connection fails the
    calls in flight with ``ConnectionError`` and the next call connects again."""

    errors: tuple[type[Exception], ...] = ()  # (only RegistryError, OSError and TimeoutError)

    def __init__(self, url: str, node: str, ttl: float, prefix: str = "livesrv", timeout: float = 2.0) -> None:
        if " " in node:
            raise ValueError(f"a node id has no spaces: {node!r}")
        self.path = socket_path(url)
        self.node = node
        self.ttl = float(ttl)
        self.timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._connecting = asyncio.Lock()

    async def close(self) -> None:
        self._drop(ConnectionError("registry client closed"))

    async def subscribe(self) -> LocalSubscription:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.path, limit=LINE_LIMIT), self.timeout)
        writer.write(b'{"op": "subscribe"}\n')
        return LocalSubscription(reader, writer)

    async def _connection(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                reader, writer = await asyncio.open_unix_connection(self.path, limit=LINE_LIMIT)
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(
                    self._read(reader, writer), name="registry replies")
            return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                reply = json.loads(line)
                future = self._pending.pop(reply.get("i"), None)
                if future is None or future.done():
                    continue
                if "e" in reply:
                    future.set_exception(LocalRegistryError(reply["e"]))
                else:
                    future.set_result(reply.get("r"))
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            if self._writer is writer:
                self._drop(ConnectionError("the embedded registry closed the connection"))

    def _drop(self, exc: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def _call(self, op: str, **args: Any) -> Any:
        async def call() -> Any:
            writer = await self._connection()
            self._next_id += 1
            ident = self._next_id
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[ident] = future
            try:
                writer.write(json.dumps({"i": ident, "op": op, "a": args}).encode() + b"\n")
                return await future
            finally:
                self._pending.pop(ident, None)

        return await asyncio.wait_for(call(), self.timeout)

    # ----------------------------------------------------------------------------------- nodes

    async def register(self, record: dict[str, Any]) -> None:
        await self._call("register", node=self.node, record=record, ttl=self.ttl)

    async def unregister(self) -> None:
        await self._call("unregister", node=self.node)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(await self._call("nodes"))

    # ----------------------------------------------------------------------------------- streams

    async def claim(self, stream: str, takeover: bool) -> Claimed:
        ok, node, gen = await self._call("claim", stream=stream, node=self.node, takeover=takeover, ttl=self.ttl)
        return Claimed(bool(ok), str(node), int(gen))

    async def renew(self, stream: str, generation: int) -> bool:
        return bool(await self._call("renew", stream=stream, node=self.node, gen=generation, ttl=self.ttl))

    async def release(self, stream: str, generation: int) -> bool:
        return bool(await self._call("release", stream=stream, node=self.node, gen=generation))

    async def owner(self, stream: str) -> Owner | None:
        found = await self._call("owner", stream=stream)
        if not found:
            return None
        node, gen, record = found
        return Owner(str(node), int(gen), dict(record))

    async def streams(self) -> dict[str, tuple[str, int]]:
        return {k: (str(v[0]), int(v[1])) for k, v in (await self._call("streams")).items()}
