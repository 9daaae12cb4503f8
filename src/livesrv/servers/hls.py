"""HLS output and HTTP-TS (issue 5): per-stream segmenters fed by the hub, files written off the event loop,
playlists and segments served by the HTTP server. (Being built: for now nothing is handled here.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from livesrv.servers.http import HTTPConnection, Request, Response

if TYPE_CHECKING:
    from livesrv.app import App


class HlsService:
    """Owns every stream's HLS segmenter and HTTP-TS viewers; registered with the hub by :class:`App`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def handle(self, req: Request, conn: HTTPConnection) -> Response | None:
        """A ``.m3u8`` or ``.ts`` request; ``NotImplemented`` when this service does not serve it."""
        return NotImplemented  # type: ignore[return-value]
