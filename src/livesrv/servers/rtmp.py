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
from collections.abc import Sequence
from dataclasses import dataclass

from livesrv import __version__
from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp import session as s
from livesrv.config import Config
from livesrv.hub.hub import Hub, PublishToken, StreamBusy
from livesrv.hub.keys import StreamKey, StreamRequest, parse_rtmp_request
from livesrv.hub.stream import Stream
from livesrv.hub.viewer import NEED_KEYFRAME, Viewer
from livesrv.log import client_event
from livesrv.media.formats import rtmp_format
from livesrv.media.packet import DATA, MediaPacket
from livesrv.servers.common import new_client_id, stream_settings

log = logging.getLogger("livesrv.rtmp")


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
        # player state
        self.viewer: Viewer | None = None
        self.play_stream_id = 0
        self.play_paused = False
        self.write_paused = False
        self.stalled_since: float | None = None
        self.recv_bytes = 0
        self.send_bytes = 0

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
        if len(self.server.connections) >= self.server.max_connections:
            client_event(log, "reject", self.cid, self.ip, reason="max_connections reached", level=logging.WARNING)
            self.closed = True
            transport.abort()
            return
        self.server.connections[self.cid] = self
        client_event(log, "connect", self.cid, self.ip, level=logging.DEBUG)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_recv = time.monotonic()
        self.recv_bytes += len(data)
        try:
            events = self.session.receive_data(data)
            for ev in events:
                self._handle(ev)
                if self.closed:
                    return
        except ProtocolError as exc:
            self.close(f"protocol error: {exc}", abort=True, level=logging.WARNING)
            return
        except Exception as exc:  # a bug must cost this one connection, never the server
            log.exception("event=internal-error client=%s ip=%s", self.cid, self.ip)
            self.close(f"internal error: {exc!r}", abort=True, level=logging.ERROR)
            return
        self._flush()

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
            self.send_bytes += len(out)
            self.transport.write(out)

    def close(self, reason: str, *, abort: bool = False, level: int = logging.INFO) -> None:
        """Release everything this connection holds, exactly once, then close the socket."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        self._release()
        self.server.connections.pop(self.cid, None)
        client_event(
            log, "close", self.cid, self.ip, self.key or "", reason, level,
            recv_bytes=self.recv_bytes, send_bytes=self.send_bytes,
        )
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _release(self) -> None:
        if self.pub_token is not None:
            token, self.pub_token = self.pub_token, None
            token.release("publisher closed")
        if self.viewer is not None:
            self._stop_viewer()

    def _stop_viewer(self) -> None:
        viewer, self.viewer = self.viewer, None
        assert viewer is not None
        self.send_bytes += viewer.send_bytes  # media went out through the fan-out, not the session
        self.server.hub.detach(viewer)
        self.idle_since = time.monotonic()

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
        client_event(log, "connect", self.cid, self.ip, tcUrl=ev.tc_url, app=ev.app.split("?", 1)[0])
        self.session.accept_connect(ev)

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
        config = self.server.config
        if not config.vhost(req.key.vhost).enabled:
            self._refuse_publish(ev, f"vhost {req.key.vhost} is disabled")
            return
        try:
            token = self.server.hub.begin_publish(req.key, self, stream_settings(config, req.key.vhost), req.param)
        except StreamBusy as exc:
            self._refuse_publish(ev, f"Stream already exists or busy: {exc}", "NetStream.Publish.BadName")
            return
        self.pub_token, self.pub_stream_id = token, ev.stream_id
        if not token.ready():  # cannot fail without hooks; kept so that a stale claim is never served
            self._refuse_publish(ev, "publish claim went stale")
            return
        self.session.accept_publish(ev)
        client_event(log, "publish", self.cid, self.ip, req.key, param=req.masked_param(), type=ev.publish_type)

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
        reason = ""
        if self.pub_token is not None or self.viewer is not None:
            reason = "this connection already publishes or plays a stream"
        elif not req.key.app or not req.key.stream:
            reason = f"invalid stream name {ev.name!r}: want rtmp://host/app/stream"
        elif not self.server.config.vhost(req.key.vhost).enabled:
            reason = f"vhost {req.key.vhost} is disabled"
        if reason:
            self.session.reject_play(ev, reason)
            client_event(log, "play-rejected", self.cid, self.ip, req.key, reason, logging.WARNING)
            self.close(f"play rejected: {reason}")
            return
        self.session.accept_play(ev)
        self._flush()  # onStatus must reach the player before the first media bytes
        self.play_stream_id = ev.stream_id
        client_event(log, "play", self.cid, self.ip, req.key, param=req.masked_param())
        fmt = rtmp_format(self.session.out_chunk_size, ev.stream_id)
        viewer = self.viewer = Viewer(self.cid, self.ip, "rtmp", fmt, self.transport, self, req.param)
        viewer.limit = self.server.limits.max_write_buffer
        hub = self.server.hub
        hub.attach(req.key, viewer, stream_settings(self.server.config, req.key.vhost))
        if self.write_paused:
            viewer.pause(time.monotonic())
        hub.admit(viewer)

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

    def __init__(self, config: Config, hub: Hub) -> None:
        self.config = config
        self.hub = hub
        self.connections: dict[str, RTMPConnection] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
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
        self.max_connections = config.max_connections
        self.tcp_nodelay = config.vhost("__defaultVhost__").tcp_nodelay

    async def start(self, addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        for host, port in addresses:
            server = await loop.create_server(lambda: RTMPConnection(self), host or None, port, reuse_address=True)
            self._servers.append(server)
            for sock in server.sockets:
                bound.append(sock.getsockname()[:2])
        self._sweeper = asyncio.create_task(self._sweep(), name="rtmp-sweeper")
        return bound

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for conn in tuple(self.connections.values()):
                conn.check_timeouts(now)

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
        for conn in tuple(self.connections.values()):
            conn.close("server shutting down")
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
