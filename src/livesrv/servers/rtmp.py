"""RTMP over TCP: a thin asyncio adapter around the sans-IO :class:`ServerSession`.

Bytes from the socket go into the session; its events are turned into hub calls; the session's replies and
the hub's shared media bytes go back out. A ``ProtocolError`` closes this one connection with one log line.
Timeouts (handshake, idle, publisher silence, a viewer that stopped reading) are checked by one sweeper task
for all connections rather than a timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from dataclasses import dataclass

from livesrv import __version__, stats
from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp import session as s
from livesrv.access import Access
from livesrv.config import Config
from livesrv.hub.hub import Hub, PublishToken, StreamBusy
from livesrv.hub.clients import PUBLISHER, VIEWER, HookContext
from livesrv.hub.keys import StreamKey, StreamRequest, mask_url, parse_rtmp_request, request_problem
from livesrv.hub.stream import NEED_KEYFRAME, Stream, Viewer
from livesrv.log import client_event
from livesrv.media.formats import rtmp_format
from livesrv.media.packet import DATA, MediaPacket
from livesrv.hub.clients import new_client_id
from livesrv.hub.settings import stream_settings
from livesrv.servers.limits import ConnectionBudget
from livesrv.servers.tls import TlsEndpoint, TlsListener, viewer_transport

log = logging.getLogger("livesrv.rtmp")
_MediaReceived = s.MediaReceived
_packet = MediaPacket.from_payload

#: After a read this large, no pause: it may have left more in the kernel (uvloop reads at most 256,000 bytes at
#: a time, asyncio 256 KiB), and a read this large is cheap per byte anyway. So merged reads never limit a
#: publisher's rate: a pause after every full read would cap it near 256 KB per mr_latency.
MERGED_READ_FULL = 128 * 1024

#: Merged reads resume on a grid of this many seconds (the nearest point to mr_latency after the read), so
#: that the publishers due about the same time are resumed by one timer and read in one wake-up of the loop,
#: instead of a timer and a wake-up each. A pause is then mr_latency +- half of it; shorter latencies are not
#: put on the grid.
MERGED_READ_GRID = 0.05

#: Messages a client may send while one of its hooks is awaited (a publisher sends none before
#: Publish.Start); more is a client that does not wait for answers, closed rather than buffered.
MAX_BACKLOG = 1000


@dataclass(slots=True)
class Limits:
    max_message_size: int
    handshake_timeout: float
    idle_timeout: float
    max_write_buffer: int  # bytes queued for a viewer before it skips to the next keyframe
    chunk_size: int


class RTMPConnection(asyncio.Protocol):
    """One TCP connection: publisher, player, or not yet either."""

    def __init__(self, server: RTMPServer) -> None:
        self.server = server
        self.cid = new_client_id()
        self.ip = "?"
        self.transport: asyncio.Transport | None = None
        lim = server.limits
        self.session = s.ServerSession(
            out_chunk_size=lim.chunk_size,
            max_message_size=lim.max_message_size,
            server_info={"srs_server": f"livesrv/{__version__}", "srs_version": __version__},
        )
        now = time.monotonic()
        self.created = now
        self.last_recv = now
        self.idle_since = now  # neither publishing nor playing since
        self.closed = False
        self.key: StreamKey | None = None
        self.param = ""
        # publisher state
        self.pub_token: PublishToken | None = None
        self.pub_stream_id = 0
        self.got_media = False
        self.merged_read = 0.0  # seconds between reads of a live publisher (publish { mr on; }), 0: off
        # player state
        self.viewer: Viewer | None = None
        self.play_stream_id = 0
        self.play_paused = False
        self.write_paused = False
        self.stalled_since: float | None = None
        self.recv_bytes = 0
        self._sent = 0  # by the session; media a viewer got through the fan-out is in viewer.send_bytes
        self.started = 0.0  # wall clock, when it started publishing or playing (the hub's client registry)
        self._context: HookContext | None = None  # set while it is a registered client
        # A gate (an awaited on_connect/on_publish/on_play hook) holds later events back, in order.
        self._gate: asyncio.Task[None] | None = None
        self._backlog: list[s.Event] = []
        self.connected: HookContext | None = None  # set once connect was accepted (for on_close)
        self.page_url = ""
        self.swf_url = ""
        self.playing: HookContext | None = None  # set while an admitted play runs (for on_stop)

    # ---------------------------------------------------------------------------- the hub's client

    @property
    def kind(self) -> str:
        return PUBLISHER if self.pub_token is not None else VIEWER

    protocol = "rtmp"

    @property
    def context(self) -> HookContext:
        ctx = self._context
        return ctx if ctx is not None else HookContext(self.cid, self.ip, "", "")

    @property
    def send_bytes(self) -> int:
        viewer = self.viewer
        return self._sent + (viewer.send_bytes if viewer is not None else 0)

    def _register(self, req: StreamRequest) -> None:
        """It publishes or plays now: listed in the hub's registry until it stops (or closes)."""
        self._context = HookContext.from_request(self.cid, self.ip, req, self.page_url, swf_url=self.swf_url)
        self.started = time.time()
        self.server.hub.register(self)

    def _unregister(self) -> None:
        self.server.hub.unregister(self)

    # ------------------------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None and self.server.tcp_nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        # The write buffer limit is how a viewer that stops reading is noticed without polling.
        transport.set_write_buffer_limits(high=self.server.limits.max_write_buffer)
        if not self.server.budget.try_acquire():  # max_connections counts every listener's clients
            self.closed = True
            transport.abort()
            self.server.budget.reject("rtmp", self.ip)  # rate-limited: an attack must not flood the log
            return
        self.server.connections[self.cid] = self
        client_event(log, "connect", self.cid, self.ip, level=logging.DEBUG)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_recv = time.monotonic()
        self.recv_bytes += len(data)
        self._safely(self._receive, data)
        if self.merged_read and len(data) < MERGED_READ_FULL and not self.closed and self.transport is not None:
            # SRS's merged read: leave the socket alone for a while, the next read takes all that came. What
            # this read brought is one batch for the viewers at once (it already waited up to mr_latency).
            token = self.pub_token
            if token is not None and token.live:
                token.stream.flush()
            self.transport.pause_reading()
            self.server.resume_later(self, self.merged_read)

    def merged_read_done(self) -> None:
        """The end of a merged read's pause (a closed connection stays closed)."""
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _receive(self, data: bytes) -> None:
        events = self.session.receive_data(data)
        if self._gate is None:
            self._run(events)
            return
        self._backlog.extend(events)
        if len(self._backlog) > MAX_BACKLOG:
            self.close(f"sent {MAX_BACKLOG} messages while its hook was pending", abort=True, level=logging.WARNING)

    def _safely(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step of this connection: bad input or a bug closes this connection only, with its reason."""
        try:
            step(*args)
        except ProtocolError as exc:
            self.close(f"protocol error: {exc}", abort=True, level=logging.WARNING)
            return
        except Exception as exc:  # a bug must cost this one connection, never the server
            log.exception("event=internal-error client=%s ip=%s", self.cid, self.ip)
            self.close(f"internal error: {exc!r}", abort=True, level=logging.ERROR)
            return
        self._flush()

    def _run(self, events: list[s.Event]) -> None:
        """Handle events in order; a handler that opens a gate leaves the rest in the backlog for later."""
        for i, ev in enumerate(events):
            if ev.__class__ is _MediaReceived:
                # Nearly every event of a publisher, so handled here rather than through ``_handle``: media neither
                # closes the connection nor opens a gate.
                token = self.pub_token
                if token is not None:
                    msg = ev.message  # type: ignore[union-attr]
                    self.got_media = True
                    token.stream.ingest(token.generation, _packet(msg.type_id, msg.timestamp, msg.payload))
                continue
            self._handle(ev)
            if self.closed:
                return
            if self._gate is not None:
                # Reading goes on (a peer that vanishes must still be noticed); what it sends waits here.
                self._backlog.extend(events[i + 1 :])
                return

    def _open_gate(self, work: Coroutine[Any, Any, None]) -> None:
        self._gate = asyncio.get_running_loop().create_task(self._gated(work), name=f"rtmp-gate {self.cid}")

    async def _gated(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - a bug in a gate costs this connection only
            log.exception("event=internal-error client=%s ip=%s", self.cid, self.ip)
            self.close(f"internal error: {exc!r}", abort=True, level=logging.ERROR)
            return
        finally:
            self._gate = None
        if self.closed:
            return
        self._flush()
        backlog, self._backlog = self._backlog, []
        self._safely(self._run, backlog)

    def pause_writing(self) -> None:
        now = time.monotonic()
        self.write_paused = True
        self.stalled_since = now
        if self.viewer is not None:
            self.viewer.pause(now)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.stalled_since = None
        if self.viewer is not None and not self.play_paused:
            self.viewer.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close("peer closed" if exc is None else f"connection lost: {exc}")

    # ---------------------------------------------------------------------------------------- helpers

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.closed:
            self._sent += len(out)
            self.transport.write(out)

    def close(self, reason: str, *, abort: bool = False, level: int = logging.INFO) -> None:
        """Release everything this connection holds, exactly once, then close the socket."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        if self._gate is not None and self._gate is not asyncio.current_task():
            self._gate.cancel()  # its finally/except paths release nothing: _release below does it all
        self._release()
        self.server.connections.pop(self.cid, None)
        self.server.budget.release()
        client_event(
            log, "close", self.cid, self.ip, self.key or "", reason, level,
            recv_bytes=self.recv_bytes, send_bytes=self.send_bytes,
        )
        stats.connection_closed("rtmp", self.recv_bytes, self.send_bytes, level >= logging.WARNING)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _release(self) -> None:
        if self.pub_token is not None:
            token, self.pub_token = self.pub_token, None
            token.release("publisher closed")
            self._unregister()
        if self.viewer is not None:
            self._stop_viewer()
        if self.connected is not None:
            ctx, self.connected = self.connected, None
            self.server.access.close(ctx, self.send_bytes, self.recv_bytes)

    def _stop_viewer(self) -> None:
        viewer, self.viewer = self.viewer, None
        assert viewer is not None
        self._sent += viewer.send_bytes  # media went out through the fan-out, not the session
        self.server.hub.detach(viewer)
        self._unregister()
        self.idle_since = time.monotonic()
        if self.playing is not None:
            ctx, self.playing = self.playing, None
            self.server.access.stop(ctx)

    # ----------------------------------------------------------------------------------------- events

    def _handle(self, ev: s.Event) -> None:
        if isinstance(ev, s.MediaReceived):
            token = self.pub_token
            if token is not None:
                msg = ev.message
                self.got_media = True
                token.stream.ingest(token.generation, MediaPacket.from_payload(msg.type_id, msg.timestamp, msg.payload))
        elif isinstance(ev, s.MetadataReceived):
            token = self.pub_token
            if token is not None:
                # Always at time 0: FFmpeg reads onMetaData stamped later as a subtitle stream.
                pkt = MediaPacket(DATA, 0, ev.payload)
                token.stream.set_metadata(token.generation, ev.metadata, pkt)
        elif isinstance(ev, s.ConnectRequest):
            self._on_connect(ev)
        elif isinstance(ev, s.PublishRequest):
            self._on_publish(ev)
        elif isinstance(ev, s.PlayRequest):
            self._on_play(ev)
        elif isinstance(ev, s.UnpublishRequest):
            if self.pub_token is not None and ev.stream_id == self.pub_stream_id:
                token, self.pub_token = self.pub_token, None
                token.release(ev.reason)
                self._unregister()
                self.merged_read = 0.0
                self.idle_since = time.monotonic()
                client_event(log, "unpublish", self.cid, self.ip, self.key or "", ev.reason)
        elif isinstance(ev, s.StopPlayRequest):
            if self.viewer is not None and ev.stream_id == self.play_stream_id:
                self._stop_viewer()
                client_event(log, "stop", self.cid, self.ip, self.key or "", ev.reason)
        elif isinstance(ev, s.PauseRequest):
            self.play_paused = ev.paused
            viewer = self.viewer
            if viewer is not None:
                # Resuming starts at the next keyframe: what was skipped while paused is gone, as in live TV.
                viewer.blocked = ev.paused or self.write_paused
                if ev.paused and viewer.cursor >= 0:
                    viewer.cursor = NEED_KEYFRAME
        elif isinstance(ev, s.HandshakeDone):
            client_event(log, "handshake", self.cid, self.ip, level=logging.DEBUG, complex=ev.complex)
        elif isinstance(ev, s.UnknownCommand):
            client_event(log, "command", self.cid, self.ip, reason=f"unknown command {ev.name!r}", level=logging.DEBUG)

    def _on_connect(self, ev: s.ConnectRequest) -> None:
        # What the client says about itself goes to the log as sent (quoted and escaped by client_event).
        extra = {k: v for k, v in (("pageUrl", mask_url(ev.page_url) if ev.page_url else ""),
                                   ("swfUrl", ev.swf_url), ("flashVer", ev.flash_ver)) if v}
        client_event(log, "connect", self.cid, self.ip, tcUrl=mask_url(ev.tc_url), app=ev.app.split("?", 1)[0], **extra)
        req = parse_rtmp_request(ev.tc_url, ev.app, "", self.server.config.vhosts.keys())
        bad = request_problem(req)
        if bad is not None:
            self.session.reject_connect(ev, bad)
            self.close(f"connect rejected: {bad}", level=logging.WARNING)
            return
        self.page_url = ev.page_url
        self.swf_url = ev.swf_url
        ctx = HookContext(self.cid, self.ip, req.key.vhost, req.key.app, "", req.param, ev.tc_url, ev.page_url)
        if not self.server.access.urls(req.key.vhost, "on_connect"):
            self._connected(ev, ctx)
            return

        async def gate() -> None:
            reason = await self.server.access.connect(ctx)
            if reason is not None:
                self.session.reject_connect(ev, f"on_connect refused: {reason}")
                self.close(f"connect rejected by on_connect: {reason}", level=logging.WARNING)
                return
            self._connected(ev, ctx)

        self._open_gate(gate())

    def _connected(self, ev: s.ConnectRequest, ctx: HookContext) -> None:
        self.session.accept_connect(ev)
        self.connected = ctx

    def _request(self, name: str) -> StreamRequest:
        return parse_rtmp_request(self.session.tc_url, self.session.app, name, self.server.config.vhosts.keys())

    def _on_publish(self, ev: s.PublishRequest) -> None:
        req = self._request(ev.name)
        self.key, self.param = req.key, req.param
        if self.pub_token is not None or self.viewer is not None:
            self._refuse_publish(ev, "this connection already publishes or plays a stream")
            return
        if not req.key.app or not req.key.stream:
            self._refuse_publish(ev, f"invalid stream name {ev.name!r}: want rtmp://host/app/stream")
            return
        bad = request_problem(req)
        if bad is not None:
            self._refuse_publish(ev, bad)
            return
        config = self.server.config
        access = self.server.access
        if not config.vhost(req.key.vhost).enabled:
            self._refuse_publish(ev, f"vhost {req.key.vhost} is disabled")
            return
        denied = access.security(req.key.vhost, "publish", self.ip)
        if denied is not None:
            self._refuse_publish(ev, denied, "NetStream.Publish.Rejected")
            return
        try:
            # The claim is taken before the on_publish hook is awaited: nothing can remove or recreate the
            # stream meanwhile (SRS #4182), and a failed hook releases exactly this claim.
            token = self.server.hub.begin_publish(req.key, self, stream_settings(config, req.key.vhost), req.param)
        except StreamBusy as exc:
            self._refuse_publish(ev, f"Stream already exists or busy: {exc}", "NetStream.Publish.BadName")
            return
        self.pub_token, self.pub_stream_id = token, ev.stream_id
        self._register(req)
        if not access.publish_gated(req.key.vhost):
            self._start_publish(ev, req, token)
            return
        ctx = HookContext.from_request(self.cid, self.ip, req, self.page_url)

        async def gate() -> None:
            reason = await access.publish(ctx)
            if reason is not None:
                self._refuse_publish(ev, f"on_publish refused: {reason}", "NetStream.Publish.Rejected")
                return
            self._start_publish(ev, req, token)

        self._open_gate(gate())

    def _start_publish(self, ev: s.PublishRequest, req: StreamRequest, token: PublishToken) -> None:
        if not token.ready():  # taken over (or kicked) while its on_publish hook was awaited
            self._refuse_publish(ev, "another publisher took the stream while on_publish was pending")
            return
        self.session.accept_publish(ev)
        client_event(log, "publish", self.cid, self.ip, req.key, param=req.masked_param(), type=ev.publish_type)
        vhost = self.server.config.vhost(req.key.vhost)
        latency = vhost.publish.mr_latency
        if latency is None:
            latency = vhost.play.mw_latency
        self.merged_read = latency / 1000 if vhost.publish.mr and latency > 0 and not vhost.min_latency else 0.0

    def kick(self, reason: str) -> None:
        """The hub (takeover, operator) ends this publisher."""
        self.close(reason, level=logging.WARNING)

    def _refuse_publish(self, ev: s.PublishRequest, reason: str, code: str = "NetStream.Publish.BadName") -> None:
        self.session.reject_publish(ev, reason, code)
        client_event(log, "publish-rejected", self.cid, self.ip, self.key or "", reason, logging.WARNING)
        self.close(f"publish rejected: {reason}")

    def _on_play(self, ev: s.PlayRequest) -> None:
        req = self._request(ev.name)
        self.key, self.param = req.key, req.param
        access = self.server.access
        reason = ""
        if self.pub_token is not None or self.viewer is not None:
            reason = "this connection already publishes or plays a stream"
        elif not req.key.app or not req.key.stream:
            reason = f"invalid stream name {ev.name!r}: want rtmp://host/app/stream"
        elif (bad := request_problem(req)) is not None:
            reason = bad
        elif not self.server.config.vhost(req.key.vhost).enabled:
            reason = f"vhost {req.key.vhost} is disabled"
        else:
            reason = access.security(req.key.vhost, "play", self.ip) or ""
        if reason:
            self._refuse_play(ev, req, reason)
            return
        fmt = rtmp_format(self.session.out_chunk_size, ev.stream_id)
        viewer = self.viewer = Viewer(self.cid, self.ip, "rtmp", fmt, viewer_transport(self.transport), self, req.param)
        viewer.limit = self.server.limits.max_write_buffer
        self.play_stream_id = ev.stream_id
        # Registered (it holds the stream) before the on_play hook is awaited (SRS #4397); media only after.
        self.server.hub.attach(req.key, viewer, stream_settings(self.server.config, req.key.vhost))
        self._register(req)
        if not access.urls(req.key.vhost, "on_play"):
            self._start_play(ev, req, viewer, None)
            return
        ctx = HookContext.from_request(self.cid, self.ip, req, self.page_url)

        async def gate() -> None:
            refused = await access.play(ctx)
            if refused is not None:
                self._refuse_play(ev, req, f"on_play refused: {refused}")
                return
            self._start_play(ev, req, viewer, ctx)

        self._open_gate(gate())

    def _refuse_play(self, ev: s.PlayRequest, req: StreamRequest, reason: str) -> None:
        self.session.reject_play(ev, reason)
        client_event(log, "play-rejected", self.cid, self.ip, req.key, reason, logging.WARNING)
        self.close(f"play rejected: {reason}")

    def _start_play(self, ev: s.PlayRequest, req: StreamRequest, viewer: Viewer, ctx: HookContext | None) -> None:
        self.session.accept_play(ev)
        self._flush()  # onStatus must reach the player before the first media bytes
        client_event(log, "play", self.cid, self.ip, req.key, param=req.masked_param())
        self.playing = ctx or HookContext.from_request(self.cid, self.ip, req, self.page_url)
        if self.write_paused:
            viewer.pause(time.monotonic())
        self.server.hub.admit(viewer)

    # ------------------------------------------------------------------------------------- viewer owner

    def publisher_left(self, stream: Stream) -> None:
        """Nothing is said during the grace period: FFmpeg ends playback at UnpublishNotify, and a publisher
        that returns within the grace period should go unnoticed."""


    def publisher_arrived(self, stream: Stream) -> None:
        if self.closed:
            return
        self.session.publish_notify(self.play_stream_id, stream.key.stream)
        self._flush()

    def close_viewer(self, reason: str) -> None:
        viewer = self.viewer
        if viewer is not None and viewer.stream is not None and not viewer.stream.live and not self.closed:
            self.session.unpublish_notify(self.play_stream_id, viewer.stream.key.stream)
        self.close(reason)

    # ----------------------------------------------------------------------------------------- timers

    def check_timeouts(self, now: float) -> None:
        lim = self.server.limits
        if not self.session.handshake_done:
            if now - self.created > lim.handshake_timeout:
                self.close(f"handshake not done after {lim.handshake_timeout:g}s", abort=True, level=logging.WARNING)
            return
        if self.stalled_since is not None and now - self.stalled_since > lim.idle_timeout:
            self.close(f"client stopped reading for {lim.idle_timeout:g}s", abort=True, level=logging.WARNING)
            return
        if self.pub_token is not None:
            vhost = self.server.config.vhost(self.pub_token.stream.key.vhost)
            ms = vhost.publish.normal_timeout if self.got_media else vhost.publish.firstpkt_timeout
            if now - self.last_recv > ms / 1000:
                self.close(f"publisher sent nothing for {ms}ms", abort=True, level=logging.WARNING)
        elif self.viewer is None and now - self.idle_since > lim.idle_timeout:
            self.close(f"idle for {lim.idle_timeout:g}s without publishing or playing", abort=True)


class RTMPServer:
    """Accepts RTMP connections on one or more addresses and owns them until they close."""

    def __init__(self, config: Config, hub: Hub, access: Access, *, budget: ConnectionBudget) -> None:
        self.config = config
        self.hub = hub
        self.access = access
        self.budget = budget  # shared with the HTTP listeners: max_connections counts them all
        self.connections: dict[str, RTMPConnection] = {}
        self._servers: list[asyncio.base_events.Server | TlsListener] = []
        self._tls: list[TlsEndpoint] = []  # the RTMPS listeners' handshakes
        self._sweeper: asyncio.Task[None] | None = None
        self._resumes: dict[int, list[RTMPConnection]] = {}  # merged reads, by point of MERGED_READ_GRID
        self._loop: asyncio.AbstractEventLoop | None = None
        self.apply_config(config)

    def apply_config(self, config: Config) -> None:
        self.config = config
        rl = config.rtmp_limits
        self.limits = Limits(
            max_message_size=rl.max_message_size,
            handshake_timeout=rl.handshake_timeout,
            idle_timeout=rl.idle_timeout,
            max_write_buffer=rl.max_write_buffer,
            chunk_size=config.chunk_size,
        )
        self.tcp_nodelay = config.vhost("__defaultVhost__").tcp_nodelay

    def resume_later(self, conn: RTMPConnection, delay: float) -> None:
        """Resume reading ``conn`` (paused by a merged read) after about ``delay`` seconds, on the grid."""
        loop = self._loop
        if loop is None:
            # Kept, not asked for on every read: in Python 3.11 get_running_loop() is a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        if delay < MERGED_READ_GRID:
            loop.call_later(delay, conn.merged_read_done)
            return
        point = round((loop.time() + delay) / MERGED_READ_GRID)
        batch = self._resumes.get(point)
        if batch is None:
            batch = self._resumes[point] = []
            loop.call_at(point * MERGED_READ_GRID, self._resume_batch, point)
        batch.append(conn)

    def _resume_batch(self, point: int) -> None:
        for conn in self._resumes.pop(point, ()):
            conn.merged_read_done()

    async def start(self, addresses: Sequence[tuple[str, int]], tls: TlsEndpoint | None = None,
                    reuse_port: bool = False) -> list[tuple[str, int]]:
        """Listen on ``addresses``: plain RTMP, or RTMPS with ``tls`` (called once for each, and once more for
        a worker's internal listener). ``reuse_port``: the workers of one host share the port (SO_REUSEPORT,
        the kernel spreads the connections)."""
        loop = self._loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        if tls is not None:
            self._tls.append(tls)
        for host, port in addresses:
            if tls is not None:
                server = await tls.listen(lambda: RTMPConnection(self), host or None, port, reuse_port)
            else:
                server = await loop.create_server(lambda: RTMPConnection(self), host or None, port, reuse_address=True,
                                                  reuse_port=reuse_port or None)
            self._servers.append(server)
            for sock in server.sockets:
                bound.append(sock.getsockname()[:2])
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="rtmp-sweeper")
        return bound

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for conn in tuple(self.connections.values()):
                conn.check_timeouts(now)

    def stop_listening(self) -> None:
        """No new connections (graceful quit); the connections there go on."""
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        for server in self._servers:
            server.close()
        for tls in self._tls:
            tls.close()
        for conn in tuple(self.connections.values()):
            conn.close("server shutting down")
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
