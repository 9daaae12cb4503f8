"""RTMP over TCP: a thin asyncio adapter around the sans-IO :class:`ServerSession`.

Bytes from the socket go into the session; its events are turned into hub calls; the session's replies and
the hub's shared media bytes go back out. A ``ProtocolError`` closes this one connection with one log line.
Timeouts (handshake, idle, publisher silence, a viewer that stopped reading) are checked by one sweeper task
for all connections rather than a timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from livesrv import __version__
from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp import session as s
from livesrv.config import Config
from livesrv.hub.hub import Hub, Stream, StreamBusy
from livesrv.hub.keys import StreamKey, parse_rtmp_request
from livesrv.log import client_event
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket

log = logging.getLogger("livesrv.rtmp")

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_client_id() -> str:
    """An 8-character id like SRS's, unique enough to name a client in logs and the API."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


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
        self.closed = False
        self.key: StreamKey | None = None
        self.param = ""
        # publisher state
        self.pub_stream: Stream | None = None
        self.pub_generation = 0
        self.pub_stream_id = 0
        self.got_media = False
        # player state
        self.play_stream: Stream | None = None
        self.play_stream_id = 0
        self.play_paused = False
        self.dropping = False
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
        self._flush()

    def pause_writing(self) -> None:
        self.stalled_since = time.monotonic()

    def resume_writing(self) -> None:
        self.stalled_since = None

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
        hub = self.server.hub
        if self.pub_stream is not None:
            stream, self.pub_stream = self.pub_stream, None
            hub.release_publish(stream, self.cid, self.pub_generation)
        if self.play_stream is not None:
            stream, self.play_stream = self.play_stream, None
            hub.unsubscribe(stream, self)

    # ----------------------------------------------------------------------------------------- events

    def _handle(self, ev: s.Event) -> None:
        if isinstance(ev, s.MediaReceived):
            stream = self.pub_stream
            if stream is not None:
                msg = ev.message
                self.got_media = True
                stream.feed(self.cid, self.pub_generation, MediaPacket.from_payload(msg.type_id, msg.timestamp, msg.payload))
        elif isinstance(ev, s.MetadataReceived):
            if self.pub_stream is not None:
                # Always at time 0: FFmpeg reads onMetaData stamped later as a subtitle stream.
                pkt = MediaPacket(DATA, 0, ev.payload)
                self.pub_stream.set_metadata(self.cid, self.pub_generation, ev.metadata, pkt)
        elif isinstance(ev, s.ConnectRequest):
            self._on_connect(ev)
        elif isinstance(ev, s.PublishRequest):
            self._on_publish(ev)
        elif isinstance(ev, s.PlayRequest):
            self._on_play(ev)
        elif isinstance(ev, s.UnpublishRequest):
            if self.pub_stream is not None and ev.stream_id == self.pub_stream_id:
                stream, self.pub_stream = self.pub_stream, None
                self.server.hub.release_publish(stream, self.cid, self.pub_generation)
                client_event(log, "unpublish", self.cid, self.ip, self.key or "", ev.reason)
        elif isinstance(ev, s.StopPlayRequest):
            if self.play_stream is not None and ev.stream_id == self.play_stream_id:
                stream, self.play_stream = self.play_stream, None
                self.server.hub.unsubscribe(stream, self)
                client_event(log, "stop", self.cid, self.ip, self.key or "", ev.reason)
        elif isinstance(ev, s.PauseRequest):
            self.play_paused = ev.paused
            # Resuming starts at the next keyframe: what was skipped while paused is gone, as in a live stream.
            self.dropping = ev.paused
        elif isinstance(ev, s.HandshakeDone):
            client_event(log, "handshake", self.cid, self.ip, level=logging.DEBUG, complex=ev.complex)
        elif isinstance(ev, s.UnknownCommand):
            client_event(log, "command", self.cid, self.ip, reason=f"unknown command {ev.name!r}", level=logging.DEBUG)

    def _on_connect(self, ev: s.ConnectRequest) -> None:
        client_event(log, "connect", self.cid, self.ip, tcUrl=ev.tc_url, app=ev.app.split("?", 1)[0])
        self.session.accept_connect(ev)

    def _request(self, name: str):  # -> StreamRequest
        return parse_rtmp_request(self.session.tc_url, self.session.app, name, self.server.config.vhosts.keys())

    def _on_publish(self, ev: s.PublishRequest) -> None:
        req = self._request(ev.name)
        self.key, self.param = req.key, req.param
        if self.pub_stream is not None or self.play_stream is not None:
            self._refuse_publish(ev, "this connection already publishes or plays a stream")
            return
        if not req.key.app or not req.key.stream:
            self._refuse_publish(ev, f"invalid stream name {ev.name!r}: want rtmp://host/app/stream")
            return
        vhost = self.server.config.vhost(req.key.vhost)
        if not vhost.enabled:
            self._refuse_publish(ev, f"vhost {req.key.vhost} is disabled")
            return
        try:
            stream, gen = self.server.hub.acquire_publish(
                req.key, self.cid, req.param,
                gop_cache=vhost.play.gop_cache, gop_max_frames=vhost.play.gop_cache_max_frames,
            )
        except StreamBusy as exc:
            self._refuse_publish(ev, f"Stream already exists or busy: {exc}", "NetStream.Publish.BadName")
            return
        self.pub_stream, self.pub_generation, self.pub_stream_id = stream, gen, ev.stream_id
        self.session.accept_publish(ev)
        client_event(log, "publish", self.cid, self.ip, req.key, param=req.masked_param(), type=ev.publish_type)

    def _refuse_publish(self, ev: s.PublishRequest, reason: str, code: str = "NetStream.Publish.BadName") -> None:
        self.session.reject_publish(ev, reason, code)
        client_event(log, "publish-rejected", self.cid, self.ip, self.key or "", reason, logging.WARNING)
        self.close(f"publish rejected: {reason}")

    def _on_play(self, ev: s.PlayRequest) -> None:
        req = self._request(ev.name)
        self.key, self.param = req.key, req.param
        reason = ""
        if self.pub_stream is not None or self.play_stream is not None:
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
        vhost = self.server.config.vhost(req.key.vhost)
        self.session.accept_play(ev)
        self._flush()  # onStatus must reach the player before the first media bytes
        self.play_stream_id = ev.stream_id
        client_event(log, "play", self.cid, self.ip, req.key, param=req.masked_param())
        self.play_stream = self.server.hub.subscribe(
            req.key, self, gop_cache=vhost.play.gop_cache, gop_max_frames=vhost.play.gop_cache_max_frames
        )

    # ------------------------------------------------------------------------------------- subscriber

    def send_packets(self, packets: Sequence[MediaPacket]) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        chunk_size = self.session.out_chunk_size
        sid = self.play_stream_id
        over = transport.get_write_buffer_size() > self.server.limits.max_write_buffer
        for pkt in packets:
            if self.dropping or over:
                # Skip to the next keyframe: a decoder never sees a broken GOP, and memory stays bounded.
                if pkt.kind == VIDEO and pkt.keyframe and not over and not self.play_paused:
                    self.dropping = False
                elif pkt.kind == DATA or pkt.sequence_header:
                    pass  # headers and metadata always go through: the next GOP needs them
                else:
                    self.dropping = True
                    continue
            data = pkt.rtmp_bytes(chunk_size, sid)
            self.send_bytes += len(data)
            transport.write(data)

    def publisher_left(self, stream: Stream) -> None:
        if self.closed:
            return
        self.session.unpublish_notify(self.play_stream_id, stream.key.stream)
        self._flush()

    def publisher_arrived(self, stream: Stream) -> None:
        if self.closed:
            return
        self.session.publish_notify(self.play_stream_id, stream.key.stream)
        self._flush()

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
        if self.pub_stream is not None:
            vhost = self.server.config.vhost(self.pub_stream.key.vhost)
            ms = vhost.publish.normal_timeout if self.got_media else vhost.publish.firstpkt_timeout
            if now - self.last_recv > ms / 1000:
                self.close(f"publisher sent nothing for {ms}ms", abort=True, level=logging.WARNING)
        elif self.play_stream is None and now - self.last_recv > lim.idle_timeout:
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
