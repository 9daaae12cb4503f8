"""Composition root: builds the hub and the servers from a Config, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from livesrv import log as logsetup
from livesrv.access import Access, default_identity
from livesrv.clients.cluster import ClusterService
from livesrv.clients.edge import EdgeService
from livesrv.clients.forward import ForwardService
from livesrv.config import Config, listen_addresses, load_config
from livesrv.hub.clients import PUBLISHER, PULLER
from livesrv.hub.hub import Hub
from livesrv.hub.keys import parse_http_path, request_problem
from livesrv.hub.stream import Publisher, Stream
from livesrv.servers.api.host import HostView
from livesrv.servers.api.ids import SERVER_ID, SERVICE_ID
from livesrv.servers.api.service import ApiService
from livesrv.servers.audio import serve_audio
from livesrv.servers.dvr.service import DvrService
from livesrv.servers.flv import serve_flv
from livesrv.servers.hls.service import HlsService
from livesrv.servers.http import Handler, HTTPConnection, HTTPServer, Request, Response
from livesrv.servers.limits import ConnectionBudget, raise_open_file_limit
from livesrv.servers.rtc.service import RtcService
from livesrv.servers.rtmp import RTMPServer
from livesrv.servers.static import serve_file
from livesrv.servers.tls import TlsService
from livesrv.servers.ts import serve_ts
from livesrv.servers.web import WebPages

log = logging.getLogger("livesrv.app")

#: Seconds a stopping server gives the notifications in flight (on_close, on_stop, on_dvr of the last files).
SHUTDOWN_HOOKS_GRACE = 2.0
#: Seconds a stopping server gives the streams' drains (on_unpublish hooks, the last HLS segment, DVR files)
#: after its listeners and connections closed; what is still running then is cancelled.
SHUTDOWN_DRAIN_GRACE = 5.0
#: Where a worker's internal listeners are (the pulls and the API questions of the host's other workers).
WORKER_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker ``index`` of a master (``workers N``, livesrv/master.py), on the master's
    ``registry`` (``livesrv+unix://`` socket)."""

    index: int
    registry: str

    @property
    def node(self) -> str:
        return f"w{self.index}"  # (livesrv/master.py drops this node's claims when the process died)

    def apply(self, config: Config) -> Config:
        """The file's config as this worker runs it (again at each reload): a node of the master's registry,
        reached on loopback; the exporter on worker 0 only (a scrape spread over the workers would mix their
        counters)."""
        cluster = config.cluster.model_copy(update={"registry": self.registry, "node_id": self.node,
                                                    "advertise": WORKER_HOST})
        update: dict[str, object] = {"cluster": cluster}
        if self.index != 0:
            update["exporter"] = config.exporter.model_copy(update={"enabled": False})
        return config.model_copy(update=update)


