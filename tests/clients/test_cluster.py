"""Cluster (top-level ``cluster { registry redis://...; }``), with a real redis-server on a free port and livesrv
nodes (in-process, and a real process where one must die by SIGKILL): publish on one node, play on the others
over HTTP-FLV, RTMP and HLS; republish elsewhere, a node killed while owning a stream, Redis stopped and
restarted; the registry's atomic claims; a seeded randomized test of publishers and viewers on random nodes.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.exceptions import RedisError

from livesrv.app import App
from livesrv.clients.cluster import open_registry, parse_stream_name, stream_name
from livesrv.clients.claims import RegistryError
from livesrv.clients.edge import EdgePull
from livesrv.clients.registry_local import RegistryServer
from livesrv.clients.rtmp import RtmpClient, RtmpClientError
from livesrv.codec.rtmp import messages as m
from livesrv.hub.clients import PUBLISHER
from livesrv.hub.keys import StreamKey
from tests.helpers import free_port, FlvViewer, Procs, can_connect, ffmpeg_publish_args, require_tool, wait_until
from tests.servers.rtmp_client import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, aac_frame, inter_frame, keyframe

pytestmark = pytest.mark.e2e

KEY = StreamKey("__defaultVhost__", "live", "test")



class RedisServer:
    """A real redis-server on a free loopback port, without persistence (a restart loses every key)."""

    def __init__(self, procs: Procs, work: Path) -> None:
        self.procs = procs
        self.work = work
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await self.procs.start(
            require_tool("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.work), stdout=asyncio.subprocess.DEVNULL)
        deadline = asyncio.get_running_loop().time() + 15
        while not await can_connect(self.port):
            assert self.proc.returncode is None, "redis-server exited"
            assert asyncio.get_running_loop().time() < deadline, "redis-server did not listen within 15 s"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class EmbeddedRegistry:
    """The registry a workers' master serves (clients/registry_local.py), in the test's own event loop."""

    def __init__(self, work: Path) -> None:
        self.server = RegistryServer(str(work / "registry.sock"))

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        self.server = RegistryServer(self.server.path)  # (a restart starts empty, as Redis without persistence)
        await self.server.start()

    async def stop(self) -> None:
        await self.server.close()


@pytest.fixture
async def redis_server(procs: Procs, tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(procs, tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["redis", "embedded"])
async def any_registry(request, procs: Procs, tmp_path: Path) -> AsyncIterator[RedisServer | EmbeddedRegistry]:  # type: ignore[no-untyped-def]
    """Redis, and the embedded registry of a host's workers: the same calls must mean the same."""
    server = RedisServer(procs, tmp_path) if request.param == "redis" else EmbeddedRegistry(tmp_path)
    await server.start()
    yield server
    await server.stop()


def node_extra(redis: RedisServer | EmbeddedRegistry, ttl: float = 3) -> str:
    return f"cluster {{ registry {redis.url}; ttl {ttl:g}; }}"


async def make_nodes(make_server, redis: RedisServer | EmbeddedRegistry, n: int, vhost: str = "", ttl: float = 3) -> list[App]:  # type: ignore[no-untyped-def]
    nodes = []
    for _ in range(n):
        node: App = await make_server(extra=node_extra(redis, ttl), vhost=vhost)
        node.edge.retry = (0.1, 0.5)
        nodes.append(node)
    return nodes


def live_here(node: App) -> bool:
    s = node.hub.get(KEY)
    return s is not None and s.live and bool(s.gop.gop)


def local_publisher(node: App) -> bool:
    s = node.hub.get(KEY)
    return s is not None and s.live and getattr(s.publisher, "kind", "") == PUBLISHER


async def owner(redis: RedisServer | EmbeddedRegistry, name: str = stream_name(KEY)) -> str | None:
    registry = open_registry(redis.url, "probe", 10)
    try:
        found = await registry.owner(name)
        return found.node if found is not None else None
    finally:
        await registry.close()


async def probe(procs: Procs, url: str) -> set[str]:
    code, out, err = await procs.run(
        require_tool("ffprobe"), "-v", "error", "-rw_timeout", "20000000", "-show_entries", "stream=codec_name",
        "-of", "json", url, timeout=60)
    assert code == 0, err.decode()[-2000:]
    return {s["codec_name"] for s in json.loads(out)["streams"]}


