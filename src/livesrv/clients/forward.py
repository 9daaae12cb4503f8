"""Forward (SRS's ``vhost { forward { ... } }``): every stream published on the vhost is also pushed, by livesrv
as an RTMP client, to each destination.

One :class:`ForwardOutput` per stream (kept in ``stream.extra``, so a republish reuses it) is a hub output: its
:meth:`~ForwardOutput.start` runs in the READY step of each live period and creates one :class:`Forwarder` per
destination (with ``backend``, it first asks the backend for the URLs, in a task: the publish never waits for
it); :meth:`~ForwardOutput.end` stops that period's forwarders, bounded in time. A forwarder is a registered
client (kind ``forwarder``, listed by ``/api/v1/clients``) that owns one task:

* connect and publish (SRS: 3 s connect timeout; livesrv bounds the whole connect+publish), then send the
  stream's metadata and sequence headers and its cached GOP, so the destination starts at a keyframe at once;
* then send what the stream ingests, from a queue fed by :meth:`Forwarder.push` (called inside the
  publisher's ingest: no I/O there). The queue is bounded in bytes: a destination slower than the stream
  makes it drop everything queued and resume at the next keyframe, with fresh headers, never grow;
* on any error (refused, reset, a destination that stops reading for ``SEND_TIMEOUT``), close and retry after
  a backoff that doubles from ``retry[0]`` to ``retry[1]`` seconds (SRS: a fixed 3 s), forever while the
  publisher is there. ``event=forward-down`` is logged when it goes down and ``event=forward-up`` when it is
  up again: once per state change, not per try. Nothing of this touches the stream, its viewers or the other
  destinations.

The destination URL, as SRS builds it: ``rtmp://host:port/app/stream`` with the publisher's app and stream
(or the ``/app[/stream]`` the destination names: a livesrv extension) and query, plus ``vhost=`` when the
stream is not on the default vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from livesrv.clients.rtmp import RtmpClient, RtmpClientError, RtmpClosedError, RtmpUrl, RtmpUrlError
from livesrv.config import DEFAULT_VHOST, Config, ForwardDestination
from livesrv.hub.clients import FORWARDER, PUBLISHER, PULLER, HookContext, new_client_id
from livesrv.hub.keys import StreamKey, mask_url
from livesrv.hub.stream import Stream
from livesrv.log import event
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.forward")

#: Seconds to connect, handshake, ``connect`` and ``publish`` (SRS: 3 s for the TCP connect, 30 s per read).
CONNECT_TIMEOUT: Final = 10.0
#: Seconds a destination may keep the socket buffer full before the connection counts as dead (SRS: 30 s).
SEND_TIMEOUT: Final = 30.0
#: First and longest wait between two attempts, in seconds.
RETRY: Final = (1.0, 30.0)
#: Bytes of media queued for one destination; past it the queue is dropped and the next keyframe resumes.
MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024
#: Messages sent between two back-pressure checks (SRS sends batches of up to 128).
BATCH: Final = 128
#: Seconds ``end`` waits for a forwarder to say goodbye (FCUnpublish, deleteStream) before dropping it.
CLOSE_TIMEOUT: Final = 2.0
#: At most this many URLs are taken from a backend's answer.
MAX_BACKEND_URLS: Final = 64

def destination_url(dest: ForwardDestination, ctx: HookContext) -> str:
    """The RTMP URL to push the publisher's stream (``ctx``) to, as SRS builds it for a destination."""
    host = f"[{dest.host}]" if ":" in dest.host else dest.host
    query = ctx.param if ctx.param.startswith("?") else (f"?{ctx.param}" if ctx.param else "")
    if ctx.vhost != DEFAULT_VHOST:
        query += ("&" if query else "?") + f"vhost={ctx.vhost}"
    return f"rtmp://{host}:{dest.port}/{dest.app or ctx.app}/{dest.stream or ctx.stream}{query}"


def backend_urls(answer: Any) -> list[str]:
    """The RTMP URLs of an ``on_forward`` answer (``{"code": 0, "data": {"urls": [...]}}``), as SRS reads
    them: empty strings are skipped. Raises ValueError (the reason) for anything else: then no forward starts
    at all (never a part of them)."""
    if not isinstance(answer, dict):
        raise ValueError("answer is not an object")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise ValueError("no data object in the answer")
    urls = data.get("urls")
    if not isinstance(urls, list):
        raise ValueError("no data.urls array in the answer")
    if len(urls) > MAX_BACKEND_URLS:
        raise ValueError(f"more than {MAX_BACKEND_URLS} urls")
    out: list[str] = []
    for url in urls:
        if not isinstance(url, str):
            raise ValueError(f"data.urls holds a {type(url).__name__}, not a string")
        if not url:
            continue
        try:
            RtmpUrl.parse(url)
        except RtmpUrlError as exc:
            raise ValueError(f"bad URL in data.urls: {mask_url(url)}: {exc}") from None
        out.append(url)
    return out


