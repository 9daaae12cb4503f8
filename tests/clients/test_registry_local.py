"""The embedded registry (a workers' master's, clients/registry_local.py) beyond what it shares with Redis
(tests/clients/test_cluster.py runs the same claim tests on both): expiry, hostile requests, the socket."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livesrv.clients.registry_local import LocalRegistry, LocalRegistryError, RegistryServer, socket_path
from tests.helpers import wait_until


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RegistryServer]:
    srv = RegistryServer(str(tmp_path / "reg.sock"))
    await srv.start()
    yield srv
    await srv.close()


async def test_expired_records_and_claims(server: RegistryServer) -> None:
    """A node whose heartbeat stops loses its record after its TTL, and then its stream is free without
    takeover; a claim not renewed expires too (and the generation counter still grows)."""
    a, b = LocalRegistry(server.url, "a", 0.3), LocalRegistry(server.url, "b", 30)
    try:
        await a.register({"rtmp": "127.0.0.1:1"})
        first = await a.claim("v/app/s", False)
        assert first.ok
        refused = await b.claim("v/app/s", False)
        assert not refused.ok and refused.node == "a"
        assert "a" in await b.nodes()
        await wait_until(lambda: "a" not in server.state.all_nodes(time.monotonic()), 5, "a's record expired")
        second = await b.claim("v/app/s", False)
        assert second.ok and second.generation == first.generation + 1
        assert not await a.renew("v/app/s", first.generation)  # (stale: b holds it now)
        assert (await b.owner("v/app/s")).node == "b"  # type: ignore[union-attr]
        assert await b.streams() == {"v/app/s": ("b", second.generation)}
    finally:
        await a.close()
        await b.close()


async def test_hostile_requests_get_an_error_and_change_nothing(server: RegistryServer) -> None:
    rng = random.Random(5)
    good = LocalRegistry(server.url, "good", 30)
    try:
        claimed = await good.claim("v/app/s", True)
        reader, writer = await asyncio.open_unix_connection(server.path)
        lines = [b"not json\n", b"[]\n", b"{}\n", b'{"i": 1, "op": "claim", "a": {}}\n',
                 b'{"i": 2, "op": "nope"}\n', b'{"i": 3, "op": "renew", "a": {"stream": 1, "node": [], "gen": "x"}}\n']
        lines += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"") + b"\n"
                  for _ in range(30)]
        for line in lines:
            writer.write(line)
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert "e" in reply and "r" not in reply, (line, reply)
        writer.close()
        # Too long a line closes that connection only.
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(b"x" * (1 << 17) + b"\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert (await good.owner("v/app/s")).generation == claimed.generation  # type: ignore[union-attr]
        with pytest.raises(LocalRegistryError):
            await good._call("nope")
        assert await good.renew("v/app/s", claimed.generation)  # (the same connection goes on)
    finally:
        await good.close()


async def test_the_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "reg.sock"
    path.write_bytes(b"")  # (what a master killed by SIGKILL leaves)
    srv = RegistryServer(str(path))
    await srv.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        client = LocalRegistry(srv.url, "n", 5)
        assert (await client.claim("v/a/s", True)).ok
        await client.close()
    finally:
        await srv.close()
    assert not path.exists()
    with pytest.raises(OSError):  # (nobody there: the call fails at once, as a Redis that is down)
        await LocalRegistry(srv.url, "n", 5).register({})
    with pytest.raises(ValueError):
        socket_path("livesrv+unix://relative.sock")