async def api(node: App, path: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{node.port('api')}{path}") as resp:
            return await resp.json()


def flv_url(node: App) -> str:
    return f"http://127.0.0.1:{node.port('http')}/live/test.flv"


async def wait_owner(redis: RedisServer, node: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await owner(redis) != node:
        assert asyncio.get_running_loop().time() < deadline, f"{node} never owned the stream"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------------- end to end


async def test_publish_anywhere_play_everywhere_and_republish_elsewhere(
    make_server, procs, sample_flv, redis_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    hls = f"hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {tmp_path / 'hls'}; }}"
    n1, n2, n3 = await make_nodes(make_server, redis_server, 3, vhost=hls)
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n1.port('rtmp')}/live/test"))
    await wait_until(lambda: live_here(n1), 20, "node 1 live")
    await wait_owner(redis_server, n1.cluster.node)

    v2, v3 = FlvViewer(flv_url(n2)).start(), FlvViewer(flv_url(n3)).start()
    assert await probe(procs, f"rtmp://127.0.0.1:{n2.port('rtmp')}/live/test") == {"h264", "aac"}
    assert await probe(procs, f"http://127.0.0.1:{n3.port('http')}/live/test.m3u8") == {"h264", "aac"}
    await wait_until(lambda: v2.keyframes_after(0) >= 1 and v3.keyframes_after(0) >= 1, 20, "video on 2 and 3")
    # One pull per node, from the owner; the owner does not pull.
    assert [p.source for p in (n2.edge.pulls.get(KEY), n3.edge.pulls.get(KEY)) if p] == [n1.cluster.node] * 2
    assert not n1.edge.pulls
    # The API's view is refreshed by the heartbeats once it is read (not before: SCANs cost Redis).
    assert not n2.cluster.view
    await api(n2, "/api/v1/clusters")
    await wait_until(lambda: len(n2.cluster.view.get("nodes", {})) == 3, 10, "the API view of the three nodes")
    clusters = (await api(n2, "/api/v1/clusters"))["data"]
    assert clusters["enabled"] and {n["id"] for n in clusters["nodes"]} == {n.cluster.node for n in (n1, n2, n3)}
    assert {s["stream"]: s["node"] for s in clusters["streams"]} == {"__defaultVhost__/live/test": n1.cluster.node}

    # The publisher moves to node 2: every viewer on every node goes on, on its connection.
    seen2, seen3 = len(v2.tags), len(v3.tags)
    pub.kill()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n2.port('rtmp')}/live/test"))
    await wait_owner(redis_server, n2.cluster.node)
    await wait_until(lambda: v2.keyframes_after(seen2) >= 1 and v3.keyframes_after(seen3) >= 1, 30,
                     "video again on both viewers")
    assert v2.error is None and v3.error is None and not v2.ended.is_set() and not v3.ended.is_set()
    await wait_until(lambda: (p := n3.edge.pulls.get(KEY)) is not None and p.source == n2.cluster.node, 10,
                     "node 3 pulling from node 2")
    assert KEY not in n2.edge.pulls
    for v in (v2, v3):
        await v.close()


async def test_takeover_across_nodes_closes_the_old_publisher(make_server, procs, sample_flv, redis_server) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = await make_nodes(make_server, redis_server, 2)
    old = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n1.port('rtmp')}/live/test"))
    await wait_until(lambda: live_here(n1), 20, "node 1 live")
    viewer = FlvViewer(flv_url(n1)).start()  # a viewer on the node that loses the stream
    await wait_until(lambda: viewer.keyframes_after(0) >= 1, 20, "video on node 1")
    seen = len(viewer.tags)
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n2.port('rtmp')}/live/test"))
    await wait_owner(redis_server, n2.cluster.node)
    await asyncio.wait_for(old.wait(), 15)  # node 1 closed its stale publisher
    await wait_until(lambda: not local_publisher(n1), 10, "node 1's publisher gone")
    await wait_until(lambda: viewer.keyframes_after(seen) >= 1, 30, "node 1's viewer on node 2's media")
    assert n1.edge.pulls[KEY].source == n2.cluster.node


