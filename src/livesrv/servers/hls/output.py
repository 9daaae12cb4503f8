"""One stream key's HLS output: its segmenter, its writer, and what may be served of it.

An :class:`HlsState` is owned by the HLS service rather than by a :class:`~livesrv.hub.stream.Stream`: the
playlist must survive a republish (and a new Stream object) so the next publisher continues it after an
``#EXT-X-DISCONTINUITY``. Its :class:`HlsOutput` is the stream's output (see ``hub.stream.Output``): the hub
starts it when a publisher goes live, feeds it every packet, awaits its ``end`` (the last segment written)
while the stream drains, concurrently with the hooks, and disposes it (deletes the files) ``hls_dispose``
seconds later unless a new publisher of the key continued it first: that wait is the hub's, cancelled in the
new period's READY step, so no timer of an old period can delete a newer one's files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from livesrv.config import HlsConfig
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import REPUBLISH_GAP_MS, Stream
from livesrv.log import event
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from livesrv.remux.hls import HlsSegmenter
from livesrv.servers.hls.files import HlsWriter

log = logging.getLogger("livesrv.hls")

#: Seconds the drain waits for the last segment and playlist to reach the disk.
FINISH_TIMEOUT = 10.0


class _Shifted:
    """A packet on the HLS state's own timeline (see :class:`HlsOutput`)."""

    __slots__ = ("kind", "timestamp", "payload")

    def __init__(self, kind: int, timestamp: int, payload: bytes) -> None:
        self.kind = kind
        self.timestamp = timestamp
        self.payload = payload


class HlsState:
    """One stream key's HLS output; outlives Stream objects (republish) until disposed."""

    def __init__(self, key: StreamKey, config: HlsConfig, segmenter: HlsSegmenter, writer: HlsWriter,
                 dispose: Callable[[HlsState], None]) -> None:
        self.key = key
        self.config = config
        self.segmenter = segmenter
        self.writer = writer
        self.root = writer.root
        self.live_for: tuple[Stream, int] | None = None  # (stream, generation) feeding it now
        self.playlist_body: bytes | None = None  # as last written to disk
        self.errors = 0  # packets the segmenter failed on, skipped
        self.last_ts = -1  # newest timestamp fed, on this state's timeline (across publish periods)
        self.stamp_names = "[timestamp]" in config.hls_ts_file
        #: (workers) Another worker owns the key now and writes its files (HlsService.forget).
        self.disowned = False
        self.output = HlsOutput(self, dispose)

    @property
    def playlist_name(self) -> str:
        return self.segmenter.playlist_name

    def info(self) -> dict[str, Any]:
        segs = self.segmenter.segments
        return {
            "playlist": "/" + self.playlist_name,
            "live": self.live_for is not None,
            "segments": len(segs),
            "media_sequence": segs[0].sequence if segs else None,
            "duration": round(sum(s.duration for s in segs), 3),
            "write_errors": self.writer.errors,
        }

    def finish(self) -> None:
        """The live period is over: the last segment and the playlist go to the writer."""
        self.live_for = None
        if self.disowned:
            # (workers) Taken over by another worker, which writes the key's files now: no last segment or
            # playlist over its own; the writer ends, deleting the open segment's part.
            self.writer.close()
            return
        self.writer.submit(self.segmenter.finish())


class HlsOutput:
    """The stream's HLS output.

    The playlist's timeline never goes back: a period whose first frame is earlier than the end of the
    previous one (a new Stream object after the old one was collected restarts at 0) is shifted to follow it.
    ``EXT-X-DISCONTINUITY`` would allow a reset, but players that ignore it (FFmpeg) would see time go back.
    """

    name = "hls"
    owner_only = True  # (workers: one writer of the files)

    def __init__(self, state: HlsState, dispose: Callable[[HlsState], None]) -> None:
        self.state = state
        self._dispose = dispose  # the service deletes the files and forgets the state
        self.offset: int | None = None

    @property
    def linger(self) -> float | None:
        """``hls_dispose``: the files stay that long after the publisher left (0: for ever, as SRS)."""
        delay = self.state.config.hls_dispose
        return delay if delay > 0 else None

    def dispose(self) -> None:
        self._dispose(self.state)

    def start(self, stream: Stream) -> None:
        state = self.state
        state.writer.submit(state.segmenter.discontinuity())  # after a republish: EXT-X-DISCONTINUITY
        state.live_for = (stream, stream.generation)
        self.offset = None
        event(log, "hls-live", stream=state.key, generation=stream.generation,
              playlist=os.path.join(state.root, state.playlist_name))

    def on_packet(self, pkt: MediaPacket) -> None:
        state = self.state
        kind = pkt.kind
        if state.live_for is None or (kind != VIDEO and kind != AUDIO):
            return
        ts = pkt.timestamp
        offset = self.offset
        if offset is None:
            end = state.last_ts + REPUBLISH_GAP_MS if state.last_ts >= 0 else 0
            offset = self.offset = end - ts if ts < end else 0
        if offset:
            ts += offset
            pkt = _Shifted(kind, ts, pkt.payload)  # type: ignore[assignment]
        if ts > state.last_ts:
            state.last_ts = ts
        try:
            actions = state.segmenter.feed(pkt, int(time.time() * 1000) if state.stamp_names else None)
        except Exception:  # noqa: BLE001 - a packet the segmenter cannot take is skipped, counted, logged once
            state.errors += 1
            if state.errors == 1:
                event(log, "hls-error", logging.ERROR, exc_info=True, stream=state.key)
            return
        if actions:
            state.writer.submit(actions)

    async def end(self, stream: Stream, generation: int) -> None:
        """The period of ``generation`` ended: its last segment and playlist reach the disk (bounded)."""
        state = self.state
        if state.live_for != (stream, generation):
            return  # a newer publisher feeds it now (takeover), or it was disposed: not ours to finish
        state.finish()
        if state.disowned:
            return
        try:
            await asyncio.wait_for(state.writer.flush(), FINISH_TIMEOUT)
        except asyncio.TimeoutError:
            event(log, "hls-finish-timeout", logging.WARNING, stream=state.key)
