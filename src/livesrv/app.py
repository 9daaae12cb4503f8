"""Composition root: builds the hub and the servers from a Config, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from livesrv import log as logsetup
from livesrv.access import Access, default_identity
from livesrv.config import Config, listen_addresses, load_config
from livesrv.hooks import payloads
from livesrv.hooks.payloads import HookContext
from livesrv.hub.hub import Hub
from livesrv.hub.stream import Publisher, Stream
from livesrv.servers.api import ApiService
from livesrv.servers.flv import serve_flv
from livesrv.remux.hls import SegmentInfo
from livesrv.servers.hls import HlsService, HlsSession, HlsState
from livesrv.servers.http import HTTPConnection, HTTPServer, Request, Response
from livesrv.servers.limits import ConnectionBudget, raise_open_file_limit
from livesrv.servers.rtmp import RTMPServer
from livesrv.servers.static import serve_file

log = logging.getLogger("livesrv.app")


class App:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path  # re-read by reload(); None: the embedded defaults (and environment)
        self.hub = Hub()
        self.api_service = ApiService(self)
        # Hooks report the same server/service ids as the API.
        self.access = Access(lambda: self.config,
                             default_identity(self.api_service.server_id, self.api_service.service_id))
        self.hub.drain_handlers.append(self._on_unpublish)
        # One budget for every listener: max_connections bounds the descriptors all clients hold together.
        self.budget = ConnectionBudget(config.max_connections)
        self.rtmp = RTMPServer(config, self.hub, self.access, budget=self.budget)
        self.http = HTTPServer(self._handle_http, "http", config.rtmp_limits.max_write_buffer,
                               budget=self.budget, limits=config.http_limits)
        self.api = HTTPServer(self._handle_api, "api", budget=self.budget, limits=config.http_limits)
        self.hls = HlsService(self)
        self.hls.session_gate = self._hls_gate
        self.hls.session_ended = self._hls_ended
        self.hls.segment_written = self._hls_segment
        self.addresses: dict[str, list[tuple[str, int]]] = {}
        self._housekeeper: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, list[tuple[str, int]]]:
        cfg = self.config
        raise_open_file_limit(cfg.max_connections, cfg.hooks_max_concurrent)
        await self.hls.start()
        self.addresses["rtmp"] = await self.rtmp.start(listen_addresses(cfg.listen))
        if cfg.http_server.enabled:
            self.addresses["http"] = await self.http.start(listen_addresses(cfg.http_server.listen))
        if cfg.http_api.enabled:
            self.addresses["api"] = await self.api.start(listen_addresses(cfg.http_api.listen))
        self.addresses.update(await self.api_service.start())
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="hub-housekeeping")
        log.info(
            "event=ready %s",
            " ".join(f"{name}={','.join(f'{h}:{p}' for h, p in addrs)}" for name, addrs in self.addresses.items()),
        )
        return self.addresses

    async def _housekeeping(self) -> None:
        """One task for all streams: viewers past their wait/grace period or stalled are closed."""
        while True:
            await asyncio.sleep(0.25)
            try:
                self.hub.sweep()
            except Exception:  # a bug here must not stop housekeeping for every other stream
                log.exception("event=housekeeping-error")

    async def stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            await asyncio.gather(self._housekeeper, return_exceptions=True)
            self._housekeeper = None
        await self.api_service.stop()
        await self.rtmp.close()
        await self.http.close()
        await self.api.close()
        await self.hub.close()
        await self.access.aclose()
        await self.hls.stop()
        self.budget.close()
        log.info("event=stopped")

    async def _on_unpublish(self, stream: Stream, generation: int, publisher: Publisher) -> None:
        """on_unpublish, awaited while the stream drains (a new publisher is not kept waiting by it)."""
        ctx = getattr(publisher, "publish_ctx", None)
        if ctx is not None:
            await self.access.unpublish(ctx)

    @staticmethod
    def _hls_context(session: HlsSession, param: str = "", page_url: str = "") -> HookContext:
        key = session.key
        return HookContext(session.id, session.ip, key.vhost, key.app, key.stream, param, "", page_url)

    async def _hls_gate(self, session: HlsSession, req: Request) -> bool:
        """A new HLS viewer: security rules, then on_play (HLS viewers hold no stream: nothing to register)."""
        if self.access.security(session.key.vhost, "play", session.ip) is not None:
            return False
        return await self.access.play(self._hls_context(session, req.raw_query, req.headers.get("referer", ""))) is None

    def _hls_ended(self, session: HlsSession) -> None:
        self.access.stop(self._hls_context(session))

    def _hls_segment(self, state: HlsState, info: SegmentInfo) -> None:
        """on_hls, with the publisher's context, once a segment is on disk."""
        stream = state.live_for[0] if state.live_for else None
        ctx = getattr(stream.publisher, "publish_ctx", None) if stream is not None else None
        if ctx is None:
            return
        m3u8 = os.path.join(state.root, state.playlist_name)
        self.access.hls(ctx.vhost, lambda ident: payloads.on_hls(
            ident, ctx, duration=info.duration, file=os.path.join(state.root, info.name), url=info.uri,
            m3u8=m3u8, m3u8_url="/" + state.playlist_name, seq_no=info.sequence,
        ))

    def http_servers(self) -> list[HTTPServer]:
        """Every HTTP listener (server, API, exporter): all are subject to ``http_limits``."""
        servers = [self.http, self.api]
        if self.api_service.exporter is not None:
            servers.append(self.api_service.exporter)
        return servers

    def port(self, name: str) -> int:
        return self.addresses[name][0][1]

    async def _handle_http(self, req: Request, conn: HTTPConnection) -> Response | None:
        # Routes are fixed; a live URL is looked up in the hub when the request arrives (never "mounted").
        path = req.path
        if path.endswith(".flv"):
            return await serve_flv(self.config, self.hub, self.access, req, conn)
        if path.endswith((".m3u8", ".ts")):
            resp = await self.hls.handle(req, conn)
            if resp is not NotImplemented:
                return resp
        return await serve_file(Path(self.config.http_server.dir), req)

    async def _handle_api(self, req: Request, conn: HTTPConnection) -> Response | None:
        return await self.api_service.handle(req, conn)

    def reload(self, config: Config | None = None) -> list[str]:
        """Apply a new configuration without dropping anyone (SIGHUP, ``GET /api/v1/raw?rpc=reload``).

        ``None`` re-reads the file the server started from (a ConfigError leaves everything as it was).
        Streams already there keep the settings they were created with; new streams and connections, and
        whatever is read per event (timeouts, hooks, security, API auth), use the new config at once. Returns
        the changes that need a restart (listen addresses), each also logged as a warning.
        """
        if config is None:
            config = load_config(self.config_path).config
        old, self.config = self.config, config
        self.rtmp.apply_config(config)
        self.http.max_write_buffer = config.rtmp_limits.max_write_buffer
        self.budget.limit = config.max_connections  # connections already open over a lower limit stay
        for server in self.http_servers():
            server.limits = config.http_limits
        if (old.max_connections, old.hooks_max_concurrent) != (config.max_connections, config.hooks_max_concurrent):
            raise_open_file_limit(config.max_connections, config.hooks_max_concurrent)
        logs = (config.srs_log_level, config.srs_log_tank, config.srs_log_file)
        if (old.srs_log_level, old.srs_log_tank, old.srs_log_file) != logs:
            logsetup.setup(*logs)
        restart = [
            f"{name} {before} -> {after}"
            for name, before, after in (
                ("listen", _addrs(old.listen), _addrs(config.listen)),
                ("http_server", _server(old.http_server), _server(config.http_server)),
                ("http_api", _server(old.http_api), _server(config.http_api)),
                ("exporter", _server(old.exporter), _server(config.exporter)),
            )
            if before != after
        ]
        log.info("event=reload file=%s vhosts=%d restart_needed=%d", self.config_path or "<defaults>",
                 len(config.vhosts), len(restart))
        for change in restart:
            log.warning("event=reload-needs-restart change=%r", change)
        return restart


def _addrs(listen: object) -> str:
    return ",".join(f"{h}:{p}" for h, p in listen_addresses(listen))  # type: ignore[arg-type]


def _server(block: object) -> str:
    return _addrs(block.listen) if block.enabled else "off"  # type: ignore[attr-defined]