@pytest.mark.parametrize("takeover", ["on", "off"])
async def test_a_node_killed_while_owning_a_stream(
    make_server, procs, sample_flv, redis_server, tmp_path: Path, takeover: str  # type: ignore[no-untyped-def]
) -> None:
    """Node A (a real process) dies by SIGKILL while it owns a stream: with takeover a publisher on node C is
    accepted at once; without, once A's TTL ran out (never stuck)."""
    ttl = 2
    port = free_port()
    conf = tmp_path / "a.conf"
    conf.write_text(f"""listen 127.0.0.1:{port}; srs_log_tank console;
        http_server {{ enabled off; }} http_api {{ enabled off; }}
        cluster {{ registry {redis_server.url}; ttl {ttl}; node_id node-a; }}
        vhost __defaultVhost__ {{ publish {{ takeover {takeover}; }} }}""")
    a = await procs.start(sys.executable, "-m", "livesrv", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL)
    b, c = await make_nodes(make_server, redis_server, 2, vhost=f"publish {{ takeover {takeover}; }}", ttl=ttl)
    deadline = asyncio.get_running_loop().time() + 20
    while not await can_connect(port):
        assert a.returncode is None and asyncio.get_running_loop().time() < deadline, "node A did not start"
        await asyncio.sleep(0.05)
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/test"))
    await wait_owner(redis_server, "node-a")
    viewer = FlvViewer(flv_url(b)).start()
    await wait_until(lambda: viewer.keyframes_after(0) >= 1, 20, "video on node B from A")

    a.send_signal(signal.SIGKILL)
    await a.wait()
    killed = asyncio.get_running_loop().time()
    seen = len(viewer.tags)
    # A publisher on node C, retried as an encoder does when it is refused, until it owns the stream.
    refused = 0
    loop = asyncio.get_running_loop()
    while await owner(redis_server) != c.cluster.node:
        assert loop.time() - killed < 20, "node C never got the stream"
        new = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{c.port('rtmp')}/live/test"))
        while new.returncode is None and await owner(redis_server) != c.cluster.node:
            await asyncio.sleep(0.05)
        refused += new.returncode is not None
    taken = loop.time() - killed
    if takeover == "on":
        assert taken < ttl and refused == 0, f"took {taken:.1f}s, {refused} refusals: should be at once"
    else:
        # (A's record was last refreshed up to ttl/3 before it died: it expires 2/3 ttl to ttl after.)
        assert refused >= 1 and taken >= ttl * 0.6, f"took {taken:.1f}s: a live owner's stream was taken"
    await wait_until(lambda: viewer.keyframes_after(seen) >= 1, 30, "node B's viewer on node C's media")


async def test_redis_away_and_back(make_server, procs, sample_flv, redis_server, log_lines) -> None:  # type: ignore[no-untyped-def]
    n1, n2, n3 = await make_nodes(make_server, redis_server, 3, ttl=2)
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n1.port('rtmp')}/live/test"))
    await wait_owner(redis_server, n1.cluster.node)
    viewer = FlvViewer(flv_url(n2)).start()
    await wait_until(lambda: viewer.keyframes_after(0) >= 1, 20, "video on node 2")

    await redis_server.stop()
    await wait_until(lambda: not n1.cluster.up and not n2.cluster.up, 10, "the nodes to notice")
    # Everyone keeps what it has: the viewer on node 2 goes on, through the pull it had.
    seen = len(viewer.tags)
    await wait_until(lambda: viewer.keyframes_after(seen) >= 2, 20, "media while Redis is away")
    # A new publish needs the registry: refused with a clear reason.
    other = await RtmpClient.connect(f"rtmp://127.0.0.1:{n3.port('rtmp')}/live/other", timeout=10)
    with pytest.raises(RtmpClientError, match="cluster registry unreachable"):
        await other.publish(timeout=10)
    await other.close()
    assert len(log_lines.events("cluster-registry-down")) == 3  # once per node, not per try

    await redis_server.start()  # (empty: no persistence)
    await wait_until(lambda: n1.cluster.up and n2.cluster.up and n3.cluster.up, 15, "the nodes to rejoin")
    await wait_owner(redis_server, n1.cluster.node)  # node 1's heartbeat claimed its stream again
    # A viewer arriving now on node 3 finds the owner in the registry.
    v3 = FlvViewer(flv_url(n3)).start()
    await wait_until(lambda: v3.keyframes_after(0) >= 1, 20, "video on node 3 after Redis came back")
    for v in (viewer, v3):
        await v.close()