class App:
    def __init__(self, config: Config, config_path: str | None = None, *, self_signed: str | None = None,
                 worker: WorkerRole | None = None) -> None:
        self.worker = worker
        if worker is not None:
            config = worker.apply(config)
        self.config = config
        self.config_path = config_path  # re-read by reload(); None: the embedded defaults (and environment)
        self.hub = Hub()
        current = self.current_config
        # Hooks report the same server/service ids as the API.
        self.access = Access(current, default_identity(config.server_id or SERVER_ID, SERVICE_ID))
        self.hub.drain_handlers.append(self._on_unpublish)
        # One budget for every listener: max_connections bounds the descriptors all clients hold together.
        self.budget = ConnectionBudget(config.max_connections)
        self.rtmp = RTMPServer(config, self.hub, self.access, budget=self.budget)
        self.http = self._http_server(self._handle_http, "http", config.rtmp_limits.max_write_buffer)
        self.api = self._http_server(self._handle_api, "api")
        # RTMPS, HTTPS, the API over HTTPS: certificates loaded now (TlsError: the server cannot start).
        self.tls = TlsService(config, self.budget, self_signed)
        self.hls = HlsService(self.hub, current, self.access)
        self.edge = EdgeService(self.hub, current)
        self.forward = ForwardService(self.hub, current, self.access, edge_url=self.edge.origin_url)
        self.cluster = ClusterService(self.hub, current, self.access, self.edge)
        self.dvr = DvrService(self.hub, current, self.access)
        self.rtc = RtcService(self.hub, current, self.access)  # WHIP/WHEP, on the API's port (as SRS)
        host = HostView(self._peers) if worker is not None else None
        self.api_service = ApiService(self.hub, current, self.reload, lambda: self.budget.open, self.hls.info,
                                      self._http_server, cluster_info=self.cluster.info, host=host,
                                      node=(lambda: self.cluster.node) if worker is not None else None)
        # A worker's internal API (its own figures, for the peer that answers for the host: servers/api/host.py).
        self.api_internal = self._http_server(self._handle_api_internal, "api-internal")
        if worker is not None:
            self.edge.mirror = True  # pulls from the other workers feed viewers only (the owner writes files)
            self.hls.shared = True  # HLS files another worker writes are served from disk
            self.cluster.claimed_elsewhere.append(self.hls.forget)
        self.addresses: dict[str, list[tuple[str, int]]] = {}
        self.web = WebPages(self.hub, current, lambda: self.addresses)  # the pages on the HTTP server
        self._housekeeper: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, list[tuple[str, int]]]:
        cfg = self.config
        raise_open_file_limit(cfg.max_connections, cfg.hooks_max_concurrent)
        await self.hls.start()
        await self.forward.start()
        await self.dvr.start()
        await self.edge.start()
        await self.rtc.start()
        shared = self.worker is not None  # (workers: the public ports are shared, SO_REUSEPORT)
        self.addresses["rtmp"] = await self.rtmp.start(listen_addresses(cfg.listen), reuse_port=shared)
        if cfg.http_server.enabled:
            self.addresses["http"] = await self.http.start(listen_addresses(cfg.http_server.listen), reuse_port=shared)
        if cfg.http_api.enabled:
            self.addresses["api"] = await self.api.start(listen_addresses(cfg.http_api.listen), reuse_port=shared)
        self.addresses.update(await self.tls.start({"rtmps": self.rtmp, "https": self.http, "api_https": self.api},
                                                   reuse_port=shared))
        self.addresses.update(await self.api_service.start())
        advertised = self.addresses
        if self.worker is not None:
            # The other workers pull from THIS worker (not from the shared port, where the kernel picks one) and
            # ask its API for its own figures: internal listeners on loopback, advertised in its record.
            self.addresses["rtmp_internal"] = await self.rtmp.start([(WORKER_HOST, 0)])
            advertised = {**self.addresses, "rtmp": self.addresses["rtmp_internal"]}
            if cfg.http_api.enabled:
                self.addresses["api_internal"] = await self.api_internal.start([(WORKER_HOST, 0)])
                advertised["api"] = self.addresses["api_internal"]
        await self.cluster.start(advertised)  # (advertises the addresses just bound)
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
        await self.api_internal.close()
        await self.rtc.stop()  # (WebRTC sessions: publishers release their streams, viewers detach)
        self.tls.close()
        await self.edge.stop()  # (pulls release their streams: their drains run below)
        await self.cluster.stop()  # (releases this node's claims: the streams are free elsewhere at once)
        await self.hub.close(grace=SHUTDOWN_DRAIN_GRACE)  # on_unpublish, last segments and files: bounded
        await self.forward.stop()
        await self.dvr.stop()  # (before the hooks' client closes: on_dvr of the last files may still go out)
        await self.access.aclose(grace=min(SHUTDOWN_HOOKS_GRACE, self.config.hooks_timeout))
        await self.hls.stop()
        self.budget.close()
        log.info("event=stopped")

    async def graceful_stop(self, force: asyncio.Event) -> None:
        """SRS's graceful quit: go on accepting for ``grace_start_wait`` (a load balancer stops sending new
        clients meanwhile), close every listener, wait until the publishers and viewers connected have left
        (as SRS, for as long as they stay: ``force`` set, by a second signal, cuts it short), wait
        ``grace_final_wait``, then :meth:`stop` (which finishes HLS and DVR files)."""
        cfg = self.config
        log.info("event=graceful-quit step=start-wait ms=%d", cfg.grace_start_wait)
        if await _wait_or(force, cfg.grace_start_wait / 1000):
            for server in (self.rtmp, *self.http_servers()):
                server.stop_listening()
            log.info("event=graceful-quit step=listeners-closed connections=%d", self.connections())
            last_log = asyncio.get_running_loop().time()
            while self.connections() and not force.is_set():
                await _wait_or(force, 0.1)
                now = asyncio.get_running_loop().time()
                if now - last_log >= 5:
                    last_log = now
                    log.info("event=graceful-quit step=waiting connections=%d", self.connections())
            if not force.is_set():
                log.info("event=graceful-quit step=final-wait ms=%d", cfg.grace_final_wait)
                await _wait_or(force, cfg.grace_final_wait / 1000)
        if force.is_set():
            log.info("event=graceful-quit step=forced connections=%d", self.connections())
        await self.stop()

    def connections(self) -> int:
        """Publishers' and viewers' connections open (RTMP, HTTP server and WebRTC sessions; not the API's)."""
        return len(self.rtmp.connections) + len(self.http.connections) + len(self.rtc.sessions)

    def current_config(self) -> Config:
        """The configuration now (services read it per event, so a reload applies to the next one)."""
        return self.config

    def _http_server(self, handler: Handler, name: str, max_write_buffer: int = 4 * 1024 * 1024) -> HTTPServer:
        """An HTTP listener under the shared connection budget and ``http_limits``."""
        return HTTPServer(handler, name, max_write_buffer, budget=self.budget, limits=self.config.http_limits)

    async def _on_unpublish(self, stream: Stream, generation: int, publisher: Publisher) -> None:
        """on_unpublish, awaited while the stream drains (a new publisher is not kept waiting by it). Only for
        clients' publishes: an edge's pull had no on_publish either (as SRS)."""
        if getattr(publisher, "kind", PUBLISHER) != PULLER:  # (an RTMP connection's kind changes once it left)
            await self.access.unpublish(publisher.context)

    def http_servers(self) -> list[HTTPServer]:
        """Every HTTP listener (server, API, exporter): all are subject to ``http_limits``."""
        servers = [self.http, self.api, self.api_internal]
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
        if path.endswith((".mp3", ".aac")):
            resp = await serve_audio(self.config, self.hub, self.access, req, conn)  # a live audio-only stream
            if resp is not NotImplemented:
                return resp
        if path.endswith((".m3u8", ".ts")):
            if path.endswith(".m3u8") and self.worker is None:  # (workers: the owner writes it, on this disk)
                await self._edge_playlist(req)
            resp = await self.hls.handle(req, conn)  # a file HLS wrote
            if resp is NotImplemented and path.endswith(".ts"):
                resp = await serve_ts(self.config, self.hub, self.access, req, conn)  # a live HTTP-TS URL
            if resp is not NotImplemented:
                return resp
        resp = await serve_file(Path(self.config.http_server.dir), req)
        return await self.web.handle(req) if resp.status == 404 else resp  # livesrv's pages, unless a file

    async def _edge_playlist(self, req: Request) -> None:
        """On an edge, a playlist of a stream not pulled yet starts the pull and waits (up to the vhost's
        ``wait_timeout``) for its first segment, instead of a 404 that players take as final."""
        if req.method != "GET":
            return
        found = parse_http_path(req.headers.get("host"), req.target, ".m3u8", self.config.vhosts.keys())
        if found is None or request_problem(found) is not None:
            return
        key = found.key
        if not self.edge.is_edge(key.vhost) or self.hls.playlist_ready(key):
            return
        self.edge.want_hls(key)
        await self.hls.wait_playlist(key, self.config.vhost(key.vhost).play.wait_timeout)

    async def _handle_api(self, req: Request, conn: HTTPConnection) -> Response | None:
        if self.rtc.handles(req):
            return await self.rtc.handle(req, conn)
        return await self.api_service.handle(req, conn)

    async def _handle_api_internal(self, req: Request, conn: HTTPConnection) -> Response | None:
        """(workers) A peer worker asks for this worker's own figures, or for one of its streams or clients."""
        return await self.api_service.handle(req, conn, local=True)

    async def _peers(self) -> list[tuple[str, str]]:
        """(workers) The other workers' internal API addresses, from the registry's node records."""
        registry = self.cluster.registry
        if registry is None:
            return []
        nodes = await registry.nodes()
        return sorted((node, rec["api"]) for node, rec in nodes.items()
                      if node != self.cluster.node and isinstance(rec.get("api"), str))

    def reload(self, config: Config | None = None) -> list[str]:
        """Apply a new configuration without dropping anyone (SIGHUP, ``GET /api/v1/raw?rpc=reload``).

        ``None`` re-reads the file the server started from (a ConfigError leaves everything as it was).
        Streams already there keep the settings they were created with; new streams and connections, and
        whatever is read per event (timeouts, hooks, security, API auth), use the new config at once. Returns
        the changes that need a restart (listen addresses), each also logged as a warning.
        """
        if config is None:
            config = load_config(self.config_path).config
        if self.worker is not None:
            config = self.worker.apply(config)
        old, self.config = self.config, config
        self.rtmp.apply_config(config)
        self.tls.reload(config)  # certificates re-read: new connections get them, open ones keep theirs
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
                ("rtc_server", _rtc_server(old.rtc_server), _rtc_server(config.rtc_server)),
                ("rtmps", _server(old.rtmps), _server(config.rtmps)),
                ("http_server.https", _server(old.http_server.https), _server(config.http_server.https)),
                ("http_api.https", _server(old.http_api.https), _server(config.http_api.https)),
                ("workers", str(old.workers), str(config.workers)),
            )
            if before != after
        ]
        log.info("event=reload file=%s vhosts=%d restart_needed=%d", self.config_path or "<defaults>",
                 len(config.vhosts), len(restart))
        for change in restart:
            log.warning("event=reload-needs-restart change=%r", change)
        return restart


async def _wait_or(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``event`` is set first; True when the time ran out."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        return True
    return False


def _addrs(listen: object) -> str:
    return ",".join(f"{h}:{p}" for h, p in listen_addresses(listen))  # type: ignore[arg-type]


def _server(block: object) -> str:
    return _addrs(block.listen) if block.enabled else "off"  # type: ignore[attr-defined]


def _rtc_server(block: object) -> str:
    """What WebRTC's addresses were set up with at start (ICE candidates, consent timing)."""
    if not block.enabled:  # type: ignore[attr-defined]
        return "off"
    return f"candidate {block.candidate} ip_family {block.ip_family}"  # type: ignore[attr-defined]
