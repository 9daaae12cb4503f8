"""Edge (SRS's ``vhost { cluster { mode remote; origin host[:port] ...; protocol rtmp|flv; } }``): streams of an
edge vhost are pulled from an origin on demand, one pull per stream whatever the number of viewers.

Demand is the stream's viewers in the hub (RTMP, HTTP-FLV, WS-FLV, HTTP-TS) plus the HLS players of the key
(their sessions, and a playlist request that is waiting for the first one). The hub tells
:class:`EdgeService` synchronously whenever a viewer attaches or detaches or a publisher leaves
(``hub.watchers``), and :meth:`EdgeService.check` decides in that same step: demand and no pull → a pull
starts; no demand → the pull stops ``linger`` seconds later unless demand comes back first. Starting and
stopping are plain synchronous steps, so two viewers arriving together see one pull, and the last viewer's
teardown never waits on the pull's teardown (SRS #4166): stopping a pull only cancels its task. A pull that is
still closing when a new one is needed makes the new one wait for it before it connects, so the origin never
sees two pulls of one stream from this edge.

An :class:`EdgePull` is a registered client (kind ``puller``) and the stream's *publisher* in the hub: once
the origin sends media it claims the stream (a new generation, as a republish), so viewers, the GOP cache, HLS,
DVR and the API work as on an origin; viewers that were attached before keep their connections. When the
origin connection ends (the origin restarted, its publisher left and nothing comes for ``RECV_TIMEOUT``) the
pull releases its claim -- viewers wait through their republish grace, as after any unpublish -- and connects
again to the next origin, round robin, with a backoff. The round-robin position is kept per vhost by the
service, not per stream (SRS #4511: its balancer restarted at the first origin with every new session).

A stream published on the edge by a client (SRS's edge publish) stays that client's: a pull never takes a
stream over from a local publisher (a local publisher does take over a pull), and the ForwardService pushes
it to an origin (:meth:`EdgeService.origin_url`), so viewers on the other edges get it through the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import aiohttp

from livesrv import __version__
from livesrv.clients.rtmp import RtmpClient, RtmpClientError
from livesrv.codec import amf0
from livesrv.codec.errors import ProtocolError
from livesrv.codec.flv import FLVDecoder, FLVTag
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.client import ClientEvent, StatusEvent
from livesrv.config import DEFAULT_VHOST, ClusterConfig, Config
from livesrv.hub.clients import PULLER, VIEWER, HookContext, new_client_id
from livesrv.hub.keys import StreamKey
from livesrv.hub.settings import stream_settings
from livesrv.hub.states import PUBLISHED
from livesrv.log import event
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket

if TYPE_CHECKING:
    from livesrv.hub.hub import Hub, PublishToken

log = logging.getLogger("livesrv.edge")

#: Seconds to connect and start playing from an origin (SRS: 5 s for the TCP connect).
CONNECT_TIMEOUT: Final = 5.0
#: Seconds without media from the origin after which the pull tries the next origin (SRS: 5 s, then 3 s pause).
RECV_TIMEOUT: Final = 5.0
#: First and longest pause between two attempts, in seconds (doubling; reset once media flowed).
RETRY: Final = (0.5, 5.0)
#: Seconds a waiting HLS playlist request (no segment yet) holds the demand, as a session would.
HLS_DEMAND: Final = 30.0
#: Seconds between two registry lookups of a stream nobody (else) publishes yet (a claim's message wakes it).
OWNER_POLL: Final = 1.0
#: Default ports of ``origin`` entries without one, per protocol (SRS's).
DEFAULT_PORTS: Final = {"rtmp": 1935, "flv": 80}


def split_origin(origin: str, protocol: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port``) of an ``origin`` entry, with the protocol's default port."""
    default = DEFAULT_PORTS[protocol]
    if origin.startswith("["):
        host, _, rest = origin[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = origin.rpartition(":")
    return (host, int(port)) if sep else (origin, default)


def origin_url(cluster: ClusterConfig, origin: str, key: StreamKey, param: str, scheme: str) -> str:
    """The URL to pull ``key`` from (``scheme`` rtmp or http) or push it to, as SRS builds it: the stream's
    app and name, the viewer's query, and ``vhost=`` when the origin is asked for another vhost than its
    default one."""
    host, port = split_origin(origin, "rtmp" if scheme == "rtmp" else "flv")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    vhost = key.vhost if cluster.vhost == "[vhost]" else cluster.vhost
    query = param.lstrip("?")
    if vhost != DEFAULT_VHOST:
        query += ("&" if query else "") + f"vhost={quote(vhost)}"
    suffix = ".flv" if scheme != "rtmp" else ""
    return f"{scheme}://{netloc}/{key.app}/{key.stream}{suffix}" + (f"?{query}" if query else "")


def metadata_of(payload: bytes) -> dict[str, Any] | None:
    """The properties of an ``onMetaData`` (or ``@setDataFrame onMetaData``) data message, else None."""
    try:
        values = amf0.decode_all(payload)
    except ProtocolError:
        return None
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        return dict(values[1])
    return None


class EdgePull:
    """One stream pulled from the origins: a registered client and, while media flows, the stream's publisher."""

    kind: Final = PULLER

    def __init__(self, service: EdgeService, key: StreamKey, param: str, previous: asyncio.Task[None] | None) -> None:
        self.service = service
        self.key = key
        self.param = param
        self.cid = new_client_id()
        cluster = service.cluster(key)
        self.protocol = cluster.protocol
        self.ip = ""  # the origin it is connected to (or trying)
        self.url = ""
        self.started = time.time()
        self.state = "connecting"  # "up", "down"
        self.reason = ""
        self.attempts = 0
        self.connects = 0  # origin connections that brought media
        self._previous = previous  # a pull of the same stream still closing: waited for before connecting
        self._token: PublishToken | None = None
        self._last_media = 0.0
        self._recv = 0
        self._send = 0
        self._client: RtmpClient | None = None
        self.source = ""  # the origin (or, in a cluster, the owner node) it pulls from
        self._moved_to: str | None = None  # the owner changed: reconnect at once (cluster)
        self._wake = asyncio.Event()
        self._stopping = False
        self.task: asyncio.Task[None] | None = None

    @property
    def mirror(self) -> bool:
        """(the hub reads it) Pulled from another worker of this host, which writes the stream's HLS, DVR and
        forwards: this copy only feeds viewers. Not an edge vhost's pull (an origin elsewhere)."""
        return self.service.mirror and not self.service.cluster(self.key).edge

    # ----------------------------------------------------------------------------- the Client contract

    @property
    def context(self) -> HookContext:
        return HookContext(self.cid, self.ip, self.key.vhost, self.key.app, self.key.stream, self.param, self.url)

    @property
    def recv_bytes(self) -> int:
        c = self._client
        return self._recv + (c.recv_bytes if c is not None else 0)

    @property
    def send_bytes(self) -> int:
        c = self._client
        return self._send + (c.send_bytes if c is not None else 0)

    def kick(self, reason: str) -> None:
        """End the pull now: a local publisher took the stream over, or an operator kicked it (then it starts
        again at once if viewers remain: a kick is a reconnect)."""
        if self.task is not None and not self.task.done():
            event(log, "edge-pull-kicked", client=self.cid, stream=self.key, reason=reason)
            self._stopping = True
            self.service.forget(self)
            self.task.cancel()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.service.hub.register(self)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"edge pull {self.key}")
        self.task.add_done_callback(self._ended)

    def stop(self, reason: str) -> None:
        """Cancel the pull (its task releases the claim and closes the origin connection)."""
        if self.task is not None and not self.task.done():
            event(log, "edge-pull-stop", client=self.cid, stream=self.key, reason=reason)
            self._stopping = True
            self.task.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.service.hub.unregister(self)
        self.service.forget(self)
        self._release("pull ended")
        if not task.cancelled() and task.exception() is not None:
            event(log, "edge-pull-error", logging.ERROR, exc_info=task.exception(), client=self.cid, stream=self.key)

    async def _run(self) -> None:
        previous = self._previous
        if previous is not None:
            self._previous = None
            await asyncio.gather(previous, return_exceptions=True)  # (cancelled already: closes quickly)
        retry_min, retry_max = self.service.retry
        pause = retry_min
        # (``_stopping`` as well as the cancellation: a library that turns a cancellation into a timeout, as
        # redis-py can, must not keep a stopped pull alive.)
        while not self._stopping:
            if self.service.published_locally(self.key):
                self.service.forget(self)  # (a client publishes it here now: its viewers need no pull)
                return
            cluster = self.service.cluster(self.key)
            if cluster.edge:
                origin = self.source = self.service.next_origin(self.key.vhost, cluster.origin)
            elif self.service.resolver is not None:
                found = await self.service.resolver(self.key)
                if found is None:  # nobody (else) publishes it yet: wait for a claim, look again
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), OWNER_POLL)
                    continue
                self.source, origin = found
                self._moved_to = None
            else:
                return  # (the vhost stopped being an edge: reload)
            self.attempts += 1
            got_media = self.connects
            try:
                if cluster.edge and cluster.protocol == "flv":
                    await self._pull_flv(cluster, origin)
                else:
                    await self._pull_rtmp(cluster, origin)
                reason = "origin closed the connection"
            except (RtmpClientError, aiohttp.ClientError, OSError, ProtocolError, asyncio.TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                self._release("origin connection ended")
                self._retire_client()
            if self._moved_to is not None:
                event(log, "edge-pull-moved", client=self.cid, stream=self.key, source=self.source, to=self._moved_to)
                continue  # the stream has a new owner: straight to it
            if self._stopping:
                return
            self._set_state("down", f"{origin}: {reason}")
            if self.connects > got_media:
                pause = retry_min  # media flowed: the next try is quick again
            await asyncio.sleep(pause)
            pause = min(pause * 2, retry_max)

    def moved(self, node: str) -> None:
        """(cluster) ``node`` claimed the stream ("" : released): a pull waiting for an owner looks again, one
        connected to another node reconnects to the new owner at once."""
        self._wake.set()
        if node and node != self.source and self._client is not None:
            self._moved_to = node
            self._client.abort()

    # ----------------------------------------------------------------------------- origins

    async def _pull_rtmp(self, cluster: ClusterConfig, origin: str) -> None:
        url = self.url = origin_url(cluster, origin, self.key, self.param, "rtmp")
        self.ip = split_origin(origin, "rtmp")[0]
        props: dict[str, Any] = {}
        if cluster.debug_srs_upnode:
            props = {"srs_sig": "livesrv-edge", "srs_server": f"livesrv/{__version__}", "srs_pid": float(os.getpid())}
        client = self._client = await RtmpClient.connect(
            url, timeout=CONNECT_TIMEOUT, on_media=self._on_rtmp, on_event=self._on_event, properties=props)
        await client.play(timeout=CONNECT_TIMEOUT)
        self._last_media = time.monotonic()
        while not client.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(client.wait_closed()), RECV_TIMEOUT / 4)
            self._check_recv_timeout()
        if client.error is not None:
            raise client.error

    async def _pull_flv(self, cluster: ClusterConfig, origin: str) -> None:
        url = self.url = origin_url(cluster, origin, self.key, self.param, "http")
        self.ip = split_origin(origin, "flv")[0]
        timeout = aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT, sock_read=RECV_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, headers={"User-Agent": f"livesrv-edge/{__version__}"}) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=f"origin answered {resp.status}")
                decoder = FLVDecoder()
                self._last_media = time.monotonic()
                async for data in resp.content.iter_any():
                    self._recv += len(data)
                    for item in decoder.feed(data):
                        if isinstance(item, FLVTag):
                            self._media(item.tag_type, item.timestamp, item.payload)
                    self._check_recv_timeout()

    def _check_recv_timeout(self) -> None:
        if time.monotonic() - self._last_media > RECV_TIMEOUT:
            raise asyncio.TimeoutError(f"no media for {RECV_TIMEOUT:g}s")

    def _retire_client(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            self._recv += c.recv_bytes
            self._send += c.send_bytes
            c.abort()

    # ----------------------------------------------------------------------------- media in

    def _on_rtmp(self, msg: m.Message) -> None:
        if msg.type_id == m.AGGREGATE:
            for tag in FLVDecoder(expect_header=False).feed(msg.payload):
                if isinstance(tag, FLVTag):
                    self._media(tag.tag_type, (msg.timestamp + tag.timestamp) & 0xFFFFFFFF, tag.payload)
            return
        self._media(msg.type_id, msg.timestamp, msg.payload)

    def _on_event(self, ev: ClientEvent) -> None:
        if isinstance(ev, StatusEvent) and ev.code == "NetStream.Play.UnpublishNotify":
            self._release("the origin's publisher left")  # viewers wait through their grace; media may resume

    def _media(self, kind: int, timestamp: int, payload: bytes) -> None:
        if kind not in (AUDIO, VIDEO, DATA):
            return
        self._last_media = time.monotonic()
        token = self._token
        if token is None or not token.current:
            token = self._claim()
            if token is None:
                return
        stream = token.stream
        if kind == DATA:
            metadata = metadata_of(payload)
            if metadata is not None:
                stream.set_metadata(token.generation, metadata, MediaPacket(DATA, 0, payload))
            return
        stream.ingest(token.generation, MediaPacket.from_payload(kind, timestamp, payload))

    def _claim(self) -> PublishToken | None:
        """Become the stream's publisher (first media of an origin connection). Never over a local publisher:
        then this pull has no reason to exist and ends."""
        hub = self.service.hub
        stream = hub.get(self.key)
        if stream is not None and stream.state in PUBLISHED and stream.publisher is not self:
            self.kick(f"stream published locally by client {stream.publisher.cid if stream.publisher else '?'}")
            return None
        token = hub.begin_publish(self.key, self, stream_settings(self.service.config(), self.key.vhost), self.param)
        if not token.ready():
            return None
        self._token = token
        self.connects += 1
        self._set_state("up", "")
        return token

    def _release(self, reason: str) -> None:
        token, self._token = self._token, None
        if token is not None:
            token.release(reason)

    def _set_state(self, state: str, reason: str) -> None:
        """Log a change of state once (an origin that stays down is retried silently)."""
        if state == self.state:
            return
        self.state, self.reason = state, reason
        if state == "up":
            event(log, "edge-pull-up", client=self.cid, stream=self.key, origin=self.url)
        else:
            event(log, "edge-pull-down", logging.WARNING, client=self.cid, stream=self.key, origin=self.url,
                  reason=reason)


class EdgeService:
    """The pulls of every edge vhost, started and stopped by demand (composition root: app.py)."""

    def __init__(self, hub: Hub, config: Callable[[], Config], retry: tuple[float, float] = RETRY) -> None:
        self.hub = hub
        self.config = config  # read at each check: a reload applies to the next pull
        self.retry = retry
        self.pulls: dict[StreamKey, EdgePull] = {}
        self._closing: dict[StreamKey, asyncio.Task[None]] = {}  # a stopped pull's task until it is done
        self._timers: dict[StreamKey, asyncio.TimerHandle] = {}  # linger: stop the pull when it fires
        self._hls_waits: dict[StreamKey, float] = {}  # monotonic deadline of a waiting playlist request
        self._next: dict[str, int] = {}  # vhost -> round-robin position over its origins
        self._stopped = False
        self.hls_hold = HLS_DEMAND
        # In a cluster (clients/cluster.py): the owner of a stream, (node id, RTMP host:port), or None.
        self.resolver: Callable[[StreamKey], Awaitable[tuple[str, str] | None]] | None = None
        #: A worker of ``workers N``: the owners are this host's other workers, and pulls are mirrors (above).
        self.mirror = False

    def cluster(self, key: StreamKey) -> ClusterConfig:
        return self.config().vhost(key.vhost).cluster

    def is_edge(self, vhost: str) -> bool:
        """Streams of ``vhost`` that nobody publishes here are pulled: from its origins (an edge vhost), or
        from their owner (a cluster node: every vhost)."""
        return self.resolver is not None or self.config().vhost(vhost).cluster.edge

    async def start(self) -> None:
        self.hub.watchers.append(self.check)

    async def stop(self) -> None:
        self._stopped = True
        if self.check in self.hub.watchers:
            self.hub.watchers.remove(self.check)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [p.task for p in self.pulls.values() if p.task is not None] + list(self._closing.values())
        for pull in list(self.pulls.values()):
            pull.stop("server stopped")
        if tasks:
            await asyncio.wait(tasks, timeout=CONNECT_TIMEOUT)  # (each ends at its next step: bounded anyway)

    # ----------------------------------------------------------------------------- demand

    def demand(self, key: StreamKey) -> int:
        """Viewers of ``key`` on this server: hub viewers, HLS sessions, playlist requests waiting."""
        stream = self.hub.get(key)
        n = len(stream.viewers) if stream is not None else 0
        return n or self._hls_demand(key)

    def _hls_demand(self, key: StreamKey) -> int:
        """HLS players of ``key`` (they have no connection: their sessions and waiting playlist requests)."""
        n = sum(1 for c in self.hub.clients.values()
                if c.kind == VIEWER and c.protocol == "hls" and c.context.key == key)
        deadline = self._hls_waits.get(key)
        if deadline is not None:
            if time.monotonic() < deadline:
                n += 1
            else:
                del self._hls_waits[key]
        return n

    def check(self, key: StreamKey) -> None:
        """Start or schedule the stop of ``key``'s pull, from its demand now (one synchronous step)."""
        if self._stopped or not self.is_edge(key.vhost):
            return
        pull = self.pulls.get(key)
        stream = self.hub.get(key)
        viewers = len(stream.viewers) if stream is not None else 0
        if viewers or self._hls_demand(key):
            if viewers:
                timer = self._timers.pop(key, None)
                if timer is not None:
                    timer.cancel()  # a viewer came back during the linger: the pull goes on
            if pull is None and not self.published_locally(key):
                self._start(key)
            if not viewers:
                # Only HLS players hold it, and their sessions end without telling: look again later.
                self._arm(key)
        elif pull is not None:
            self._arm(key)

    def _arm(self, key: StreamKey) -> None:
        if key not in self._timers:
            delay = self.cluster(key).linger
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._linger_over, key)

    def want_hls(self, key: StreamKey) -> None:
        """A playlist of ``key`` was asked for and does not exist yet: pull, and hold the demand a while."""
        self._hls_waits[key] = time.monotonic() + self.hls_hold
        self.check(key)

    def published_locally(self, key: StreamKey) -> bool:
        stream = self.hub.get(key)
        return stream is not None and stream.state in PUBLISHED and not isinstance(stream.publisher, EdgePull)

    def _start(self, key: StreamKey) -> None:
        stream = self.hub.get(key)
        viewers = list(stream.viewers.values()) if stream is not None else []
        param = viewers[0].param if viewers else ""  # (SRS: the first viewer's query goes to the origin)
        pull = self.pulls[key] = EdgePull(self, key, param, self._closing.get(key))
        pull.start()
        event(log, "edge-pull-start", client=pull.cid, stream=key, protocol=pull.protocol)

    def _linger_over(self, key: StreamKey) -> None:
        self._timers.pop(key, None)
        pull = self.pulls.get(key)
        if pull is None:
            return
        if self.demand(key):
            self.check(key)  # (HLS players only: armed again)
            return
        self.forget(pull)
        pull.stop(f"no viewer for {self.cluster(key).linger:g}s")

    def moved(self, key: StreamKey, node: str) -> None:
        """(cluster) A claim of ``key`` by ``node`` ("": a release) was made elsewhere."""
        pull = self.pulls.get(key)
        if pull is not None:
            pull.moved(node)

    def forget(self, pull: EdgePull) -> None:
        """``pull`` is no longer the stream's pull (stopped, kicked or ended); its task may still be closing."""
        if self.pulls.get(pull.key) is pull:
            del self.pulls[pull.key]
            timer = self._timers.pop(pull.key, None)
            if timer is not None:
                timer.cancel()
        task = pull.task
        if task is not None and not task.done():
            self._closing[pull.key] = task
            task.add_done_callback(lambda t, key=pull.key: self._closed(key, t))
        elif self._closing.get(pull.key) is task:
            del self._closing[pull.key]

    def _closed(self, key: StreamKey, task: asyncio.Task[None]) -> None:
        if self._closing.get(key) is task:
            del self._closing[key]
        self.check(key)  # (an operator kick with viewers left: the next pull starts now)

    # ----------------------------------------------------------------------------- balancing

    def next_origin(self, vhost: str, origins: tuple[str, ...]) -> str:
        """The next origin of ``vhost``'s list, round robin across all its streams and pulls."""
        i = self._next.get(vhost, 0)
        self._next[vhost] = i + 1
        return origins[i % len(origins)]

    def origin_url(self, key: StreamKey, param: str) -> str | None:
        """Where a stream published on this edge is pushed (the next origin), or None off an edge vhost."""
        cluster = self.cluster(key)
        if not cluster.edge:
            return None
        return origin_url(cluster, self.next_origin(key.vhost, cluster.origin), key, param, "rtmp")

    def info(self, key: StreamKey) -> dict[str, Any] | None:
        pull = self.pulls.get(key)
        if pull is None:
            return None
        return {"client": pull.cid, "origin": pull.url, "state": pull.state, "reason": pull.reason,
                "attempts": pull.attempts, "connects": pull.connects}