# ------------------------------------------------------------------------------------------- the registry


async def test_claims_are_atomic_and_fenced(any_registry) -> None:  # type: ignore[no-untyped-def]
    a, b = open_registry(any_registry.url, "a", 5), open_registry(any_registry.url, "b", 5)
    try:
        await a.register({"rtmp": "127.0.0.1:1"})
        await b.register({"rtmp": "127.0.0.1:2"})
        # Concurrent claims: each gets its own generation, the last one in Redis's order owns the stream.
        results = await asyncio.gather(*(r.claim("v/app/s", True) for r in (a, b, a, b, a, b)))
        gens = [c.generation for c in results]
        assert sorted(gens) == list(range(1, 7)) and all(c.ok for c in results)
        last = max(results, key=lambda c: c.generation)
        assert (await a.owner("v/app/s")).node == last.node  # type: ignore[union-attr]
        # Only the current generation renews or releases; stale ones are told so.
        stale = [c for c in results if c is not last]
        for c in stale:
            reg = a if c.node == "a" else b
            assert not await reg.renew("v/app/s", c.generation)
            assert not await reg.release("v/app/s", c.generation)
        owner_reg = a if last.node == "a" else b
        assert await owner_reg.renew("v/app/s", last.generation)
        # Without takeover, a live owner keeps it; once its node record is gone, it is free.
        other = b if owner_reg is a else a
        refused = await other.claim("v/app/s", False)
        assert not refused.ok and refused.node == last.node
        await owner_reg.unregister()
        assert (await other.claim("v/app/s", False)).ok
        # A release by the owner frees the stream; the generation counter only grows.
        current = await other.owner("v/app/s")
        assert current is not None and await other.release("v/app/s", current.generation)
        assert await other.owner("v/app/s") is None
        assert (await a.claim("v/app/s", False)).generation == current.generation + 1
        # The registry lost the claim (restarted without persistence): the owner's renew makes it again (the
        # clients connect again), and the counter follows, so a later claim elsewhere still gets a larger
        # generation.
        mine = await a.owner("v/app/s")
        assert mine is not None
        await any_registry.stop()
        await any_registry.start()

        async def reconnected(call):  # type: ignore[no-untyped-def]
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    return await call()
                except (OSError, asyncio.TimeoutError, RegistryError, RedisError):
                    assert asyncio.get_running_loop().time() < deadline, "the client never reconnected"
                    await asyncio.sleep(0.05)

        assert await reconnected(lambda: a.renew("v/app/s", mine.generation))
        assert (await reconnected(lambda: b.claim("v/app/s", True))).generation == mine.generation + 1
        # A subscriber hears every claim and release.
        sub = await a.subscribe()
        try:
            got = await b.claim("v/app/t", True)
            assert got.ok and json.loads(await sub.get(5) or b"null") == {"stream": "v/app/t", "node": "b", "gen": got.generation}
            assert await b.release("v/app/t", got.generation)
            assert json.loads(await sub.get(5) or b"null") == {"stream": "v/app/t", "node": "", "gen": got.generation}
        finally:
            await sub.aclose()
    finally:
        await a.close()
        await b.close()


def test_stream_names() -> None:
    assert stream_name(StreamKey("v", "app/sub", "s")) == "v/app/sub/s"
    assert parse_stream_name("v/app/sub/s") == StreamKey("v", "app/sub", "s")
    assert parse_stream_name("v/s") is None


# ------------------------------------------------------------------------------------------- randomized


class SyntheticPublisher:
    """Our RTMP client publishing a small synthetic stream (a keyframe every 10 frames at ~50 fps)."""

    def __init__(self, node: App, name: str = "test") -> None:
        self.node = node
        self.url = f"rtmp://127.0.0.1:{node.port('rtmp')}/live/{name}"
        self.client: RtmpClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.accepted = False
        self.error: Exception | None = None

    async def start(self) -> None:
        try:
            self.client = await RtmpClient.connect(self.url, timeout=10)
            await self.client.publish(timeout=10)
        except RtmpClientError as exc:
            self.error = exc
            return
        self.accepted = True
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        client = self.client
        assert client is not None
        client.send_media(m.VIDEO, 0, AVC_SEQUENCE_HEADER)
        client.send_media(m.AUDIO, 0, AAC_SEQUENCE_HEADER)
        n = 0
        while not client.closed:
            ts = n * 20
            client.send_media(m.VIDEO, ts, keyframe(n) if n % 10 == 0 else inter_frame(n))
            client.send_media(m.AUDIO, ts, aac_frame(n))
            n += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.client is not None:
            self.client.abort()