class Forwarder:
    """One destination of one live period: a registered client that owns the task pushing to it."""

    kind: Final = FORWARDER
    protocol: Final = "rtmp"

    def __init__(self, hub: Hub, stream: Stream, url: str, publisher: HookContext,
                 retry: tuple[float, float] = RETRY, max_queue_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.hub = hub
        self.stream = stream
        self.generation = stream.generation
        self.url = url
        self.target = RtmpUrl.parse(url)  # RtmpUrlError for a bad one: the caller skips it
        self.destination = mask_url(url)  # for logs and the API: tokens in the query are hidden
        self.cid = new_client_id()
        self.ip = self.target.host
        self.context = HookContext(self.cid, self.target.host, publisher.vhost, publisher.app, publisher.stream,
                                   publisher.param, self.destination)
        self.started = time.time()
        self.retry = retry
        self.max_queue_bytes = max_queue_bytes
        self.state = "connecting"  # "up", "down"; "stopped" at the end
        self.reason = ""  # why it is down
        self.attempts = 0  # connection attempts
        self.connects = 0  # successful publishes
        self.dropped = 0  # packets dropped because the destination was slower than the stream
        self._queue: deque[MediaPacket] = deque()
        self._queued = 0  # bytes in the queue
        self._sending = False  # connected: push() queues, else it ignores (the next connect starts at the GOP)
        self._need_keyframe = False
        self._wake = asyncio.Event()
        self._client: RtmpClient | None = None
        self._retired_send = 0
        self._retired_recv = 0
        self._stopping = False
        self.task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------- the Client contract

    @property
    def send_bytes(self) -> int:
        c = self._client
        return self._retired_send + (c.send_bytes if c is not None else 0)

    @property
    def recv_bytes(self) -> int:
        c = self._client
        return self._retired_recv + (c.recv_bytes if c is not None else 0)

    def kick(self, reason: str) -> None:
        """Stop this forward (the stream and the other forwards go on); it unregisters when its task ends."""
        if self.task is not None and not self.task.done():
            event(log, "forward-kicked", client=self.cid, stream=self.stream.key, dest=self.destination,
                  reason=reason)
            self._stopping = True
            self.task.cancel()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Register and start pushing; the hub's registry lists it until its task ends (exactly once)."""
        self.hub.register(self)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"forward {self.destination}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.hub.unregister(self)
        self.state = "stopped"
        self._queue.clear()
        self._queued = 0
        event(log, "forward-stop", client=self.cid, stream=self.stream.key, dest=self.destination,
              connects=self.connects, dropped=self.dropped, send_bytes=self.send_bytes)

    async def stop(self) -> None:
        """End the forward: goodbye to the destination (bounded by CLOSE_TIMEOUT), then the task is done."""
        self._stopping = True
        task = self.task
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # ----------------------------------------------------------------------------- media in

    def push(self, pkt: MediaPacket) -> None:
        """One packet of the live period, inside the publisher's ingest: queue it (bounded), never block."""
        if not self._sending:
            return
        if self._need_keyframe:
            if not self._random_access(pkt):
                self.dropped += 1
                return
            self._need_keyframe = False
            for header in self.stream.gop.header_packets(pkt.timestamp):
                if header.kind != DATA:
                    self._enqueue(header)
        self._enqueue(pkt)
        if self._queued > self.max_queue_bytes:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._queued = 0
            self._need_keyframe = True
        self._wake.set()

    def _enqueue(self, pkt: MediaPacket) -> None:
        self._queue.append(pkt)
        self._queued += len(pkt.payload)

    def _random_access(self, pkt: MediaPacket) -> bool:
        if pkt.sequence_header:
            return False
        if self.stream.has_video:
            return pkt.kind == VIDEO and pkt.keyframe
        return pkt.kind == AUDIO

    # ----------------------------------------------------------------------------- the task

    async def _run(self) -> None:
        delay = self.retry[0]
        try:
            while not self._stopping:
                client: RtmpClient | None = None
                self.attempts += 1
                try:
                    client = await RtmpClient.connect(self.url, timeout=CONNECT_TIMEOUT)
                    self._client = client
                    await client.publish(timeout=CONNECT_TIMEOUT)
                    self.connects += 1
                    delay = self.retry[0]
                    self._set_state("up", "")
                    await self._send(client)
                except RtmpClientError as exc:
                    self._set_state("down", str(exc))
                except OSError as exc:  # (the client maps socket errors; this is a last resort)
                    self._set_state("down", f"{type(exc).__name__}: {exc}")
                finally:
                    self._sending = False
                    self._queue.clear()
                    self._queued = 0
                    if client is not None:
                        await self._close(client)
                if self._stopping:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])
        except asyncio.CancelledError:
            pass  # stopped: end() or kick(); the goodbye already ran in the finally above

    async def _close(self, client: RtmpClient) -> None:
        try:
            await asyncio.shield(client.close(timeout=CLOSE_TIMEOUT))
        except asyncio.CancelledError:  # cancelled again while saying goodbye: drop it
            client.abort()
        self._retired_send += client.send_bytes
        self._retired_recv += client.recv_bytes
        if self._client is client:
            self._client = None

    async def _send(self, client: RtmpClient) -> None:
        """Prime the destination (metadata, headers, cached GOP), then send the queue until an error."""
        stream = self.stream
        if stream.generation != self.generation:
            raise RtmpClosedError("the live period ended", step="forward")
        if stream.metadata:
            client.send_metadata(stream.metadata)
        prime = [p for p in stream.gop.start_packets() if p.kind != DATA]
        self._queue.clear()
        self._queue.extend(prime)
        self._queued = sum(len(p.payload) for p in prime)
        # Without a cached GOP (gop_cache off, or no keyframe yet) the media starts at the next keyframe.
        self._need_keyframe = not any(self._random_access(p) for p in prime)
        self._sending = True
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                if client.closed:  # the destination hung up while nothing was to be sent
                    raise client.error or RtmpClosedError("closed by the destination", step="forward")
                continue
            for _ in range(min(BATCH, len(queue))):
                pkt = queue.popleft()
                self._queued -= len(pkt.payload)
                if pkt.kind == DATA:
                    client.send_metadata(stream.metadata)
                else:
                    client.send_media(pkt.kind, pkt.timestamp, pkt.payload)
            await client.drain(timeout=SEND_TIMEOUT)

    def _set_state(self, state: str, reason: str) -> None:
        """Log a change of state once (a destination that stays down is retried silently)."""
        previous, self.state, self.reason = self.state, state, reason
        if state == previous:
            return
        if state == "up":
            event(log, "forward-up", client=self.cid, stream=self.stream.key, dest=self.destination,
                  connects=self.connects)
        elif not self._stopping:
            event(log, "forward-down", logging.WARNING, client=self.cid, stream=self.stream.key,
                  dest=self.destination, reason=reason)


