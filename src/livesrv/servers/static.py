"""Static files under ``http_server.dir`` (SRS serves its players and HLS output from there)."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

from livesrv.servers.http import Request, Response

MAX_STATIC_FILE = 64 * 1024 * 1024


def _read(path: Path) -> bytes | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_STATIC_FILE:
            return None
        return path.read_bytes()
    except OSError:
        return None


async def serve_file(root: Path, req: Request) -> Response:
    """Serve ``req.path`` below ``root``; never anything outside it (``..``, symlinks out)."""
    if req.method not in ("GET", "HEAD"):
        return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
    rel = req.path.lstrip("/") or "index.html"
    try:
        base = root.resolve()
        path = (base / rel).resolve()
        path.relative_to(base)
    except (OSError, ValueError):
        return Response(404, b"not found\n")
    if path.is_dir():
        path = path / "index.html"
    data = await asyncio.to_thread(_read, path)
    if data is None:
        return Response(404, b"not found\n")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(200, data, ctype, [("Access-Control-Allow-Origin", "*")])
