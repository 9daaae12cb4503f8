"""The HTTP API on ``http_api.listen``, in SRS's shapes, so that SRS dashboards, scripts and the SRS console work.

Every answer carries ``code`` (0 = ok), ``server``, ``service`` and ``pid``. Errors are JSON with a non-zero
``code`` (SRS's error numbers where SRS has one) and ``error``, with the HTTP status that says what went wrong
(404 unknown id, 400 bad parameter, 405 wrong method) — except for JSONP (``?callback=``), which is always
200 because a browser's ``<script>`` tag cannot read an error status (SRS answers JSONP the same way).

Safe by default: with ``http_api { auth ... }`` off, what changes state (any method but GET, HEAD and OPTIONS,
JSONP's ``method=DELETE`` included, and the raw API) and the running config (``/api/v1/config``) answer only
loopback clients (:func:`is_loopback`); everyone else gets 403. Reading stays open, as in SRS.

This module routes and wraps; the shapes are in :mod:`.views`, the rates in :mod:`.sampling`, the machine's
figures in :mod:`.system`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from typing import Any

from livesrv import __version__
from livesrv.config import Config, ConfigError, listen_addresses
from livesrv.hub.clients import Client
from livesrv.hub.hub import Hub
from livesrv.hub.keys import mask_url
from livesrv.hub.stream import Stream
from livesrv.log import event
from livesrv.servers.api.host import HOST_PATHS, OWN_QUERY, HostView, merge_streams, merge_summaries, remap_vhost
from livesrv.servers.api.ids import SERVER_ID, SERVICE_ID
from livesrv.servers.api.sampling import SAMPLE_INTERVAL, Sampler
from livesrv.servers.api.system import SystemFigures
from livesrv.servers.api.views import StreamDetails, Views
from livesrv.servers.http import Handler, HTTPConnection, HTTPServer, Request, Response
from livesrv.servers.metrics import Metrics

log = logging.getLogger("livesrv.api")

# SRS error codes (srs_kernel_error.hpp).
ERROR_SYSTEM_CONFIG_INVALID = 1023
ERROR_SYSTEM_CONFIG_RAW = 1060
ERROR_SYSTEM_CONFIG_RAW_DISABLED = 1061
ERROR_SYSTEM_CONFIG_RAW_NOT_ALLOWED = 1062
ERROR_RTMP_VHOST_NOT_FOUND = 2014
ERROR_RTMP_STREAM_NOT_FOUND = 2048
ERROR_RTMP_CLIENT_NOT_FOUND = 2049
ERROR_HTTP_HANDLER_MATCH_URL = 3010
# Not SRS's: the HTTP status as the code.
ERROR_BAD_PARAMETER = 400
ERROR_UNAUTHORIZED = 401
ERROR_FORBIDDEN = 403
ERROR_METHOD_NOT_ALLOWED = 405

#: Methods that only read. Anything else changes state (kicks, DELETE): see :meth:`ApiService.admin_only`.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Answered, with auth off, only to loopback clients even though they are GETs: the raw API (reload) and
#: the running config (hook and forward URLs, paths).
ADMIN_PATHS = ("/api/v1/raw", "/api/v1/config")
LOOPBACK_ONLY = ("{what} is answered only to clients on this machine (127.0.0.1, ::1) while the API has no "
                 "auth; to allow it from {ip}, turn on http_api {{ auth {{ enabled on; username ...; "
                 "password ...; }} }} and send the credentials (Basic auth)")

#: Default ``count`` of the stream and client lists (SRS: 10; more is more useful and still small).
DEFAULT_COUNT = 100

CORS_HEADERS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, HEAD, PUT, DELETE, OPTIONS"),
    # "*" does not cover Authorization in a preflight: name it, or Basic auth from a page cannot work.
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, Origin, Accept, X-Requested-With"),
    ("Access-Control-Expose-Headers", "Server, Content-Type, Content-Length"),
]
_JS_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,127}")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []


# ------------------------------------------------------------------------------------------- service


class ApiService:
    """Answers API requests. It reads the hub (streams, the client registry), the config and the sampler; the
    few actions it takes go through the hub (end a stream, kick a client) or the ``reload`` it was given."""

    def __init__(
        self,
        hub: Hub,
        config: Callable[[], Config],
        reload: Callable[[], list[str]],
        connections: Callable[[], int],
        hls_info: StreamDetails,
        http_server: Callable[[Handler, str], HTTPServer],
        interval: float = SAMPLE_INTERVAL,
        cluster_info: Callable[[], dict[str, Any]] = lambda: {"enabled": False},
        trusted: Callable[[str], bool] | None = None,
        host: HostView | None = None,
        node: Callable[[], str] | None = None,
    ) -> None:
        self.hub = hub
        #: ``workers N``: the peers that make the host's answers (servers/api/host.py), and this worker's node id.
        self.host = host
        self.node = node
        self._cluster_info = cluster_info  # /api/v1/clusters (clients/cluster.py)
        #: Whose state-changing requests are answered while auth is off (a test may say "nobody").
        self.trusted: Callable[[str], bool] = trusted or is_loopback
        self._config = config
        self._reload = reload
        self.sampler = Sampler(hub, interval)
        self.system = SystemFigures(hub, self.sampler, connections)
        self.views = Views(hub, config, self.sampler, hls_info)
        self.service_id = SERVICE_ID
        self.metrics = Metrics(hub, config, self.sampler, lambda: self.server_id, self.service_id)
        self._http_server = http_server  # makes a listener under the server's connection budget and limits
        self.exporter: HTTPServer | None = None

    @property
    def server_id(self) -> str:
        return self._config().server_id or SERVER_ID

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> dict[str, list[tuple[str, int]]]:
        """Start the sampler and, when configured, the exporter's port; returns the exporter's addresses."""
        await self.sampler.start()
        cfg = self._config().exporter
        if cfg.enabled:
            self.exporter = self._http_server(self.metrics.handle_exporter, "exporter")
            return {"exporter": await self.exporter.start(listen_addresses(cfg.listen))}
        return {}

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.close()
        await self.sampler.stop()
        if self.exporter is not None:
            await self.exporter.close()
            self.exporter = None

    # ---------------------------------------------------------------------------------- requests

    async def handle(self, req: Request, conn: HTTPConnection, local: bool = False) -> Response:
        """A request on the API's port; ``local``: a peer worker asks for this worker's own figures (on its
        internal listener), which are never merged again."""
        cfg = self._config().http_api
        cors = CORS_HEADERS if cfg.crossdomain else []
        if req.method == "OPTIONS":  # a CORS preflight: never behind auth (browsers send no credentials)
            if not cfg.crossdomain:
                return self._reply({"code": ERROR_METHOD_NOT_ALLOWED, "error": "cross-domain requests are off"}, 405, [])
            return Response(200, b"", headers=cors)
        callback = req.query.get("callback")
        if callback is not None and not _JS_NAME.fullmatch(callback):
            return self._reply({"code": ERROR_BAD_PARAMETER, "error": "callback must be a JavaScript name"}, 400, cors)
        # The SRS console kicks a client with JSONP: GET ...?callback=f&method=DELETE.
        method = req.query.get("method", req.method).upper() if callback is not None else req.method
        try:
            if cfg.auth.enabled and not _authorized(req, cfg.auth.username, cfg.auth.password):
                raise ApiError(401, ERROR_UNAUTHORIZED, "authentication required",
                               [("WWW-Authenticate", 'Basic realm="livesrv", charset="UTF-8"')])
            path = req.path.rstrip("/")
            if not cfg.auth.enabled and self.admin_only(method, path) and not self.trusted(req.ip):
                what = f"{method} {path}" if method not in READ_METHODS else path
                event(log, "api-refused", logging.WARNING, ip=req.ip, method=method, path=path,
                      reason="not loopback and http_api auth is off")
                raise ApiError(403, ERROR_FORBIDDEN, LOOPBACK_ONLY.format(what=what, ip=req.ip))
            if path == "/metrics":
                _allow(method, "GET", "HEAD")
                resp = self.metrics.render()
                resp.headers.extend(cors)
                return resp
            host = None if local else self.host
            status = 200
            if host is not None and path in HOST_PATHS and method in ("GET", "HEAD"):
                data = await self._host_answer(host, path, req)
            else:
                try:
                    data = self._route(method, path, req)
                except ApiError as exc:
                    if not (exc.status == 404 and host is not None and _per_worker_id(path)):
                        raise
                    query = {k: v for k, v in req.query.items() if k not in OWN_QUERY}
                    answer = await host.ask_each(method, path, query, _forwarded_headers(req))
                    if answer is None or answer.body is None:
                        raise
                    data, status = answer.body, answer.status  # (the peer's pid and code: it answered)
        except ApiError as exc:
            body = {"code": exc.code, "error": str(exc)}
            return self._reply(body, exc.status, cors + exc.headers, callback)
        return self._reply(data, status, cors, callback)

    async def _host_answer(self, host: HostView, path: str, req: Request) -> dict[str, Any]:
        """(workers) ``path`` for the whole host: this worker's answer merged with its peers' (host.py)."""
        start, count = _paging(req)
        query = {k: v for k, v in req.query.items() if k not in OWN_QUERY}
        if path != "/api/v1/summaries":
            query.update(start="0", count=str(start + count))  # (each peer's first start+count: enough to page)
        answers = await host.ask_all("GET", path, query, _forwarded_headers(req))
        unreachable = [a.node for a in answers if a.body is None or a.status != 200]
        ok = [a for a in answers if a.body is not None and a.status == 200]
        node = self.node() if self.node is not None else ""
        if path == "/api/v1/summaries":
            data = merge_summaries(self.system.summaries(), node, [(a.node, a.body.get("data", {})) for a in ok])
            return {"data": data, "workers_unreachable": unreachable}
        local_ids = {name: self.sampler.vhost_account(name).id for name in self.views.vhost_names()}
        name = "streams" if path == "/api/v1/streams" else "clients"
        local = (self._stream_entries(list(self.hub.streams.values())) if name == "streams"
                 else self._client_entries(list(self.hub.clients.values())))
        theirs = [[remap_vhost(e, a.body.get("vhost_names", {}), local_ids) for e in a.body.get(name, [])]
                  for a in ok]
        if name == "streams":
            entries = merge_streams(local, theirs)
        else:
            entries = [*local, *(e for es in theirs for e in es)]
        return {"total": len(entries), name: entries[start : start + count], "workers_unreachable": unreachable}

    def _stream_entries(self, streams: list[Stream]) -> list[dict[str, Any]]:
        by_key = self.views.clients_of()
        entries = [self.views.stream_json(s, by_key) for s in streams]
        if self.node is not None:  # (workers: who has it, and whether it is a pull of another worker's stream)
            node = self.node()
            for entry, s in zip(entries, streams):
                entry["worker"] = node
                entry["pulled"] = bool(getattr(s.publisher, "mirror", False))
        return entries

    def _client_entries(self, clients: list[Client]) -> list[dict[str, Any]]:
        entries = [self.views.client_json(c) for c in clients]
        if self.node is not None:
            node = self.node()
            for entry in entries:
                entry["worker"] = node
        return entries

    def _vhost_names(self) -> dict[str, Any]:
        """(workers) This worker's vhost ids by name, for the worker that merges (ids are per process)."""
        if self.node is None:
            return {}
        return {"vhost_names": {self.sampler.vhost_account(n).id: n for n in self.views.vhost_names()}}

    @staticmethod
    def admin_only(method: str, path: str) -> bool:
        """Does this request change state or read the running config (so that, without auth, only loopback
        clients are answered)?"""
        return method not in READ_METHODS or path.startswith(ADMIN_PATHS)

    def _reply(self, data: dict[str, Any], status: int, headers: list[tuple[str, str]],
               callback: str | None = None) -> Response:
        body: dict[str, Any] = {"code": data.pop("code", 0), "server": self.server_id, "service": self.service_id,
                                "pid": str(os.getpid())}
        body.update(data)
        text = json.dumps(body, separators=(",", ":"))
        if callback is not None:
            return Response(200, f"{callback}({text})".encode(), "text/javascript", list(headers))
        return Response(status, text.encode(), "application/json", list(headers))

    def _route(self, method: str, path: str, req: Request) -> dict[str, Any]:
        if path == "":
            _allow(method, "GET", "HEAD")
            return {"urls": {"api": "the api root"}}
        if path == "/api":
            _allow(method, "GET", "HEAD")
            return {"urls": {"v1": "the api version 1.0"}}
        if path == "/api/v1":
            _allow(method, "GET", "HEAD")
            return {"urls": {
                "versions": "the version of livesrv",
                "summaries": "the summary (pid, argv, cwd, cpu, mem) of livesrv and the system",
                "vhosts": "all vhosts or one: /api/v1/vhosts/ID",
                "streams": "all streams or one: /api/v1/streams/ID (DELETE ends it)",
                "clients": "all clients or one: /api/v1/clients/ID (DELETE kicks it)",
                "clusters": "the cluster's nodes and which owns which stream (livesrv)",
                "raw": "?rpc=reload re-reads the config file (needs http_api.raw_api)",
                "config": "the running config, secrets masked (livesrv)",
            }, "metrics": "/metrics"}
        if not path.startswith("/api/v1/"):
            raise ApiError(404, ERROR_HTTP_HANDLER_MATCH_URL, f"no api at {path}")
        name, _, ident = path[len("/api/v1/") :].partition("/")
        handler: Callable[[str, str, Request], dict[str, Any]] | None = {
            "versions": self._versions,
            "summaries": self._summaries,
            "vhosts": self._vhosts,
            "streams": self._streams,
            "clients": self._clients,
            "raw": self._raw,
            "clusters": self._clusters,
            "config": self._running_config,
        }.get(name)
        if handler is None:
            raise ApiError(404, ERROR_HTTP_HANDLER_MATCH_URL, f"no api at {path}")
        return handler(method, ident, req)

    # ---------------------------------------------------------------------------------- endpoints

    def _versions(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _no_id(ident)
        _allow(method, "GET", "HEAD")
        parts = [int(x) if x.isdigit() else 0 for x in (__version__.split(".") + ["0", "0"])[:3]]
        return {"data": {"major": parts[0], "minor": parts[1], "revision": parts[2], "version": __version__}}

    def _clusters(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        """livesrv: the cluster's nodes and which owns which stream (SRS's old origin-cluster query API at this
        path is not implemented)."""
        _no_id(ident)
        _allow(method, "GET", "HEAD")
        return {"data": self._cluster_info()}

    def _summaries(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _no_id(ident)
        _allow(method, "GET", "HEAD")
        return {"data": self.system.summaries()}

    def _vhosts(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _allow(method, "GET", "HEAD")
        views = self.views
        names = views.vhost_names()
        by_key = views.clients_of()
        if ident:
            for name in names:
                if self.sampler.vhost_account(name).id == ident:
                    return {"vhost": views.vhost_json(name, by_key)}
            raise ApiError(404, ERROR_RTMP_VHOST_NOT_FOUND, f"no vhost with id {ident}")
        return {"vhosts": [views.vhost_json(name, by_key) for name in names]}

    def _streams(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        if method == "DELETE":
            if not ident:
                raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, "DELETE needs a stream id: /api/v1/streams/ID",
                               [("Allow", "GET, HEAD")])
            stream = self._stream_or_404(ident)
            event(log, "api-delete-stream", logging.WARNING, stream=stream.key, id=ident)
            self.hub.end_stream(stream.key, "stream deleted by the HTTP API")
            return {}
        _allow(method, "GET", "HEAD", *(("DELETE",) if ident else ()))
        if ident:
            return {"stream": self._stream_entries([self._stream_or_404(ident)])[0]}
        streams = list(self.hub.streams.values())
        start, count = _paging(req)
        return {"total": len(streams), "streams": self._stream_entries(streams[start : start + count]),
                **self._vhost_names()}

    def _stream_or_404(self, ident: str) -> Stream:
        stream = self.views.find_stream(ident)
        if stream is None:
            raise ApiError(404, ERROR_RTMP_STREAM_NOT_FOUND, f"no stream with id {ident}")
        return stream

    def _clients(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        if method == "DELETE":
            if not ident:
                raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, "DELETE needs a client id: /api/v1/clients/ID",
                               [("Allow", "GET, HEAD")])
            client = self._client_or_404(ident)
            event(log, "api-kick", logging.WARNING, client=client.cid, ip=client.ip, stream=client.context.key,
                  protocol=client.protocol)
            client.kick("kicked by the HTTP API")
            return {}
        _allow(method, "GET", "HEAD", *(("DELETE",) if ident else ()))
        if ident:
            return {"client": self._client_entries([self._client_or_404(ident)])[0]}
        start, count = _paging(req)
        clients = list(self.hub.clients.values())
        return {"total": len(clients), "clients": self._client_entries(clients[start : start + count]),
                **self._vhost_names()}

    def _client_or_404(self, ident: str) -> Client:
        client = self.hub.clients.get(ident)
        if client is None:
            raise ApiError(404, ERROR_RTMP_CLIENT_NOT_FOUND, f"no client with id {ident}")
        return client

    def _running_config(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        """livesrv: the configuration in effect (file or defaults, then ``SRS_*`` overrides, then reloads), as
        JSON, with passwords and URL credentials and query values masked."""
        _no_id(ident)
        _allow(method, "GET", "HEAD")
        return {"data": _masked(self._config().model_dump(mode="json"))}

    def _raw(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _no_id(ident)
        _allow(method, "GET", "POST")
        raw = self._config().http_api.raw_api
        if not raw.enabled:
            raise ApiError(403, ERROR_SYSTEM_CONFIG_RAW_DISABLED, "raw api is disabled (http_api.raw_api.enabled)")
        rpc = req.query.get("rpc", "")
        if rpc != "reload":
            raise ApiError(400, ERROR_SYSTEM_CONFIG_RAW, f"unsupported rpc {rpc!r}: want rpc=reload")
        if not raw.allow_reload:
            raise ApiError(403, ERROR_SYSTEM_CONFIG_RAW_NOT_ALLOWED,
                           "reload is not allowed (http_api.raw_api.allow_reload)")
        try:
            restart = self._reload()
        except (ConfigError, OSError) as exc:
            log.error("event=reload-failed reason=%r", str(exc))
            raise ApiError(500, ERROR_SYSTEM_CONFIG_INVALID, f"reload failed: {exc}") from None
        return {"data": {"restart_needed": restart}}


# -------------------------------------------------------------------------------------------- helpers


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, f"method {method} not allowed here",
                       [("Allow", ", ".join(allowed))])


def _per_worker_id(path: str) -> bool:
    """``/api/v1/streams/ID`` or ``/api/v1/clients/ID``: ids of one worker's streams and clients."""
    name, _, ident = path[len("/api/v1/"):].partition("/") if path.startswith("/api/v1/") else ("", "", "")
    return name in ("streams", "clients") and bool(ident)


def _forwarded_headers(req: Request) -> dict[str, str]:
    """What a peer worker must see of the request: its credentials (the peer checks them too)."""
    auth = req.headers.get("authorization")
    return {"Authorization": auth} if auth else {}


def _no_id(ident: str) -> None:
    if ident:
        raise ApiError(404, ERROR_HTTP_HANDLER_MATCH_URL, f"unexpected id {ident!r}")


def _paging(req: Request) -> tuple[int, int]:
    out = []
    for name, default in (("start", 0), ("count", DEFAULT_COUNT)):
        text = req.query.get(name, "")
        if text == "":
            out.append(default)
            continue
        if not text.isdigit():
            raise ApiError(400, ERROR_BAD_PARAMETER, f"{name} must be a number >= 0, not {text!r}")
        out.append(int(text))
    return out[0], out[1]


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6 (a dual-stack socket's ``::ffff:127.0.0.1``)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


_SECRET_KEYS = frozenset({"password", "secret", "token"})


def _masked(value: Any, key: str = "") -> Any:
    """A config dump fit to show: secrets as ``***``, URLs without credentials or query values."""
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if isinstance(value, str):
        if key in _SECRET_KEYS:
            return "***" if value else ""
        if "://" in value or "?" in value:
            return mask_url(value)
    return value


def _authorized(req: Request, username: str, password: str) -> bool:
    header = req.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, pw = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Both compared, always: the time taken says nothing about which one was wrong.
    ok_user = secrets.compare_digest(user.encode(), username.encode())
    ok_pw = secrets.compare_digest(pw.encode(), password.encode())
    return bool(sep) and ok_user and ok_pw