class _Period:
    """The forwards of one live period (one publisher generation)."""

    __slots__ = ("generation", "forwarders", "backend")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.forwarders: list[Forwarder] = []
        self.backend: asyncio.Task[None] | None = None


def _published_by_client(publisher: Any) -> bool:
    """A client published it (not an edge pull bringing it from an origin)."""
    return getattr(publisher, "kind", PUBLISHER) != PULLER


class ForwardOutput:
    """The hub output of one stream: the forwards of each of its live periods."""

    name = "forward"
    owner_only = True  # (workers: one push per stream, by its owner)
    linger: float | None = None

    def __init__(self, service: ForwardService, stream: Stream) -> None:
        self.service = service
        self.stream = stream
        self._periods: dict[int, _Period] = {}
        self._live: _Period | None = None

    @property
    def forwarders(self) -> list[Forwarder]:
        return [f for p in self._periods.values() for f in p.forwarders]

    def start(self, stream: Stream) -> None:
        cfg = self.service.config().vhost(stream.key.vhost).forward
        publisher = stream.publisher
        self._live = None
        if publisher is None:
            return
        ctx = publisher.context
        # An edge pushes what its own clients publish to an origin (SRS's edge publish); a pulled stream, which
        # comes from an origin, is never pushed back.
        upstream = self.service.edge_url(stream.key, ctx.param) if _published_by_client(publisher) else None
        if not cfg.enabled and upstream is None:
            return
        period = self._live = self._periods[stream.generation] = _Period(stream.generation)
        if upstream is not None:
            self._start(period, [upstream], ctx)
        if not cfg.enabled:
            return
        if cfg.backend:
            # Asked in a task: the publish never waits for the backend (SRS #4631). Until it answers nothing is
            # forwarded; a failure leaves the stream as it is, without forwards.
            period.backend = asyncio.get_running_loop().create_task(
                self._ask_backend(period, cfg.backend[0], ctx), name=f"forward backend {stream.key}")
            self.service.track(period.backend)
            return
        self._start(period, [destination_url(d, ctx) for d in cfg.destination], ctx)

    def _start(self, period: _Period, urls: list[str], ctx: HookContext) -> None:
        for url in urls:
            try:
                fwd = Forwarder(self.service.hub, self.stream, url, ctx, self.service.retry,
                                self.service.max_queue_bytes)
            except RtmpUrlError as exc:
                event(log, "forward-refused", logging.WARNING, stream=self.stream.key, dest=mask_url(url),
                      reason=str(exc))
                continue
            period.forwarders.append(fwd)
            fwd.start()
            self.service.track(fwd.task)  # type: ignore[arg-type]
            event(log, "forward-start", client=fwd.cid, stream=self.stream.key, dest=fwd.destination,
                  generation=period.generation)

    async def _ask_backend(self, period: _Period, url: str, ctx: HookContext) -> None:
        why, answer = await self.service.access.forward_backend(url, ctx)
        urls: list[str] = []
        if why is None:
            try:
                urls = backend_urls(answer)
            except ValueError as exc:
                why = str(exc)
        if why is not None:
            event(log, "forward-backend-failed", logging.WARNING, stream=self.stream.key, url=mask_url(url),
                  reason=why)
            return
        if self._periods.get(period.generation) is not period:
            return  # the period ended while the backend thought
        event(log, "forward-backend", stream=self.stream.key, url=mask_url(url), urls=len(urls))
        self._start(period, urls, ctx)

    def on_packet(self, pkt: MediaPacket) -> None:
        period = self._live
        if period is not None:
            for fwd in period.forwarders:
                fwd.push(pkt)

    async def end(self, stream: Stream, generation: int) -> None:
        period = self._periods.pop(generation, None)
        if period is None:
            return
        if not self._periods:
            self.service.idle(self)
        if self._live is period:
            self._live = None
        if period.backend is not None and not period.backend.done():
            period.backend.cancel()
            await asyncio.gather(period.backend, return_exceptions=True)
        await asyncio.gather(*(f.stop() for f in period.forwarders), return_exceptions=True)

    def dispose(self) -> None:
        """(Never called: ``linger`` is None.)"""

    async def stop(self) -> None:
        """Server shutdown: end every period."""
        for generation in list(self._periods):
            await self.end(self.stream, generation)


