"""The HTTP API on ``http_api.listen``, in SRS's shapes, so that SRS dashboards, scripts and the SRS console work.

Every answer carries ``code`` (0 = ok), ``server``, ``service`` and ``pid``. Errors are JSON with a non-zero
``code`` (SRS's error numbers where SRS has one) and ``error``, with the HTTP status that says what went wrong
(404 unknown id, 400 bad parameter, 405 wrong method) — except for JSONP (``?callback=``), which is always
200 because a browser's ``<script>`` tag cannot read an error status (SRS answers JSONP the same way).

Rates (``kbps.recv_30s``/``send_30s``) come from one sampler task that reads byte counters once a second;
nothing here runs per packet. Stream and vhost ids are SRS-style ``vid-xxxxxxx`` strings, stable for the life
of the stream (kept in ``stream.extra["id"]``) or the process (vhosts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from livesrv import __version__, stats
from livesrv.codec import flv
from livesrv.codec.aac import parse_asc
from livesrv.codec.avc import parse_avc_config, parse_hevc_config, parse_hevc_sps, parse_sps
from livesrv.codec.errors import ProtocolError
from livesrv.config import ConfigError, listen_addresses
from livesrv.media.packet import AUDIO, MediaPacket
from livesrv.servers.http import HTTPConnection, HTTPServer, Request, Response
from livesrv.servers.metrics import Metrics

if TYPE_CHECKING:
    from livesrv.app import App
    from livesrv.hub.stream import Stream

log = logging.getLogger("livesrv.api")

SERVICE_ID = os.urandom(4).hex()
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_vid() -> str:
    """An SRS-style id for a vhost or a stream: ``vid-`` and 7 characters."""
    return "vid-" + "".join(secrets.choice(_ALPHABET) for _ in range(7))


SERVER_ID = new_vid()

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
ERROR_METHOD_NOT_ALLOWED = 405

#: Default ``count`` of the stream and client lists (SRS: 10; more is more useful and still small).
DEFAULT_COUNT = 100
KBPS_WINDOW = 30.0  # seconds, SRS's ``*_30s``
SAMPLE_INTERVAL = 1.0

CORS_HEADERS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, HEAD, PUT, DELETE, OPTIONS"),
    # "*" does not cover Authorization in a preflight: name it, or Basic auth from a page cannot work.
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, Origin, Accept, X-Requested-With"),
    ("Access-Control-Expose-Headers", "Server, Content-Type, Content-Length"),
]
_JS_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,127}")

_AVC_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High(10)", 122: "High(422)",
                 244: "High(444)"}
_HEVC_PROFILES = {1: "Main", 2: "Main10", 3: "Main Still Picture", 4: "RExt"}
_AUDIO_NAMES = {flv.CODEC_AAC: "AAC", flv.CODEC_MP3: "MP3", flv.CODEC_OPUS: "Opus", flv.CODEC_FLAC: "FLAC",
                flv.CODEC_AC3: "AC3", flv.CODEC_EAC3: "EAC3", "speex": "Speex"}
_VIDEO_NAMES = {flv.CODEC_AVC: "H264", flv.CODEC_HEVC: "HEVC", flv.CODEC_AV1: "AV1", flv.CODEC_VP9: "VP9",
                flv.CODEC_VP8: "VP8"}


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []


# ----------------------------------------------------------------------------------------- accounting


class Meter:
    """(time, recv bytes, send bytes) samples over the last 30 s; the rate is the slope across them."""

    __slots__ = ("samples",)

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=max(2, round(KBPS_WINDOW / interval) + 1))

    def add(self, t: float, recv: int, send: int) -> None:
        self.samples.append((t, recv, send))

    def kbps(self) -> dict[str, int]:
        if len(self.samples) < 2:
            return {"recv_30s": 0, "send_30s": 0}
        t0, r0, s0 = self.samples[0]
        t1, r1, s1 = self.samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return {"recv_30s": 0, "send_30s": 0}
        return {"recv_30s": round((r1 - r0) * 8 / 1000 / dt), "send_30s": round((s1 - s0) * 8 / 1000 / dt)}


class StreamAccount:
    """Per-stream state of the API (in ``stream.extra["api"]``): bytes sent to viewers, including viewers that
    have left (counted at the last sample that saw them), and the stream's meter."""

    __slots__ = ("meter", "departed", "last_seen", "send_total")

    def __init__(self, interval: float) -> None:
        self.meter = Meter(interval)
        self.departed = 0
        self.last_seen: dict[str, int] = {}
        self.send_total = 0

    def sample(self, stream: Stream, now: float) -> None:
        seen = {cid: v.send_bytes for cid, v in stream.viewers.items()}
        for cid, sent in self.last_seen.items():
            if cid not in seen:
                self.departed += sent
        self.last_seen = seen
        self.send_total = self.departed + sum(seen.values())
        self.meter.add(now, stream.stats.recv_bytes, self.send_total)


