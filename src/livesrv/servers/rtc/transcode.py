"""Audio for WebRTC, once per stream: AAC (RTMP, FLV) to Opus for WHEP viewers, Opus (a WHIP publisher) to AAC
for everyone else. PyAV (FFmpeg's AAC decoder and encoder, libopus), run in a worker thread so the event loop
never waits on a codec; :class:`Worker` keeps each stream's frames in order and bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any, Final

import av

log = logging.getLogger("livesrv.rtc")

OPUS_RATE: Final = 48000
OPUS_FRAME: Final = 960  # 20 ms: what browsers send and expect
AAC_FRAME: Final = 1024
#: Frames waiting for one stream's worker; past this the oldest are dropped (a codec that cannot keep up).
MAX_PENDING: Final = 200
#: A jump between a frame's timestamp and where the encoded samples are, in ms, that re-bases the output (a
#: republish, a publisher's discontinuity) instead of being smoothed away.
REBASE_MS: Final = 200

#: One thread for every stream's audio: the work is small (about 1-2% of a core per stream) and FFmpeg's codecs
#: release the GIL, so the event loop goes on meanwhile.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livesrv-audio")


class _Transcoder:
    """Decode, resample, re-frame (an AudioFifo: the two codecs' frame sizes differ) and encode, stereo 48 kHz,
    keeping the output's timestamps on the input's clock. Subclasses set the codecs and ``frame``."""

    frame: int  # samples per encoded frame

    def __init__(self, decoder: Any, fmt: str, encoder: str, bitrate: int, options: dict[str, str] | None) -> None:
        self.decoder = decoder
        self.resampler = av.AudioResampler(format=fmt, layout="stereo", rate=OPUS_RATE)
        enc = self.encoder = av.CodecContext.create(encoder, "w")
        enc.sample_rate = OPUS_RATE
        enc.layout = "stereo"
        enc.format = fmt
        enc.bit_rate = bitrate
        enc.time_base = Fraction(1, OPUS_RATE)
        if options:
            enc.options = options
        enc.open()
        self.fifo = av.AudioFifo()
        self.next_pts: int | None = None  # in 1/48000, of the next sample out of the fifo

    def _transcode(self, pkt: Any, ms: int) -> list[tuple[bytes, int]]:
        """``pkt`` (input at ``ms``) -> the encoded frames it completes, as ``(payload, pts in 1/48000)``."""
        at = ms * (OPUS_RATE // 1000)
        queued = self.fifo.samples
        if self.next_pts is None or abs(self.next_pts + queued - at) > REBASE_MS * OPUS_RATE // 1000:
            self.next_pts = at - queued
        out: list[tuple[bytes, int]] = []
        for frame in self.decoder.decode(pkt):
            for rs in self.resampler.resample(frame):
                rs.pts = None
                self.fifo.write(rs)
        while self.fifo.samples >= self.frame:
            frame = self.fifo.read(self.frame)
            frame.pts = self.next_pts
            frame.time_base = Fraction(1, OPUS_RATE)
            self.next_pts += self.frame
            for p in self.encoder.encode(frame):
                out.append((bytes(p), int(p.pts if p.pts is not None else frame.pts)))
        return out


class AacToOpus(_Transcoder):
    """Decodes AAC frames (their AudioSpecificConfig from the sequence header) and encodes 20 ms Opus packets,
    stereo 48 kHz, with their timestamps in 1/48000."""

    frame = OPUS_FRAME

    def __init__(self, asc: bytes, bitrate: int = 48000) -> None:
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = asc
        super().__init__(decoder, "s16", "libopus", bitrate, {"application": "lowdelay", "frame_duration": "20"})

    def feed(self, raw: bytes, ms: int) -> list[tuple[bytes, int]]:
        """One raw AAC frame at ``ms`` -> the Opus packets it completes, as ``(payload, pts in 1/48000)``."""
        pkt = av.Packet(raw)
        pkt.pts = pkt.dts = ms
        pkt.time_base = Fraction(1, 1000)
        return self._transcode(pkt, ms)


class OpusToAac(_Transcoder):
    """Decodes Opus packets (what a WHIP publisher sends) and encodes AAC-LC frames, stereo 48 kHz, with their
    timestamps in ms. ``asc`` is the encoder's AudioSpecificConfig, for the FLV sequence header."""

    frame = AAC_FRAME

    def __init__(self, bitrate: int = 48000) -> None:
        decoder = av.CodecContext.create("libopus", "r")
        decoder.sample_rate = OPUS_RATE
        decoder.layout = "stereo"
        super().__init__(decoder, "fltp", "aac", bitrate, None)
        self.asc = bytes(self.encoder.extradata or b"")

    def feed(self, payload: bytes, ms: int) -> list[tuple[bytes, int]]:
        """One Opus packet at ``ms`` -> the AAC frames it completes, as ``(raw frame, ms)``."""
        pkt = av.Packet(payload)
        pkt.pts = pkt.dts = ms * (OPUS_RATE // 1000)
        pkt.time_base = Fraction(1, OPUS_RATE)
        return [(data, pts * 1000 // OPUS_RATE) for data, pts in self._transcode(pkt, ms)]


class Worker:
    """Runs one stream's transcoding calls in the audio thread, one at a time and in order; ``deliver`` gets
    each call's result back on the event loop. Bounded: a codec that cannot keep up loses the oldest frames."""

    def __init__(self, name: str, deliver: Callable[[Any], None]) -> None:
        self.name = name
        self.deliver = deliver
        self.pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self.running = False
        self.closed = False
        self.dropped = 0
        self.failed: str | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.closed or self.failed is not None:
            return
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((fn, args))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"audio {self.name}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending and not self.closed:
                fn, args = self.pending.popleft()
                try:
                    result = await loop.run_in_executor(_EXECUTOR, fn, *args)
                except (av.FFmpegError, ValueError) as exc:  # a bad frame: skipped, the next may decode
                    log.debug("event=rtc-audio-frame-error stream=%s reason=%r", self.name, str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - isolated: this stream's audio stops, nothing else
                    self.failed = repr(exc)
                    log.error("event=rtc-audio-failed stream=%s reason=%r", self.name, self.failed)
                    return
                if not self.closed:
                    self.deliver(result)
        finally:
            self._task = None

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