class ForwardService:
    """Gives each stream of a forward-enabled vhost its :class:`ForwardOutput` (composition root: app.py)."""

    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access,
                 retry: tuple[float, float] = RETRY, max_queue_bytes: int = MAX_QUEUE_BYTES,
                 edge_url: Callable[[StreamKey, str], str | None] = lambda key, param: None) -> None:
        self.hub = hub
        # Where a stream published on an edge vhost is pushed (the next origin), None elsewhere (edge.py).
        self.edge_url = edge_url
        self.config = config  # read at each publish: a reload applies to the next one (as SRS)
        self.access = access
        self.retry = retry
        self.max_queue_bytes = max_queue_bytes
        self._outputs: dict[StreamKey, ForwardOutput] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every forwarder's and backend call's, until done

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` until it is done, so that :meth:`stop` ends it even when the hub's drain (which
        normally ends it) was cancelled by the shutdown."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self.hub.output_providers.append(self._provide)

    async def stop(self) -> None:
        if self._provide in self.hub.output_providers:
            self.hub.output_providers.remove(self._provide)
        outputs = list(self._outputs.values())
        self._outputs.clear()
        for out in outputs:
            out.stream.remove_output(out)
        await asyncio.gather(*(out.stop() for out in outputs), return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # (each one's goodbye is bounded: CLOSE_TIMEOUT)

    def _provide(self, stream: Stream) -> ForwardOutput | None:
        """A stream goes live: its forward output (the same one across republishes of that stream object)."""
        out: ForwardOutput | None = stream.extra.get("forward")
        if out is None:
            vhost = self.config().vhost(stream.key.vhost)
            if not vhost.forward.enabled and not vhost.cluster.edge:
                return None
            out = stream.extra["forward"] = ForwardOutput(self, stream)
        self._outputs[stream.key] = out  # (again after a republish: dropped by idle() when its periods ended)
        return out

    def idle(self, out: ForwardOutput) -> None:
        """``out`` has no live period left: forget it until its stream goes live again."""
        if self._outputs.get(out.stream.key) is out:
            del self._outputs[out.stream.key]

    def forwarders(self) -> list[Forwarder]:
        return [f for out in self._outputs.values() for f in out.forwarders]