@pytest.mark.parametrize("seed, backend", [(7, "redis"), (8, "redis"), (9, "embedded")])
async def test_random_publishers_and_viewers_across_nodes(make_server, procs, tmp_path, seed: int, backend: str) -> None:  # type: ignore[no-untyped-def]
    """Publishers arrive, leave and take over on random nodes, viewers come and go, with random delays around
    the claims. At every quiet point: at most one node has a live local publisher of the stream, it is the
    registry's owner; and a new publisher on any node is always accepted (never a stream no node accepts)."""
    rng = random.Random(seed)
    redis_server = RedisServer(procs, tmp_path) if backend == "redis" else EmbeddedRegistry(tmp_path)
    await redis_server.start()
    nodes = await make_nodes(make_server, redis_server, 3)
    publishers: list[SyntheticPublisher] = []
    viewers: list[FlvViewer] = []
    claimed_by: dict[int, str] = {}  # generation -> node: never two nodes for one generation

    def record_generations() -> None:
        for node in nodes:
            for claim in node.cluster.claims.values():
                prev = claimed_by.setdefault(claim.generation, node.cluster.node)
                assert prev == node.cluster.node, f"generation {claim.generation} owned by {prev} and {node.cluster.node}"

    async def quiet_check() -> None:
        async def settled() -> bool:
            owners = [n for n in nodes if local_publisher(n)]
            reg = await owner(redis_server)
            return len(owners) <= 1 and (not owners or owners[0].cluster.node == reg)

        deadline = asyncio.get_running_loop().time() + 10
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "two local publishers, or one the registry ignores"
            await asyncio.sleep(0.05)

    try:
        for _ in range(30):
            op = rng.random()
            record_generations()
            if op < 0.4:
                pub = SyntheticPublisher(rng.choice(nodes))
                await pub.start()
                assert pub.accepted, f"a publisher was refused: {pub.error}"
                publishers.append(pub)
            elif op < 0.6 and publishers:
                await publishers.pop(rng.randrange(len(publishers))).stop()
            elif op < 0.85:
                viewers.append(FlvViewer(flv_url(rng.choice(nodes))).start())
            elif viewers:
                await viewers.pop(rng.randrange(len(viewers))).close()
            await asyncio.sleep(rng.choice([0, 0.001, 0.01, 0.05, 0.2, 0.5]))
            await quiet_check()
        # The last publisher's media reaches viewers on every node.
        final = SyntheticPublisher(rng.choice(nodes))
        await final.start()
        assert final.accepted, final.error
        publishers.append(final)
        await quiet_check()
        watchers = [FlvViewer(flv_url(n)).start() for n in nodes]
        viewers += watchers
        await wait_until(lambda: all(v.keyframes_after(0) >= 1 for v in watchers), 20, "video on every node")
        record_generations()
    finally:
        for v in viewers:
            await v.close()
        for p in publishers:
            await p.stop()
        if isinstance(redis_server, EmbeddedRegistry):
            await redis_server.stop()


async def test_a_pull_never_feeds_the_registry(make_server, redis_server, sample_flv, procs) -> None:  # type: ignore[no-untyped-def]
    """A pulled stream is not claimed (only clients' publishes are), and the owner never pulls its own stream."""
    n1, n2 = await make_nodes(make_server, redis_server, 2)
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{n1.port('rtmp')}/live/test"))
    viewer = FlvViewer(flv_url(n2)).start()
    await wait_until(lambda: viewer.keyframes_after(0) >= 1, 20, "video on node 2")
    assert isinstance(n2.hub.get(KEY).publisher, EdgePull)  # type: ignore[union-attr]
    assert KEY not in n2.cluster.claims and KEY in n1.cluster.claims
    assert await owner(redis_server) == n1.cluster.node
    await viewer.close()

