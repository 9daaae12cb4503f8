"""A node of a cluster (the top-level ``cluster { registry redis://...; }`` block): any node accepts any
publisher and serves any viewer of any stream; Redis (clients/registry.py) is the only shared component.

* **Publishing.** A client's publish is claimed in the registry before its ``on_publish`` hook
  (:meth:`ClusterService.claim`, the ``access.claim`` gate, awaited while the stream is STARTING as any hook):
  one atomic step that gives the claim a new generation. With takeover (the default) it is accepted at once and
  the previous owner, told by the claim's message or its next heartbeat that its generation is stale, closes
  its publisher. Without takeover it is refused while the owner is alive. When the node's claim ends (the
  publisher leaves, is kicked or refused by its hook), a hub watcher releases it, compare-and-set on the
  generation, so a late release never touches a newer claim.
* **Playing.** A viewer of a stream this node does not publish is served like an edge's viewer
  (clients/edge.py): one pull per stream from the owner's advertised RTMP address, looked up in the registry,
  started and stopped by demand; when the owner changes the pull moves to the new owner at once, and viewers
  stay on their connections as across a republish.
* **Liveness.** Every ``ttl/3`` the heartbeat refreshes the node's record and renews each claim it holds; a
  claim found replaced is stale and its publisher is closed. A dead node's claims expire with its TTL.
* **Redis unreachable.** Every node keeps serving what it has (publishers stay, pulls that are connected stay);
  new publishes are refused with ``cluster registry unreachable`` (the registry is what keeps two nodes from
  both owning a stream); the state change is logged once. When Redis is back, the heartbeat registers the
  node again and renews its claims (made again if Redis lost them), and the claims' channel is subscribed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from livesrv.clients.edge import EdgeService
from livesrv.clients.claims import RegistryClient, RegistryError
from livesrv.clients.registry_local import SCHEME as EMBEDDED_SCHEME, LocalRegistry
from livesrv.config import ANY_HOST, Config
from livesrv.hub.clients import HookContext
from livesrv.hub.keys import StreamKey
from livesrv.hub.states import PUBLISHED
from livesrv.log import event

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.cluster")

#: Seconds a claim may take before the publish is refused (Redis slow or away).
CLAIM_TIMEOUT: Final = 3.0
#: Seconds the heartbeats keep refreshing the API's view (two SCANs of the keyspace) after it was read.
VIEW_WANTED: Final = 60.0
#: Pause between two attempts to subscribe to the claims' channel when Redis is away.
RESUBSCRIBE: Final = 1.0


def open_registry(url: str, node: str, ttl: float, prefix: str = "livesrv") -> RegistryClient:
    """The registry at ``url``: Redis (``redis://``, ``rediss://``, ``unix://``), or the embedded one of a host's
    workers (``livesrv+unix:///path``, served by the master: clients/registry_local.py). Both have the same
    calls and the same meaning."""
    if url.startswith(EMBEDDED_SCHEME):
        return LocalRegistry(url, node, ttl, prefix)
    from livesrv.clients.registry import Registry  # (redis-py: imported only where Redis is configured)

    return Registry(url, node, ttl, prefix)


def stream_name(key: StreamKey) -> str:
    """A stream's name in the registry: ``vhost/app/stream`` (the stream never holds a ``/``)."""
    return f"{key.vhost}/{key.app}/{key.stream}"


def parse_stream_name(name: str) -> StreamKey | None:
    vhost, _, rest = name.partition("/")
    app, _, stream = rest.rpartition("/")
    return StreamKey(vhost, app, stream) if vhost and app and stream else None


@dataclass(slots=True)
class _Claim:
    """A claim this node holds: the hub's generation and publisher it was made for, and its registry one."""

    hub_generation: int
    client_id: str
    generation: int


class ClusterService:
    """This node in the cluster (composition root: app.py)."""

    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access, edge: EdgeService) -> None:
        self.hub = hub
        self.config = config
        self.access = access
        self.edge = edge
        self.registry: RegistryClient | None = None
        #: What a registry call may raise when the registry is away or answers an error.
        self._errors: tuple[type[Exception], ...] = (RegistryError, OSError, asyncio.TimeoutError)
        self.node = ""
        self.record: dict[str, Any] = {}
        self.claims: dict[StreamKey, _Claim] = {}
        self.up = True  # Redis answered the last call
        self.view: dict[str, Any] = {}  # nodes and streams as of the last heartbeat, for the API
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._view_wanted_until = 0.0  # /api/v1/clusters was read: the heartbeats refresh the view until then
        #: Told (synchronously) when another node claimed a stream: a worker lets go of the stream's HLS files,
        #: which the new owner writes now.
        self.claimed_elsewhere: list[Callable[[StreamKey, str], None]] = []

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    # ----------------------------------------------------------------------------------- lifecycle

    async def start(self, addresses: dict[str, list[tuple[str, int]]]) -> None:
        """Join the cluster when configured (after the listeners are bound: their ports are advertised)."""
        cfg = self.config().cluster
        if cfg.registry is None:
            return
        rtmp_host, rtmp_port = addresses["rtmp"][0]
        host = cfg.advertise or rtmp_host
        if host in (ANY_HOST, "::", ""):
            raise ValueError("cluster: the RTMP listener is on every address: set cluster { advertise HOST; } "
                             "to the address the other nodes reach this one at")
        self.node = cfg.node_id or f"{host}:{rtmp_port}"
        self.record = {"id": self.node, "pid": os.getpid(), "started": time.time(),
                       **{name: f"{_bracket(host)}:{addrs[0][1]}" for name, addrs in addresses.items() if addrs}}
        self.registry = open_registry(cfg.registry, self.node, cfg.ttl, cfg.prefix)
        self._errors = (RegistryError, OSError, asyncio.TimeoutError, *self.registry.errors)
        self.access.claim = self.claim
        self.edge.resolver = self.resolve
        self.hub.watchers.append(self._watch)
        await self._heartbeat_once()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat(), name="cluster heartbeat"),
                       loop.create_task(self._listen(), name="cluster claims")]
        event(log, "cluster-join", node=self.node, registry=cfg.registry, up=self.up)

    async def stop(self) -> None:
        if self.registry is None:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        # (redis-py may turn a cancellation inside its own timeouts into a TimeoutError: the loops also check
        # ``_stopping``, and the wait is bounded.)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._watch in self.hub.watchers:
            self.hub.watchers.remove(self._watch)
        self.access.claim = None
        if self._background:
            await asyncio.wait(list(self._background), timeout=CLAIM_TIMEOUT)
        registry = self.registry

        async def goodbye() -> None:
            for key, claim in list(self.claims.items()):
                await registry.release(stream_name(key), claim.generation)
            await registry.unregister()

        with contextlib.suppress(*self._errors):
            await asyncio.wait_for(goodbye(), CLAIM_TIMEOUT)  # (the streams are free elsewhere at once)
        self.claims.clear()
        with contextlib.suppress(*self._errors):
            await asyncio.wait_for(registry.close(), CLAIM_TIMEOUT)
        self.registry = None

    # ----------------------------------------------------------------------------------- publishing

    async def claim(self, ctx: HookContext) -> str | None:
        """The publish gate: claim ``ctx``'s stream in the registry for this node (see the module doc)."""
        registry = self.registry
        stream = self.hub.get(ctx.key)
        if registry is None or stream is None or stream.publisher is None or stream.publisher.cid != ctx.client_id:
            return None  # (not ours any more: the publish fails on its own, as after a takeover)
        hub_generation = stream.generation
        try:
            claimed = await asyncio.wait_for(registry.claim(stream_name(ctx.key), stream.settings.takeover),
                                             CLAIM_TIMEOUT)
        except self._errors as exc:
            self._set_up(False, repr(exc))
            return f"cluster registry unreachable: {type(exc).__name__}"
        self._set_up(True)
        if not claimed.ok:
            return f"stream published on node {claimed.node} (takeover off)"
        if stream.generation != hub_generation or stream.publisher is None or stream.publisher.cid != ctx.client_id:
            self._release(ctx.key, claimed.generation)  # taken over here meanwhile: the newer publish claims again
            return None
        self.claims[ctx.key] = _Claim(hub_generation, ctx.client_id, claimed.generation)
        event(log, "cluster-claim", stream=ctx.key, client=ctx.client_id, node=self.node, generation=claimed.generation)
        return None

    def _watch(self, key: StreamKey) -> None:
        """(hub watcher) A claim whose local publish ended is released."""
        claim = self.claims.get(key)
        if claim is None:
            return
        stream = self.hub.get(key)
        if (stream is not None and stream.state in PUBLISHED and stream.generation == claim.hub_generation
                and stream.publisher is not None and stream.publisher.cid == claim.client_id):
            return
        del self.claims[key]
        self._release(key, claim.generation)

    def _release(self, key: StreamKey, generation: int) -> None:
        registry = self.registry
        if registry is None:
            return

        async def release() -> None:
            with contextlib.suppress(*self._errors):
                await asyncio.wait_for(registry.release(stream_name(key), generation), CLAIM_TIMEOUT)
                event(log, "cluster-release", stream=key, node=self.node, generation=generation)

        self._spawn(release())

    def _stale(self, key: StreamKey, why: str) -> None:
        """Our claim of ``key`` was replaced: close the publisher that held it (it can publish again)."""
        claim = self.claims.pop(key, None)
        if claim is None:
            return
        stream = self.hub.get(key)
        publisher = stream.publisher if stream is not None else None
        event(log, "cluster-stale", logging.WARNING, stream=key, client=claim.client_id, generation=claim.generation,
              reason=why)
        if (publisher is not None and stream is not None and publisher.cid == claim.client_id
                and stream.generation == claim.hub_generation):
            publisher.kick(why)

    # ----------------------------------------------------------------------------------- playing

    async def resolve(self, key: StreamKey) -> tuple[str, str] | None:
        """(edge resolver) The owner of ``key`` to pull from: (node id, RTMP host:port), or None (nobody else
        owns it, or the owner's record is gone)."""
        registry = self.registry
        if registry is None:
            return None
        try:
            owner = await asyncio.wait_for(registry.owner(stream_name(key)), CLAIM_TIMEOUT)
        except self._errors as exc:
            self._set_up(False, repr(exc))
            return None
        self._set_up(True)
        if owner is None or owner.node == self.node or "rtmp" not in owner.record:
            return None
        return owner.node, owner.record["rtmp"]

    # ----------------------------------------------------------------------------------- background

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config().cluster.ttl / 3)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        registry = self.registry
        assert registry is not None
        try:
            await registry.register(self.record)
            for key, claim in list(self.claims.items()):
                if not await registry.renew(stream_name(key), claim.generation):
                    if self.claims.get(key) is claim:
                        self._stale(key, "taken over on another node (found by the heartbeat)")
            if time.monotonic() < self._view_wanted_until:  # (SCANs: only while the API is being read)
                self.view = {"nodes": await registry.nodes(), "streams": await registry.streams(), "at": time.time()}
        except self._errors as exc:
            self._set_up(False, repr(exc))
            return
        self._set_up(True)

    async def _listen(self) -> None:
        """Claims made anywhere: stale claims here are closed, pulls follow the new owner."""
        while not self._stopping:
            registry = self.registry
            assert registry is not None
            subscription = None
            try:
                subscription = await registry.subscribe()
                # Missed messages while away: the heartbeat renews every claim (finding the stale ones) and
                # pulls look the owner up again on their next attempt.
                await self._heartbeat_once()
                while not self._stopping:
                    data = await subscription.get(1.0)
                    if data is not None:
                        self._on_claim(data)
            except self._errors as exc:
                self._set_up(False, repr(exc))
            finally:
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.aclose()
            await asyncio.sleep(RESUBSCRIBE)

    def _on_claim(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            key = parse_stream_name(msg["stream"])
            node, generation = str(msg["node"]), int(msg["gen"])
        except (ValueError, KeyError, TypeError):
            return
        if key is None or node == self.node:
            return
        claim = self.claims.get(key)
        if node and claim is not None and claim.generation < generation:
            self._stale(key, f"taken over on node {node}")
        self.edge.moved(key, node)
        if node:
            for told in list(self.claimed_elsewhere):
                told(key, node)

    def _set_up(self, up: bool, reason: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            event(log, "cluster-registry-up", node=self.node)
        else:
            event(log, "cluster-registry-down", logging.WARNING, node=self.node, reason=reason)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def info(self) -> dict[str, Any]:
        """``/api/v1/clusters``: this node, the registry's nodes and streams as of the last heartbeat (the view is
        refreshed only for a minute after each request, so an unread API costs Redis nothing; the first
        request after a quiet minute answers with the previous view and ``updated`` says when it was made)."""
        if self.registry is None:
            return {"enabled": False}
        self._view_wanted_until = time.monotonic() + VIEW_WANTED
        view = self.view
        return {
            "enabled": True, "node": self.node, "registry_up": self.up, "updated": view.get("at"),
            "nodes": [{"id": n, **rec} for n, rec in sorted(view.get("nodes", {}).items())],
            "streams": [{"stream": s, "node": n, "generation": g}
                        for s, (n, g) in sorted(view.get("streams", {}).items())],
        }


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
