"""HTTP-TS viewers (``GET /app/stream.ts``, SRS ``http_remux``), on the hub's fan-out like HTTP-FLV ones.

One :class:`TsOutput` per stream, attached while the stream has HTTP-TS viewers, feeds ONE
:class:`~livesrv.codec.mpegts.TSMuxer` with every packet, in order, and keeps each packet's TS bytes on the
packet (PAT/PMT in front of every keyframe, and every second of a stream without video). The fan-out then
serves HTTP-TS viewers exactly as it serves FLV ones: the :data:`~livesrv.media.formats.TS` format joins those
bytes once per batch, every viewer in step writes the same bytes object, a joiner or a viewer that fell behind
restarts at a keyframe (after the program tables, written by its ``starting`` hook), and a viewer whose socket
would pass ``rtmp_limits.max_write_buffer`` skips to the next keyframe. They hold the stream, wait for a
publisher, get the republish grace, and are listed and kicked like every other viewer.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

from livesrv.codec.errors import ProtocolError
from livesrv.codec.mpegts import TSMuxer
from livesrv.hub.stream import Stream
from livesrv.media.formats import TS
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from livesrv.servers.flv import refuse_bad_name, resolve
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.http_viewer import CORS, HttpViewerOwner, admit_http_viewer, not_a_viewer

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub
    from livesrv.hub.stream import Viewer

log = logging.getLogger("livesrv.ts")

TS_TYPE: Final = "video/mp2t"
#: Stream time (ms) between PAT/PMT repeats in an HTTP-TS stream without video.
TS_AUDIO_PSI_INTERVAL_MS: Final = 1000
#: ``stream.extra`` key of the stream's :class:`TsOutput`.
TS_EXTRA: Final = "http-ts"


class TsOutput:
    """One stream's MPEG-TS muxing, while it has HTTP-TS viewers (an output of the stream: see hub.stream)."""

    name = "http-ts"
    linger = None  # it lives while the stream has HTTP-TS viewers, not after

    def __init__(self, stream: Stream) -> None:
        self.muxer = TSMuxer()
        self.viewers = 0
        self.dropped = 0  # packets the muxer rejected
        self._last_psi_ms: int | None = None
        self._prefix = b""  # to go in front of the next packet's bytes (the end of a publisher's program)
        gop = stream.gop
        for pkt in (gop.video_header, gop.audio_header, *gop.gop):  # joined mid-stream: what the GOP holds
            if pkt is not None:
                self.on_packet(pkt)

    # ------------------------------------------------------------------------------------ output

    def start(self, stream: Stream) -> None:
        """A new publisher: its headers replace the codecs; players see a discontinuity."""
        self._prefix += self.muxer.discontinuity() + self.muxer.reset_codecs()
        self._last_psi_ms = None

    async def end(self, stream: Stream, generation: int) -> None:
        pass  # nothing is buffered beyond the packets already muxed

    def dispose(self) -> None:
        pass

    def on_packet(self, pkt: MediaPacket) -> None:
        kind = pkt.kind
        if kind != VIDEO and kind != AUDIO:
            return
        muxer = self.muxer
        head = b""
        if not pkt.sequence_header:
            if kind == VIDEO:
                if pkt.keyframe:
                    head = muxer.psi()  # PAT/PMT in front of every keyframe: where players can start
            elif not muxer.has_video:
                last = self._last_psi_ms
                if last is None or pkt.timestamp - last >= TS_AUDIO_PSI_INTERVAL_MS or pkt.timestamp < last:
                    head = muxer.psi()
                    self._last_psi_ms = pkt.timestamp
        try:
            body = muxer.mux(pkt)
        except ProtocolError:
            self.dropped += 1
            body = b""
        data = head + body
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        pkt.mpegts = data or None

    # ------------------------------------------------------------------------------------ viewers

    def program(self) -> bytes:
        """PAT and PMT for a joining viewer (not advancing the shared continuity counters)."""
        muxer = self.muxer
        return muxer.psi(advance=False) if muxer.has_video or muxer.has_audio else b""


class TsViewerOwner(HttpViewerOwner):
    """An HTTP-TS viewer: before each (re)start at a random access point it gets the program tables."""

    def __init__(self, conn: HTTPConnection, output: TsOutput | None = None) -> None:
        super().__init__(conn)
        self.output = output

    def starting(self, stream: Stream) -> bool:
        """A stream with video restarts a viewer at a keyframe, whose bytes begin with PAT/PMT; audio-only, at
        any audio packet: the program tables go first."""
        output = self.output
        viewer = self.viewer
        if output is not None and viewer is not None and not stream.has_video:
            psi = output.program()
            if psi:
                viewer.write(psi)
        return True


def _segment_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the names ``hls_ts_file`` produces (to tell a segment URL from an HTTP-TS one)."""
    out = re.escape(template)
    for var, rx in (("[vhost]", r"[^/]+"), ("[app]", r".+"), ("[stream]", r"[^/]+"), ("[seq]", r"\d+"),
                    ("[timestamp]", r"\d+")):
        out = out.replace(re.escape(var), rx)
    return re.compile(out)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def looks_like_segment(config: Config, vhost_name: str, rel: str) -> bool:
    """Could ``rel`` be an HLS segment of this vhost (a file, served by the static server when it exists)?"""
    hls = config.vhost(vhost_name).hls
    if not hls.enabled:
        return False
    pattern = _PATTERNS.get(hls.hls_ts_file)
    if pattern is None:
        pattern = _PATTERNS[hls.hls_ts_file] = _segment_pattern(hls.hls_ts_file)
    return pattern.fullmatch(rel.lstrip("/")) is not None


async def serve_ts(config: Config, hub: Hub, access: Access, req: Request, conn: HTTPConnection) -> Response | None:
    """A live ``.ts`` URL; ``NotImplemented`` when the path is rather a file (an old HLS segment, a VOD)."""
    sreq = resolve(config, req, ".ts")
    if sreq is not None and (refused := refuse_bad_name(req, sreq, "ts")) is not None:
        return refused
    if sreq is None or (sreq.key not in hub.streams and looks_like_segment(config, sreq.key.vhost, req.path)):
        return NotImplemented  # type: ignore[return-value]
    answer = not_a_viewer(req, TS_TYPE)
    if answer is not None:
        return answer
    owner = TsViewerOwner(conn)

    def open_body(viewer: Viewer) -> Response | None:
        stream = viewer.stream
        assert stream is not None
        output = owner.output = join_output(stream)
        conn.on_close.append(lambda: leave_output(stream, output))
        conn.start_stream(200, [("Content-Type", TS_TYPE), *CORS, ("Cache-Control", "no-cache")])
        viewer.starting = owner.starting
        return None

    return await admit_http_viewer(config, hub, access, req, conn, sreq, owner, "ts", TS, open_body, log)


def join_output(stream: Stream) -> TsOutput:
    """The stream's HTTP-TS output for one more viewer (created, and attached to the stream, for the first)."""
    output = stream.extra.get(TS_EXTRA)
    if not isinstance(output, TsOutput):
        output = stream.extra[TS_EXTRA] = TsOutput(stream)
        stream.add_output(output)
    output.viewers += 1
    return output


def leave_output(stream: Stream, output: TsOutput) -> None:
    """An HTTP-TS viewer left: with none left, no muxing."""
    output.viewers -= 1
    if output.viewers <= 0 and stream.extra.get(TS_EXTRA) is output:
        del stream.extra[TS_EXTRA]
        stream.remove_output(output)