class VhostAccount:
    """Bytes of a vhost's streams, including streams that are gone (their last sampled totals)."""

    __slots__ = ("id", "meter", "retired_recv", "retired_send", "current")

    def __init__(self, interval: float) -> None:
        self.id = new_vid()
        self.meter = Meter(interval)
        self.retired_recv = 0
        self.retired_send = 0
        self.current: dict[str, tuple[int, int]] = {}  # stream id -> (recv, send) at the last sample


# ------------------------------------------------------------------------------------- codec details


def _level_avc(level: int) -> str:
    if level == 9:
        return "1b"
    return str(level // 10) if level % 10 == 0 else f"{level // 10}.{level % 10}"


def _level_hevc(level: int) -> str:
    major, minor = divmod(level, 30)
    return str(major) if minor == 0 else f"{major}.{minor // 3}"


def video_info(pkt: MediaPacket, metadata: dict[str, object]) -> dict[str, Any]:
    """SRS's ``video`` object, from the sequence header the publisher sent (never from a decoder)."""
    try:
        info = flv.parse_video(pkt.payload)
    except ProtocolError:
        return {"codec": "Other", "profile": "Other", "level": "Other", **_meta_size(metadata)}
    name = _VIDEO_NAMES.get(info.codec, info.codec.upper() or "Other")
    body = memoryview(pkt.payload)[info.data_offset :]
    try:
        if info.codec == flv.CODEC_AVC:
            sps = parse_sps(parse_avc_config(body).sps[0])
            return {"codec": name, "profile": _AVC_PROFILES.get(sps.profile_idc, "Other"),
                    "level": _level_avc(sps.level_idc), "width": sps.width, "height": sps.height}
        if info.codec == flv.CODEC_HEVC:
            sps = parse_hevc_sps(parse_hevc_config(body).sps[0])
            return {"codec": name, "profile": _HEVC_PROFILES.get(sps.profile_idc, "Other"),
                    "level": _level_hevc(sps.level_idc), "width": sps.width, "height": sps.height}
    except (ProtocolError, IndexError, ValueError):
        pass  # a header we cannot read: say what we know
    if info.codec in (flv.CODEC_AV1, flv.CODEC_VP9):
        return {"codec": name, "profile": None, "level": None, **_meta_size(metadata)}
    return {"codec": name, "profile": "Other", "level": "Other", **_meta_size(metadata)}


def _meta_size(metadata: dict[str, object]) -> dict[str, int]:
    out = {}
    for k in ("width", "height"):
        v = metadata.get(k)
        out[k] = int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 << 16 else 0
    return out


def audio_info(pkt: MediaPacket) -> dict[str, Any] | None:
    """SRS's ``audio`` object: from the AAC AudioSpecificConfig, else from the FLV audio header."""
    try:
        info = flv.parse_audio(pkt.payload)
    except ProtocolError:
        return None
    name = _AUDIO_NAMES.get(info.codec, info.codec.upper() or "Other")
    if info.codec == flv.CODEC_AAC and info.sequence_header:
        try:
            asc = parse_asc(memoryview(pkt.payload)[info.data_offset :])
            return {"codec": name, "sample_rate": asc.sample_rate, "channel": asc.channels, "profile": asc.profile_name}
        except ProtocolError:
            pass
    return {"codec": name, "sample_rate": info.sample_rate, "channel": info.channels, "profile": "Other"}


# ------------------------------------------------------------------------------------------- service


class ApiService:
    """The API's state: the sampler, ids, codec details; answers requests for :class:`App`."""

    def __init__(self, app: App, interval: float = SAMPLE_INTERVAL) -> None:
        self.app = app
        self.interval = interval
        self.service_id = SERVICE_ID
        self.started = time.time()
        self.metrics = Metrics(app, self)
        self.exporter: HTTPServer | None = None
        self.vhosts: dict[str, VhostAccount] = {}
        self.clients: dict[str, Meter] = {}
        self.cpu_percent = 0.0  # this process, percent of one core, over the last sample interval
        self.sys_cpu_percent = 0.0
        self._proc = psutil.Process()
        self._io_prev: tuple[float, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def server_id(self) -> str:
        return self.app.config.server_id or SERVER_ID

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> dict[str, list[tuple[str, int]]]:
        """Start the sampler and, when configured, the exporter's port; returns the exporter's addresses."""
        self._proc.cpu_percent(None)  # the first call only sets the reference point
        psutil.cpu_percent(None)
        self._io_sample()
        self._task = asyncio.create_task(self._sampler(), name="api-sampler")
        cfg = self.app.config.exporter
        if cfg.enabled:
            self.exporter = HTTPServer(self.metrics.handle_exporter, "exporter", budget=self.app.budget,
                                       limits=self.app.config.http_limits)
            return {"exporter": await self.exporter.start(listen_addresses(cfg.listen))}
        return {}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.exporter is not None:
            await self.exporter.close()
            self.exporter = None

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample(time.monotonic())
            except Exception:  # a bug here must not stop the rates of every other stream
                log.exception("event=api-sample-error")

    def sample(self, now: float) -> None:
        """Read every byte counter once: streams, vhosts, clients, CPU."""
        self.cpu_percent = self._proc.cpu_percent(None)
        self.sys_cpu_percent = psutil.cpu_percent(None)
        seen: set[str] = set()
        for c in stats.live_clients(self.app):
            meter = self.clients.get(c.cid)
            if meter is None:
                meter = self.clients[c.cid] = Meter(self.interval)
            meter.add(now, c.recv_bytes, c.send_bytes)
            seen.add(c.cid)
        for cid in [cid for cid in self.clients if cid not in seen]:
            del self.clients[cid]
        current: dict[str, dict[str, tuple[int, int]]] = {}
        for stream in tuple(self.app.hub.streams.values()):
            acct = self.account(stream)
            acct.sample(stream, now)
            current.setdefault(stream.key.vhost, {})[self.stream_id(stream)] = (stream.stats.recv_bytes, acct.send_total)
        for name in set(self.vhosts) | set(current):
            vh = self.vhost_account(name)
            now_streams = current.get(name, {})
            for sid, (recv, send) in vh.current.items():
                if sid not in now_streams:
                    vh.retired_recv += recv
                    vh.retired_send += send
            vh.current = now_streams
            vh.meter.add(now, vh.retired_recv + sum(r for r, _ in now_streams.values()),
                         vh.retired_send + sum(s for _, s in now_streams.values()))

    # ---------------------------------------------------------------------------------- ids, bytes

    def account(self, stream: Stream) -> StreamAccount:
        acct = stream.extra.get("api")
        if acct is None:
            acct = stream.extra["api"] = StreamAccount(self.interval)
        return acct

    @staticmethod
    def stream_id(stream: Stream) -> str:
        sid = stream.extra.get("id")
        if sid is None:
            sid = stream.extra["id"] = new_vid()
        return sid

    def stream_send_bytes(self, stream: Stream) -> int:
        acct = stream.extra.get("api")
        if acct is None:
            return sum(v.send_bytes for v in stream.viewers.values())
        return acct.send_total

    def vhost_account(self, name: str) -> VhostAccount:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VhostAccount(self.interval)
        return vh

    def find_stream(self, sid: str) -> Stream | None:
        for stream in tuple(self.app.hub.streams.values()):
            if self.stream_id(stream) == sid:
                return stream
        return None

    def hls_viewers(self, stream: Stream) -> list[dict[str, Any]]:
        """HLS players of a stream (sessions kept by the HLS service through ``hls_ctx``; no connection)."""
        viewers = getattr(self.app.hls, "viewers", None)
        return list(viewers(stream.key)) if viewers is not None else []

    def hls_clients(self) -> list[dict[str, Any]]:
        out = []
        for stream in tuple(self.app.hub.streams.values()):
            for v in self.hls_viewers(stream):
                out.append(self._hls_client_json(stream, v))
        return out

    def _hls_client_json(self, stream: Stream, v: dict[str, Any]) -> dict[str, Any]:
        key = stream.key
        return {
            "id": v["id"], "vhost": self.vhost_account(key.vhost).id, "stream": self.stream_id(stream),
            "ip": v.get("ip", ""), "pageUrl": "", "swfUrl": "", "tcUrl": "", "url": key.path, "name": key.stream,
            "type": "hls-play", "publish": False, "alive": round(max(0.0, time.time() - v.get("created", time.time())), 3),
            "send_bytes": 0, "recv_bytes": 0, "kbps": {"recv_30s": 0, "send_30s": 0}, "protocol": "hls",
            "user_agent": v.get("user_agent", ""),
        }

    def rss_kbyte(self) -> int:
        return self._proc.memory_info().rss // 1024

    # ---------------------------------------------------------------------------------- requests

    async def handle(self, req: Request, conn: HTTPConnection) -> Response:
        cfg = self.app.config.http_api
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
            if path == "/metrics":
                _allow(method, "GET", "HEAD")
                resp = self.metrics.render()
                resp.headers.extend(cors)
                return resp
            data = self._route(method, path, req)
        except ApiError as exc:
            body = {"code": exc.code, "error": str(exc)}
            return self._reply(body, exc.status, cors + exc.headers, callback)
        return self._reply(data, 200, cors, callback)

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
                "raw": "?rpc=reload re-reads the config file (needs http_api.raw_api)",
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

    def _summaries(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _no_id(ident)
        _allow(method, "GET", "HEAD")
        return {"data": self.summaries()}

    def summaries(self) -> dict[str, Any]:
        now = time.time()
        proc = self._proc
        with proc.oneshot():
            mem = proc.memory_info()
            ppid = proc.ppid()
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        try:
            cpus_online = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus_online = psutil.cpu_count() or 1
        io = self._io_sample()
        totals = stats.traffic(self.app)
        tcp, tcp_tw, udp = _sockstat()
        conn_srs = self.app.budget.open  # every listener's open connections (what max_connections counts)
        return {
            "ok": True,
            "now_ms": int(now * 1000),
            "self": {
                "version": __version__,
                "pid": os.getpid(),
                "ppid": ppid,
                "argv": " ".join(sys.argv),
                "cwd": os.getcwd(),
                "mem_kbyte": mem.rss // 1024,
                "mem_percent": mem.rss / vm.total if vm.total else 0.0,  # SRS: a fraction, 0.153 is 15.3%
                "cpu_percent": self.cpu_percent / 100,
                "srs_uptime": int(now - self.started),
            },
            "system": {
                "cpu_percent": self.sys_cpu_percent / 100,
                "disk_read_KBps": io["disk_read_KBps"],
                "disk_write_KBps": io["disk_write_KBps"],
                "disk_busy_percent": io["disk_busy_percent"],
                "mem_ram_kbyte": vm.total // 1024,
                "mem_ram_percent": vm.percent / 100,
                "mem_swap_kbyte": swap.total // 1024,
                "mem_swap_percent": swap.percent / 100,
                "cpus": psutil.cpu_count() or 1,
                "cpus_online": cpus_online,
                "uptime": round(now - psutil.boot_time(), 1),
                "ilde_time": 0,  # sic: SRS's spelling; not measured
                "load_1m": load[0],
                "load_5m": load[1],
                "load_15m": load[2],
                "net_sample_time": int(now * 1000),
                "net_recv_bytes": io["net_recv_bytes"],
                "net_send_bytes": io["net_send_bytes"],
                "net_recvi_bytes": io["net_recvi_bytes"],
                "net_sendi_bytes": io["net_sendi_bytes"],
                "srs_sample_time": int(now * 1000),
                "srs_recv_bytes": sum(t.recv_bytes for t in totals.values()),
                "srs_send_bytes": sum(t.send_bytes for t in totals.values()),
                "conn_sys": tcp,
                "conn_sys_et": tcp,
                "conn_sys_tw": tcp_tw,
                "conn_sys_udp": udp,
                "conn_srs": conn_srs,
            },
        }

    def _io_sample(self) -> dict[str, Any]:
        """Network totals, and disk rates since the previous call (cheap /proc reads, on request only)."""
        now = time.monotonic()
        try:
            disk = psutil.disk_io_counters()
        except (OSError, RuntimeError):
            disk = None
        try:
            nics = psutil.net_io_counters(pernic=True)
        except (OSError, RuntimeError):
            nics = {}
        out: dict[str, Any] = {"disk_read_KBps": 0, "disk_write_KBps": 0, "disk_busy_percent": 0.0,
                               "net_recv_bytes": 0, "net_send_bytes": 0, "net_recvi_bytes": 0, "net_sendi_bytes": 0}
        for name, c in nics.items():
            if name == "lo":
                out["net_recvi_bytes"] += c.bytes_recv
                out["net_sendi_bytes"] += c.bytes_sent
            else:
                out["net_recv_bytes"] += c.bytes_recv
                out["net_send_bytes"] += c.bytes_sent
        prev = self._io_prev
        if prev is not None and disk is not None and prev[1] is not None and now > prev[0]:
            dt = now - prev[0]
            out["disk_read_KBps"] = int((disk.read_bytes - prev[1].read_bytes) / 1024 / dt)
            out["disk_write_KBps"] = int((disk.write_bytes - prev[1].write_bytes) / 1024 / dt)
            busy = getattr(disk, "busy_time", None)
            if busy is not None:
                out["disk_busy_percent"] = min(1.0, (busy - prev[1].busy_time) / 1000 / dt)
        self._io_prev = (now, disk)
        return out

    def _vhosts(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _allow(method, "GET", "HEAD")
        names = list(self.app.config.vhosts)
        for stream in tuple(self.app.hub.streams.values()):
            if stream.key.vhost not in names:
                names.append(stream.key.vhost)
        if ident:
            for name in names:
                if self.vhost_account(name).id == ident:
                    return {"vhost": self.vhost_json(name)}
            raise ApiError(404, ERROR_RTMP_VHOST_NOT_FOUND, f"no vhost with id {ident}")
        return {"vhosts": [self.vhost_json(name) for name in names]}

    def vhost_json(self, name: str) -> dict[str, Any]:
        cfg = self.app.config.vhost(name)
        vh = self.vhost_account(name)
        streams = [s for s in tuple(self.app.hub.streams.values()) if s.key.vhost == name]
        hls: dict[str, Any] = {"enabled": cfg.hls.enabled}
        if cfg.hls.enabled:
            hls["fragment"] = cfg.hls.hls_fragment
        return {
            "id": vh.id,
            "name": name,
            "enabled": cfg.enabled,
            "clients": sum(len(s.viewers) + (s.publisher is not None) + len(self.hls_viewers(s)) for s in streams),
            "streams": sum(1 for s in streams if s.publisher is not None),
            "send_bytes": vh.retired_send + sum(self.stream_send_bytes(s) for s in streams),
            "recv_bytes": vh.retired_recv + sum(s.stats.recv_bytes for s in streams),
            "kbps": vh.meter.kbps(),
            "hls": hls,
        }

    def _streams(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        if method == "DELETE":
            if not ident:
                raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, "DELETE needs a stream id: /api/v1/streams/ID",
                               [("Allow", "GET, HEAD")])
            stream = self._stream_or_404(ident)
            log.warning("event=api-delete-stream stream=%s id=%s", stream.key, ident)
            self.app.hub.end_stream(stream.key, "stream deleted by the HTTP API")
            return {}
        _allow(method, "GET", "HEAD", *(("DELETE",) if ident else ()))
        if ident:
            return {"stream": self.stream_json(self._stream_or_404(ident))}
        streams = list(self.app.hub.streams.values())
        start, count = _paging(req)
        return {"total": len(streams), "streams": [self.stream_json(s) for s in streams[start : start + count]]}

    def _stream_or_404(self, ident: str) -> Stream:
        stream = self.find_stream(ident)
        if stream is None:
            raise ApiError(404, ERROR_RTMP_STREAM_NOT_FOUND, f"no stream with id {ident}")
        return stream

    def stream_json(self, stream: Stream) -> dict[str, Any]:
        publisher = stream.publisher
        key = stream.key
        active = publisher is not None
        acct = stream.extra.get("api")
        tc_url = ""
        if publisher is not None:
            session = getattr(publisher, "session", None)
            tc_url = getattr(session, "tc_url", "") or ""
        publish: dict[str, Any] = {"active": active}
        if publisher is not None:
            publish["cid"] = publisher.cid
        video = audio = None
        if active:
            gop = stream.gop
            if gop.video_header is not None:
                video = self._cached(stream, "api.video", gop.video_header,
                                     lambda p: video_info(p, stream.metadata))
            apkt = gop.audio_header or next((p for p in gop.gop if p.kind == AUDIO), None)
            if apkt is not None:
                audio = self._cached(stream, "api.audio", apkt, audio_info)
        s = stream.stats
        hls_viewers = len(self.hls_viewers(stream))
        hls_info = getattr(self.app.hls, "info", None)
        return {
            "id": self.stream_id(stream),
            "name": key.stream,
            "vhost": self.vhost_account(key.vhost).id,
            "app": key.app,
            "tcUrl": tc_url,
            "url": key.path,
            "live_ms": int((stream.live_since or stream.created) * 1000),  # when it went live (SRS: now)
            "clients": len(stream.viewers) + active + hls_viewers,
            "frames": s.video_frames + s.audio_frames,
            "video_frames": s.video_frames,
            "audio_frames": s.audio_frames,
            "send_bytes": self.stream_send_bytes(stream),
            "recv_bytes": s.recv_bytes,
            "kbps": acct.meter.kbps() if acct is not None else {"recv_30s": 0, "send_30s": 0},
            "publish": publish,
            "video": video,
            "audio": audio,
            # livesrv: beyond SRS
            "state": stream.state.value,
            "generation": stream.generation,
            "viewers": len(stream.viewers) + hls_viewers,
            "hls": hls_info(key) if hls_info is not None else None,
        }

    @staticmethod
    def _cached(stream: Stream, slot: str, pkt: MediaPacket, parse: Callable[[MediaPacket], Any]) -> Any:
        """Parse a sequence header once per header packet (a new publisher brings a new one)."""
        hit = stream.extra.get(slot)
        if hit is not None and hit[0] is pkt:
            return hit[1]
        value = parse(pkt)
        stream.extra[slot] = (pkt, value)
        return value

    def _clients(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        if method == "DELETE":
            if not ident:
                raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, "DELETE needs a client id: /api/v1/clients/ID",
                               [("Allow", "GET, HEAD")])
            if any(c["id"] == ident for c in self.hls_clients()):
                raise ApiError(400, ERROR_BAD_PARAMETER, "an HLS player has no connection to close: it just stops asking")
            client = self._client_or_404(ident)
            log.warning("event=api-kick client=%s ip=%s stream=%s", client.cid, client.ip,
                        client.stream.key if client.stream else "")
            client.kick("kicked by the HTTP API")
            return {}
        _allow(method, "GET", "HEAD", *(("DELETE",) if ident else ()))
        if ident:
            for hls in self.hls_clients():
                if hls["id"] == ident:
                    return {"client": hls}
            return {"client": self.client_json(self._client_or_404(ident))}
        start, count = _paging(req)
        clients = [self.client_json(c) for c in stats.live_clients(self.app)] + self.hls_clients()
        return {"total": len(clients), "clients": clients[start : start + count]}

    def _client_or_404(self, ident: str) -> stats.LiveClient:
        for c in stats.live_clients(self.app):
            if c.cid == ident:
                return c
        raise ApiError(404, ERROR_RTMP_CLIENT_NOT_FOUND, f"no client with id {ident}")

    def client_json(self, c: stats.LiveClient) -> dict[str, Any]:
        stream = c.stream
        meter = self.clients.get(c.cid)
        return {
            "id": c.cid,
            "vhost": self.vhost_account(stream.key.vhost).id if stream else "",
            "stream": self.stream_id(stream) if stream else "",
            "ip": c.ip,
            "pageUrl": getattr(c.handle, "page_url", ""),  # RTMP clients send them in connect
            "swfUrl": getattr(c.handle, "swf_url", ""),
            "tcUrl": c.tc_url,
            "url": stream.key.path if stream else "",
            "name": stream.key.stream if stream else "",
            "type": c.type,
            "publish": c.publish,
            "alive": round(max(0.0, time.monotonic() - c.created), 3),
            "send_bytes": c.send_bytes,
            "recv_bytes": c.recv_bytes,
            "kbps": meter.kbps() if meter is not None else {"recv_30s": 0, "send_30s": 0},
            "protocol": c.protocol,  # livesrv: rtmp, flv, ws-flv...
        }

    def _raw(self, method: str, ident: str, req: Request) -> dict[str, Any]:
        _no_id(ident)
        _allow(method, "GET", "POST")
        raw = self.app.config.http_api.raw_api
        if not raw.enabled:
            raise ApiError(403, ERROR_SYSTEM_CONFIG_RAW_DISABLED, "raw api is disabled (http_api.raw_api.enabled)")
        rpc = req.query.get("rpc", "")
        if rpc != "reload":
            raise ApiError(400, ERROR_SYSTEM_CONFIG_RAW, f"unsupported rpc {rpc!r}: want rpc=reload")
        if not raw.allow_reload:
            raise ApiError(403, ERROR_SYSTEM_CONFIG_RAW_NOT_ALLOWED,
                           "reload is not allowed (http_api.raw_api.allow_reload)")
        try:
            restart = self.app.reload()
        except (ConfigError, OSError) as exc:
            log.error("event=reload-failed reason=%r", str(exc))
            raise ApiError(500, ERROR_SYSTEM_CONFIG_INVALID, f"reload failed: {exc}") from None
        return {"data": {"restart_needed": restart}}


# -------------------------------------------------------------------------------------------- helpers


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(405, ERROR_METHOD_NOT_ALLOWED, f"method {method} not allowed here",
                       [("Allow", ", ".join(allowed))])


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


def _sockstat() -> tuple[int, int, int]:
    """TCP sockets in use and in TIME_WAIT, UDP sockets in use (Linux /proc/net/sockstat; zeros elsewhere)."""
    tcp = tw = udp = 0
    try:
        with open("/proc/net/sockstat", encoding="ascii") as f:
            for line in f:
                words = line.split()
                if not words:
                    continue
                fields = dict(zip(words[1::2], words[2::2]))
                if words[0] == "TCP:":
                    tcp = int(fields.get("inuse", 0))
                    tw = int(fields.get("tw", 0))
                elif words[0] == "UDP:":
                    udp = int(fields.get("inuse", 0))
    except (OSError, ValueError):
        pass
    return tcp, tw, udp

