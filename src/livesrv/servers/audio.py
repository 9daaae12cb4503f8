"""Audio-only HTTP streams (SRS's ``http_remux`` ``.mp3`` and ``.aac`` mounts): ``GET /app/stream.mp3`` is the
stream's MP3 audio as one continuous MP3 body, ``GET /app/stream.aac`` its AAC audio in ADTS; internet radio
players, ``<audio>`` elements and ffmpeg play them.

The viewers are ordinary hub viewers (the fan-out's shared batches, back-pressure, republish grace, the API,
the hooks): only the format differs (:class:`~livesrv.media.formats.Mp3Format`,
:class:`~livesrv.media.formats.AdtsFormat`), and it is chosen when the viewer (re)starts, from the publisher's
audio codec. A stream whose audio is another codec (or that has none) closes the viewer with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from livesrv.codec import flv
from livesrv.codec.errors import ProtocolError
from livesrv.hub.stream import Stream, Viewer
from livesrv.log import client_event
from livesrv.media.formats import MP3, adts_format
from livesrv.servers.flv import refuse_bad_name, resolve
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.http_viewer import CORS, HttpViewerOwner, admit_http_viewer, not_a_viewer

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.audio")

#: URL suffix -> (protocol name, Content-Type, FLV audio codec name).
KINDS: Final = {
    ".mp3": ("mp3", "audio/mpeg", flv.CODEC_MP3),
    ".aac": ("aac", "audio/aac", flv.CODEC_AAC),
}


class AudioViewerOwner(HttpViewerOwner):
    """An ``.mp3``/``.aac`` viewer: its format follows the publisher's audio configuration at each (re)start."""

    def __init__(self, conn: HTTPConnection, codec: str) -> None:
        super().__init__(conn)
        self.codec = codec

    def starting(self, stream: Stream) -> bool:
        viewer = self.viewer
        assert viewer is not None
        header = stream.gop.audio_header
        sample = header or next((p for p in reversed(stream.gop.gop) if p.kind == flv.AUDIO), None)
        if sample is None:
            self.close_viewer("the stream has no audio")
            return False
        try:
            info = flv.parse_audio(sample.payload)
        except ProtocolError as exc:
            self.close_viewer(f"unreadable audio: {exc}")
            return False
        if info.codec != self.codec:
            self.close_viewer(f"the stream's audio is {info.codec}, not {self.codec}")
            return False
        if self.codec == flv.CODEC_AAC:
            if header is None:
                self.close_viewer("no AAC sequence header yet")
                return False
            try:
                viewer.fmt = adts_format(bytes(header.payload[info.data_offset:]))
            except ProtocolError as exc:
                self.close_viewer(f"bad AudioSpecificConfig: {exc}")
                return False
        else:
            viewer.fmt = MP3
        return True


async def serve_audio(
    config: Config, hub: Hub, access: Access, req: Request, conn: HTTPConnection
) -> Response | None:
    """A live ``.mp3``/``.aac`` URL; ``NotImplemented`` when it is rather a file (no such stream, and a file of
    that name under the HTTP server's directory)."""
    suffix = req.path[-4:]
    protocol, ctype, codec = KINDS[suffix]
    sreq = resolve(config, req, suffix)
    if sreq is None:
        return NotImplemented  # type: ignore[return-value]
    refused = refuse_bad_name(req, sreq, protocol)
    if refused is not None:
        return refused
    if sreq.key not in hub.streams and await asyncio.to_thread(_is_file, Path(config.http_server.dir), req.path):
        return NotImplemented  # type: ignore[return-value]  # a music file, not a live stream
    answer = not_a_viewer(req, ctype)
    if answer is not None:
        return answer
    owner = AudioViewerOwner(conn, codec)

    def open_body(viewer: Viewer) -> Response | None:
        conn.start_stream(200, [("Content-Type", ctype), ("Cache-Control", "no-cache"), *CORS])
        viewer.starting = owner.starting
        return None

    client_event(log, "audio-request", "-", conn.ip, sreq.key, level=logging.DEBUG, protocol=protocol)
    return await admit_http_viewer(config, hub, access, req, conn, sreq, owner, protocol, MP3, open_body, log)


def _is_file(root: Path, path: str) -> bool:
    try:
        base = root.resolve()
        target = (base / path.lstrip("/")).resolve()
        target.relative_to(base)
        return target.is_file()
    except (OSError, ValueError):
        return False
