"""livesrv's own web pages on the HTTP server: the streams (``/``), a player (``/player.html``), the console
(``/console/``), their assets under ``/livesrv/``.

The pages are static files of the package (``livesrv/web``: plain HTML, CSS and ES modules, no build step);
everything they show comes from the public HTTP API, whose address they learn from ``/livesrv/config.json``
(with what the server plays: HTTP-FLV, HLS, WebRTC).
The players (mpegts.js, hls.js) are not in the repository: ``scripts/serve`` installs their npm packages
into ``livesrv/web/vendor/node_modules`` and they are served as ``/livesrv/vendor/mpegts.js`` and
``/livesrv/vendor/hls.js``; without them the pages say so and play HLS natively where the browser can.
``/livesrv/thumbs/<stream id>.jpg`` is a still of a live stream (:mod:`.thumbnails`).

A file of the same name under ``http_server.dir`` is served instead (the application asks this module only
when there is none), so nothing a site already serves changes. Files are answered with an ETag and
``Cache-Control: no-cache`` (a browser revalidates, an unchanged file costs a 304), gzip when the client
takes it, and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from livesrv import __version__
from livesrv.config import DEFAULT_VHOST, Config
from livesrv.hub.hub import Hub
from livesrv.servers.api.sampling import stream_id
from livesrv.servers.http import Request, Response
from livesrv.servers.thumbnails import Thumbnails

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
VENDOR_DIR = WEB_DIR / "vendor" / "node_modules"
#: The players: URL name -> file in their npm package (installed by scripts/serve, by name and version).
VENDOR_FILES = {"mpegts.js": "mpegts.js/dist/mpegts.js", "hls.js": "hls.js/dist/hls.min.js"}
#: The pages, by URL path.
PAGES = {"/": "index.html", "/index.html": "index.html", "/player.html": "player.html", "/console/": "console.html"}
PREFIX = "/livesrv/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}
COMMON_HEADERS = [("X-Content-Type-Options", "nosniff")]

Addresses = Callable[[], Mapping[str, Sequence[tuple[str, int]]]]


@dataclass(slots=True)
class _File:
    stamp: tuple[float, int]  # mtime, size: re-read when either changes
    body: bytes
    etag: str
    gzipped: bytes | None


class WebPages:
    def __init__(self, hub: Hub, config: Callable[[], Config], addresses: Addresses, *,
                 web_dir: Path = WEB_DIR, vendor_dir: Path = VENDOR_DIR) -> None:
        self.hub = hub
        self._config = config
        self._addresses = addresses
        self.web_dir = web_dir
        self.vendor_dir = vendor_dir
        self.thumbnails = Thumbnails()
        self._files: dict[Path, _File] = {}

    async def handle(self, req: Request) -> Response:
        """A page, an asset, the pages' config or a still; 404 for anything else."""
        path = req.path
        if path == "/console":
            return Response(301, b"", headers=[("Location", "/console/"), *COMMON_HEADERS])
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
        name = PAGES.get(path)
        if name is not None:
            return await self._file(self.web_dir / name, req)
        if not path.startswith(PREFIX):
            return _not_found()
        rest = path[len(PREFIX):]
        if rest == "config.json":
            return self._config_json(req)
        if rest.startswith("vendor/"):
            vendor = VENDOR_FILES.get(rest[len("vendor/"):])
            return await self._file(self.vendor_dir / vendor, req) if vendor else _not_found()
        if rest.startswith("thumbs/") and rest.endswith(".jpg"):
            return await self._thumbnail(rest[len("thumbs/"):-len(".jpg")])
        if "/" in rest or rest.startswith(".") or Path(rest).suffix not in CONTENT_TYPES:
            return _not_found()  # assets are the flat files of the web directory, nothing else
        return await self._file(self.web_dir / rest, req)

    # ------------------------------------------------------------------------------------------ files

    async def _file(self, path: Path, req: Request) -> Response:
        f = await asyncio.to_thread(self._load, path)
        if f is None:
            return _not_found()
        headers = [("ETag", f.etag), ("Cache-Control", "no-cache"), ("Vary", "Accept-Encoding"), *COMMON_HEADERS]
        ctype = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        if f.etag in (t.strip() for t in req.headers.get("if-none-match", "").split(",")):
            return Response(304, b"", ctype, headers)
        if f.gzipped is not None and "gzip" in req.headers.get("accept-encoding", ""):
            return Response(200, f.gzipped, ctype, [*headers, ("Content-Encoding", "gzip")])
        return Response(200, f.body, ctype, headers)

    def _load(self, path: Path) -> _File | None:
        """The file, read (and gzipped) once per version; runs in a worker thread."""
        try:
            st = path.stat()
        except OSError:
            self._files.pop(path, None)
            return None
        stamp = (st.st_mtime, st.st_size)
        cached = self._files.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        try:
            body = path.read_bytes()
        except OSError:
            return None
        packed = gzip.compress(body, 6, mtime=0) if len(body) > 1024 else None
        f = _File(stamp, body, '"' + hashlib.sha1(body).hexdigest()[:20] + '"',
                  packed if packed is not None and len(packed) < len(body) else None)
        self._files[path] = f
        return f

    def players(self) -> dict[str, bool]:
        """Which players' npm packages are installed."""
        return {name: (self.vendor_dir / file).is_file() for name, file in VENDOR_FILES.items()}

    # ------------------------------------------------------------------------------------------ data

    def _config_json(self, req: Request) -> Response:
        """What the pages need to know and cannot ask the API: where the API and the other ports are, and what
        the vhost (``?vhost=``, else the host name, else the default one, as for a stream's URL) plays over."""
        cfg = self._config()
        vhost = cfg.vhost(_vhost_name(req, cfg))
        addrs = self._addresses()

        def port(name: str) -> int | None:
            return addrs[name][0][1] if addrs.get(name) else None

        body = {
            "server": "livesrv",
            "version": __version__,
            # The TLS listeners' ports (None when off): a page loaded over HTTPS calls the API over HTTPS.
            "ports": {"rtmp": port("rtmp"), "http": port("http"), "api": port("api"),
                      "rtmps": port("rtmps"), "https": port("https"), "api_https": port("api_https")},
            "api": {"enabled": cfg.http_api.enabled, "auth": cfg.http_api.auth.enabled,
                    "crossdomain": cfg.http_api.crossdomain},
            "flv": vhost.http_remux.enabled,
            "hls": vhost.hls.enabled,
            # WHEP, on the API's port: streams published over RTMP (any protocol but WebRTC) play over it
            "rtc": bool(port("api") and cfg.rtc_server.enabled and vhost.rtc.enabled and vhost.rtc.rtmp_to_rtc),
            "players": self.players(),
            "pid": os.getpid(),
        }
        return Response(200, json.dumps(body).encode(), "application/json",
                        [("Cache-Control", "no-store"), ("Access-Control-Allow-Origin", "*"), *COMMON_HEADERS])

    async def _thumbnail(self, sid: str) -> Response:
        stream = next((s for s in tuple(self.hub.streams.values()) if stream_id(s) == sid), None)
        jpeg = await self.thumbnails.jpeg(stream) if stream is not None and stream.live else None
        if jpeg is None:
            return _not_found()
        return Response(200, jpeg, "image/jpeg", [("Cache-Control", "no-store"), *COMMON_HEADERS])


def _vhost_name(req: Request, cfg: Config) -> str:
    for name in (req.query.get("vhost"), req.query.get("domain"), req.headers.get("host", "").rsplit(":", 1)[0]):
        if name and name in cfg.vhosts:
            return name
    return DEFAULT_VHOST


def _not_found() -> Response:
    return Response(404, b"not found\n", headers=list(COMMON_HEADERS))
