"""Still pictures of live streams for the web pages: the GOP cache's keyframe, decoded and made a small JPEG.

Cheap by construction: one keyframe is decoded (never a GOP, never a running decoder), by PyAV (FFmpeg, in C)
in a worker thread, one picture at a time for the whole server, and at most once per stream every
:data:`MIN_INTERVAL` seconds however many pages ask; the picture is kept with the stream (it goes when the
stream goes). A 1280x720 H.264 keyframe costs about 10 ms. Whatever FFmpeg decodes (H.264, HEVC, AV1 over
Enhanced RTMP) gives a picture; an audio-only stream, or a keyframe that does not decode, gives none.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from fractions import Fraction

from livesrv.codec import flv
from livesrv.hub.stream import Stream
from livesrv.log import event
from livesrv.media.packet import VIDEO

log = logging.getLogger("livesrv.web")

#: Seconds a picture is kept before a newer keyframe replaces it.
MIN_INTERVAL = 5.0
#: Width of the pictures, in pixels (the height keeps the aspect ratio).
WIDTH = 320
_SLOT = "web.thumbnail"


class Thumbnails:
    def __init__(self, min_interval: float = MIN_INTERVAL, width: int = WIDTH) -> None:
        self.min_interval = min_interval
        self.width = width
        self._one_at_a_time = asyncio.Lock()
        self.rendered = 0  # pictures made (for tests and curiosity)

    async def jpeg(self, stream: Stream) -> bytes | None:
        """The stream's current picture, or None (no video, no keyframe cached, or it does not decode)."""
        gop, now = stream.gop, time.monotonic()
        cached = stream.extra.get(_SLOT)  # (keyframe packet, when, jpeg or None)
        key = gop.gop[0] if gop.gop and gop.gop[0].kind == VIDEO and gop.gop[0].keyframe else None
        if cached is not None and (cached[0] is key or now - cached[1] < self.min_interval):
            return cached[2]
        if key is None or gop.video_header is None:
            return cached[2] if cached is not None else None
        header = gop.video_header
        async with self._one_at_a_time:
            cached = stream.extra.get(_SLOT)
            if cached is not None and (cached[0] is key or time.monotonic() - cached[1] < self.min_interval):
                return cached[2]  # made meanwhile, for another page
            data = flv.file_header(has_audio=False) + flv.encode_tag(VIDEO, key.timestamp, header.payload) \
                + flv.encode_tag(VIDEO, key.timestamp, key.payload)
            try:
                jpeg = await asyncio.to_thread(render, data, self.width)
            except Exception as exc:  # noqa: BLE001  a picture that does not decode costs the picture only
                event(log, "thumbnail-failed", logging.DEBUG, stream=stream.key, reason=str(exc)[:200])
                jpeg = None
            self.rendered += 1
            stream.extra[_SLOT] = (key, time.monotonic(), jpeg)
            return jpeg


def render(flv_bytes: bytes, width: int = WIDTH) -> bytes | None:
    """The first video frame of a small FLV (sequence header + keyframe) as a JPEG ``width`` pixels wide."""
    import av  # FFmpeg's decoders and its MJPEG encoder

    with av.open(io.BytesIO(flv_bytes), "r", format="flv") as container:
        if not container.streams.video:
            return None
        for frame in container.decode(video=0):
            w = max(2, min(width, frame.width) // 2 * 2)
            h = max(2, round(frame.height * w / frame.width / 2) * 2)
            small = frame.reformat(width=w, height=h, format="yuvj420p")
            enc = av.CodecContext.create("mjpeg", "w")
            enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
            enc.time_base = Fraction(1, 1)
            enc.options = {"qmin": "2", "qmax": "6"}
            return b"".join(bytes(p) for p in (*enc.encode(small), *enc.encode(None)))
    return None
