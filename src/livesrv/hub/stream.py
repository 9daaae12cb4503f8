"""One stream: its state, its generation, its viewers, and the fan-out of its media.

The fan-out is the server's hot path. Incoming packets are appended to a pending batch; every ``mw_latency``
(SRS's merged-write interval; 0 for per-message delivery) the batch is flushed: for each output format the
batch is serialized and joined ONCE, and every viewer that is in step writes that same bytes object. A viewer
that is not in step (it just joined, it fell behind, a new publisher started) catches up on its own once —
from the batch tail, or at the next keyframe with fresh headers — and then shares the batches again. Its
backlog is its transport's buffer: a batch goes only to a viewer whose buffer is empty or stays under its
limit; any other viewer skips the batch and rejoins at a keyframe, so a viewer costs at most its limit plus
one batch, and the decoder never sees a broken GOP. A viewer that keeps skipping is closed by the hub's sweep.

A viewer, whatever protocol it plays over, is one :class:`Viewer`: the fan-out touches only its slots on the
hot path (cursor, blocked, fmt, transport, send_bytes): no queue of message objects, no per-viewer task or
timer. The protocol server that owns the connection implements :class:`ViewerOwner` for the few
notifications that are protocol-specific.

State changes are made only by :class:`livesrv.hub.hub.Hub` through :func:`livesrv.hub.states.transition`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livesrv.hub.clients import HookContext
from livesrv.hub.keys import StreamKey
from livesrv.hub.states import State
from livesrv.log import event
from livesrv.media.formats import Format
from livesrv.media.gop import GopCache
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket
from livesrv.media.tracks import Tracks, guess_tracks

log = logging.getLogger("livesrv.hub")
_LIVE = State.LIVE  # a module global: Stream.ingest compares with it for every packet

#: Gap left between the last timestamp of one publisher and the first of the next, in ms, so that players
#: see time move forward across a republish.
REPUBLISH_GAP_MS = 40
#: A step between two consecutive timestamps larger than this (either way) is a publisher's discontinuity
#: (a wrap, a negative timestamp sent as 2**32 - x, an encoder restart), not time passing: it becomes
#: DEFAULT_STEP_MS, as SRS's ``time_jitter full`` does (SRS uses 250 ms; a wider bound keeps 1 fps slides).
MAX_JITTER_MS = 3000
DEFAULT_STEP_MS = 10


# ------------------------------------------------------------------------------------------- viewers

#: ``Viewer.cursor`` values below zero: the viewer is not in step with the shared batches.
NEED_KEYFRAME = -1  # rejoin at the next keyframe (joined without a GOP, fell behind, paused, new publisher)
PENDING = -2  # registered (it holds the stream) but not admitted yet: its on_play hook is being awaited


class ViewerOwner(Protocol):
    """The connection behind a viewer."""

    def publisher_left(self, stream: Stream) -> None:
        """The stream lost its publisher; the viewer stays attached for the grace period."""

    def publisher_arrived(self, stream: Stream) -> None:
        """A (new) publisher's media will follow."""

    def close_viewer(self, reason: str) -> None:
        """The hub wants this viewer gone (grace over, kicked, stream deleted, stalled): close the connection.
        The owner then calls :meth:`Hub.detach`, as on any other close."""


class Viewer:
    __slots__ = (
        "cid", "ip", "protocol", "fmt", "transport", "owner", "stream", "cursor", "blocked", "stalled_since",
        "wait_deadline", "send_bytes", "dropped", "created", "param", "detached", "limit", "starting",
    )

    def __init__(
        self, cid: str, ip: str, protocol: str, fmt: Format, transport: Any, owner: ViewerOwner, param: str = ""
    ) -> None:
        self.cid = cid
        self.ip = ip
        self.protocol = protocol  # "rtmp", "flv", "ws-flv", ...: for the API and logs
        self.fmt = fmt
        self.transport = transport  # anything with write(bytes); back-pressure sets ``blocked``
        self.owner = owner
        self.stream: Stream | None = None
        self.cursor = PENDING
        self.blocked = False  # the transport's buffer is above its high-water mark (pause_writing)
        self.stalled_since: float | None = None
        self.wait_deadline: float | None = None  # closed at this time unless a publisher is live
        self.send_bytes = 0
        self.dropped = 0  # packets skipped because the viewer was behind
        self.created = 0.0
        self.param = param
        self.detached = False
        # Bytes the transport may hold for this viewer: a batch that would go past it is skipped (the viewer
        # rejoins at a keyframe), so a stuck viewer costs at most this much memory.
        self.limit = 4 * 1024 * 1024
        # Called by the stream right before the viewer (re)starts at a random access point with fresh headers
        # (its first media, after a skip, with a new publisher). It may write a prelude and change ``fmt`` (the
        # FLV header, whose track flags can only be known once media is there); False: the owner closed it.
        self.starting: Callable[[Stream], bool] | None = None

    def write(self, data: bytes) -> None:
        self.send_bytes += len(data)
        self.transport.write(data)

    def pause(self, now: float) -> None:
        """The transport's buffer went over its limit: skip batches until it drains, then rejoin at a keyframe."""
        self.blocked = True
        if self.stalled_since is None:
            self.stalled_since = now

    def resume(self) -> None:
        self.blocked = False
        self.stalled_since = None

    def __repr__(self) -> str:
        return f"<Viewer {self.cid} {self.protocol} cursor={self.cursor}>"


# ------------------------------------------------------------------------------------------- streams


class Publisher(Protocol):
    """The connection that publishes a stream, as the hub sees it."""

    @property
    def cid(self) -> str: ...

    @property
    def ip(self) -> str: ...

    @property
    def context(self) -> HookContext:
        """What on_unpublish, on_hls and the API report about it."""

    def kick(self, reason: str) -> None:
        """Close the publishing connection (takeover, operator kick, stream deleted). Must not block."""


class Output(Protocol):
    """Something a stream feeds besides its viewers, once per stream (not per viewer): the HLS segmenter, the
    HTTP-TS muxer, the forwards (clients/forward.py), and later DVR files.

    The hub tells it when a live period starts (:meth:`start`, inside the READY step) and ends (:meth:`end`,
    awaited while the stream is DRAINING, concurrently with the other outputs and the hooks). It is isolated:
    an output that raises is detached with one log line, and the publisher, the viewers and the other outputs
    go on. ``on_packet`` runs inside the publisher's ingest: it must not block or do I/O.
    """

    name: str
    #: (an optional class attribute) True for what only a stream's owner may do under ``workers N``: write its
    #: files (HLS, DVR) or push it elsewhere (forward). A worker's copy of another worker's stream has none.
    #: owner_only: bool
    #: Seconds the output outlives a live period before :meth:`dispose` (HLS files: ``hls_dispose``); None:
    #: it is never disposed by the hub. A new live period of the same stream key cancels the wait.
    linger: float | None

    def start(self, stream: Stream) -> None:
        """A (new) publisher's media follows."""

    def on_packet(self, pkt: MediaPacket) -> None:
        """Every packet of the live period, in order (metadata included)."""

    async def end(self, stream: Stream, generation: int) -> None:
        """The live period of ``generation`` ended (unpublish, or a takeover: then a newer period may already
        have started, and this call must not touch it)."""

    def dispose(self) -> None:
        """No publisher came back for ``linger`` seconds: let go of what the output keeps (files, state)."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What a stream needs from its vhost's config, fixed when the stream is created."""

    gop_cache: bool = True
    gop_max_frames: int = 2500
    flush_interval: float = 0.35  # seconds between merged writes (SRS mw_latency); 0: per message
    takeover: bool = True  # a new publisher replaces the current one (off: refused, "stream busy")
    republish_grace: float = 30.0  # seconds viewers stay attached after the publisher left
    wait_timeout: float = 30.0  # seconds a viewer waits for a first publisher
    stall_timeout: float = 30.0  # seconds a viewer may not read before it is closed


class Stream:
    __slots__ = ("settings", "clock", 
        "key", "state", "generation", "publisher", "param", "viewers", "gop", "metadata", "pending",
        "flushed_seq", "next_seq", "flush_interval", "_flush_handle", "_schedule", "_last_in", "_last_out", "last_ts",
        "has_video", "has_audio", "outputs", "created", "live_since", "stats", "extra", "_resume_pending",
    )

    def __init__(
        self,
        key: StreamKey,
        settings: StreamSettings,
        schedule: Callable[[float, Callable[[], None]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.key = key
        self.settings = settings
        self.state = State.IDLE
        self.generation = 0  # bumped on each PUBLISH; stale completions carry an older number
        self.publisher: Publisher | None = None
        self.param = ""
        self.viewers: dict[str, Viewer] = {}
        self.gop = GopCache(settings.gop_cache, settings.gop_max_frames)
        self.metadata: dict[str, object] = {}
        self.pending: list[MediaPacket] = []
        self.flushed_seq = 0  # sequence number of the first packet of the pending batch
        self.next_seq = 0  # sequence number the next ingested packet gets
        self.flush_interval = settings.flush_interval
        self._flush_handle: Any = None
        self._schedule = schedule
        self._last_in: int | None = None  # the publisher's last timestamp (this generation)
        self._last_out = 0  # what it became
        self.last_ts = -1  # highest timestamp sent out (across generations)
        self.has_video = False  # a packet of the track (sequence header included) came in this generation
        self.has_audio = False
        self._resume_pending = False  # a new generation's first keyframe goes out at once, not at the next batch
        self.outputs: list[Output] = []  # attached by services; see Hub.output_providers
        self.created = time.time()
        self.live_since = 0.0
        self.stats = StreamStats()
        self.extra: dict[str, Any] = {}  # per-stream state of other subsystems, keyed by their name

    # ----------------------------------------------------------------------------------- queries

    @property
    def live(self) -> bool:
        return self.state is State.LIVE

    def tracks(self) -> Tracks:
        """The tracks this generation's publisher sends, as far as known (see :mod:`livesrv.media.tracks`)."""
        return guess_tracks(self.has_audio, self.has_video, self.metadata, self.gop.gop)

    def __repr__(self) -> str:
        return f"<Stream {self.key} {self.state.value} gen={self.generation} viewers={len(self.viewers)}>"

    # ---------------------------------------------------------------------------------- ingest

    def ingest(self, generation: int, pkt: MediaPacket) -> bool:
        """Take one packet from the publisher of ``generation``. False (and dropped) if that is not the live one."""
        if generation != self.generation or self.state is not _LIVE:
            return False
        ts = self._retime(pkt.timestamp)
        if ts != pkt.timestamp:
            pkt = MediaPacket(pkt.kind, ts, pkt.payload, pkt.keyframe, pkt.sequence_header)
        if ts > self.last_ts:
            self.last_ts = ts
        # StreamStats.count, inlined: this runs for every message of every publisher.
        stats = self.stats
        stats.recv_bytes += len(pkt.payload)
        kind = pkt.kind
        if kind == VIDEO:
            self.has_video = True
            stats.video_frames += 1
        elif kind == AUDIO:
            self.has_audio = True
            stats.audio_frames += 1
        self._append(pkt)
        return True

    def _retime(self, ts_in: int) -> int:
        """The outgoing timestamp: every generation starts just after the last one (0 for the first), and
        follows its publisher's steps except discontinuities, so viewers only ever see time move forward."""
        last_in = self._last_in
        if last_in is None:
            out = self.last_ts + REPUBLISH_GAP_MS if self.last_ts >= 0 else 0
        else:
            delta = ((ts_in - last_in + 0x80000000) & 0xFFFFFFFF) - 0x80000000  # RTMP timestamps wrap at 2**32
            if delta > MAX_JITTER_MS or delta < -MAX_JITTER_MS:
                delta = DEFAULT_STEP_MS
            out = self._last_out + delta
        self._last_in = ts_in
        self._last_out = out
        return out if out > 0 else 0

    def set_metadata(self, generation: int, metadata: dict[str, object], pkt: MediaPacket) -> bool:
        """``@setDataFrame onMetaData``: kept for new viewers and sent to current ones (at time 0, see rtmp)."""
        if generation != self.generation or self.state is not State.LIVE:
            return False
        self.metadata = metadata
        self.gop.set_metadata(pkt)
        self._append(pkt)
        return True

    def _append(self, pkt: MediaPacket) -> None:
        if pkt.kind != DATA:
            self.gop.add(pkt)
        if self.outputs:
            failed = None
            for output in self.outputs:
                try:
                    output.on_packet(pkt)
                except Exception as exc:  # one output's bug must not cost the publisher or anyone else
                    failed = (output, exc)
            if failed is not None:
                self.output_failed(*failed)
        self.next_seq += 1
        if not self.pending and not self.viewers:
            # Nobody to send a batch to: the packet counts as sent at once, and no flush is scheduled. A viewer
            # that comes starts from the GOP cache at next_seq, as it would after a flush.
            self.flushed_seq = self.next_seq
            if self._resume_pending and pkt.keyframe and not pkt.sequence_header:
                self._resume_pending = False
            return
        self.pending.append(pkt)
        if self.flush_interval <= 0 or self._schedule is None:
            self.flush()
        elif self._resume_pending and pkt.keyframe and not pkt.sequence_header:
            self._resume_pending = False  # viewers waiting through a republish resume now
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = self._schedule(self.flush_interval, self._timer_flush)

    def _timer_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    # --------------------------------------------------------------------------------- fan-out

    def flush(self) -> None:
        """Send the pending batch to every viewer: the shared bytes to those in step, catch-up to the others."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pkts = self.pending
        if not pkts:
            return
        self.pending = []
        start = self.flushed_seq
        end = self.flushed_seq = start + len(pkts)
        if not self.viewers:
            return
        # The loop below runs once per viewer per batch: it keeps to local variables, remembers the bytes of
        # the last format it met (streams usually have one or two), and inlines ``_over``.
        shared: dict[Format, bytes] = {}
        fmt: Format | None = None
        data = b""
        size = 0
        for v in list(self.viewers.values()):
            if v.cursor != start:
                self._catch_up(v, pkts, start, end)
                continue
            if v.fmt is not fmt:
                fmt = v.fmt
                got = shared.get(fmt)
                if got is None:
                    got = shared[fmt] = fmt.encode(pkts)
                data = got
                size = len(data)
            if v.blocked:
                self._fell_behind(v, len(pkts))
                continue
            transport = v.transport
            buffered = transport.get_write_buffer_size()  # _over(v, size), inlined
            if buffered > 0 and buffered + size > v.limit:
                self._fell_behind(v, len(pkts))
                continue
            v.send_bytes += size
            transport.write(data)
            v.cursor = end

    def _catch_up(self, v: Viewer, pkts: list[MediaPacket], start: int, end: int) -> None:
        cursor = v.cursor
        if cursor == PENDING:
            return
        if v.blocked:
            if cursor != NEED_KEYFRAME:
                v.cursor = NEED_KEYFRAME
            v.dropped += len(pkts)
            return
        if start < cursor <= end:  # joined during this batch: it already has the head from the GOP cache
            tail = pkts[cursor - start :]
            if tail and not self._write_within_limit(v, v.fmt.encode(tail)):
                self._fell_behind(v, len(tail))
                return
            v.cursor = end
            return
        k = self._first_random_access(pkts)
        if k is None:
            v.dropped += len(pkts)
            v.cursor = NEED_KEYFRAME
            return
        if v.starting is not None and not v.starting(self):
            return  # it could not start (closed by its owner)
        out = self.gop.header_packets(pkts[k].timestamp)
        out.extend(pkts[k:])
        if not self._write_within_limit(v, v.fmt.encode(out)):
            self._fell_behind(v, len(pkts))
            return
        v.dropped += k
        v.cursor = end
        if not v.blocked:
            v.stalled_since = None  # it reads again

    def _fell_behind(self, v: Viewer, skipped: int) -> None:
        """Skip to the next keyframe; the stall clock runs until it takes a batch again (see Hub.sweep)."""
        v.cursor = NEED_KEYFRAME
        v.dropped += skipped
        if v.stalled_since is None:
            v.stalled_since = self.clock()

    @staticmethod
    def _write_within_limit(v: Viewer, data: bytes) -> bool:
        if _over(v, len(data)):
            return False
        v.write(data)
        return True

    def _first_random_access(self, pkts: list[MediaPacket]) -> int | None:
        if self.has_video:
            for i, p in enumerate(pkts):
                if p.keyframe and not p.sequence_header and p.kind == VIDEO:
                    return i
            return None
        for i, p in enumerate(pkts):
            if p.kind == AUDIO and not p.sequence_header:
                return i
        return None

    # -------------------------------------------------------------------------------- viewers

    def admit(self, v: Viewer) -> None:
        """Start a registered viewer: the GOP burst at once when live, else it waits for a keyframe."""
        if self.state is State.LIVE and self.gop.gop:
            if v.starting is not None and not v.starting(self):
                return  # it could not start (closed by its owner)
            start = self.gop.start_packets()
            v.write(v.fmt.encode(start))
            v.cursor = self.next_seq
        else:
            v.cursor = NEED_KEYFRAME

    def new_generation(self) -> None:
        """Reset per-publisher state (called by the hub inside the PUBLISH transition)."""
        self.flush()
        self.gop.clear()
        self.metadata = {}
        self._last_in = None
        self.has_video = self.has_audio = False
        self._resume_pending = True
        for v in self.viewers.values():
            if v.cursor >= 0:
                v.cursor = NEED_KEYFRAME  # rejoin at the new publisher's first keyframe, with its headers

    # -------------------------------------------------------------------------------- outputs

    def add_output(self, output: Output) -> None:
        if output not in self.outputs:
            self.outputs.append(output)

    def remove_output(self, output: Output) -> bool:
        """Detach an output; False when it was not attached. Its ``end`` is not called."""
        if output in self.outputs:
            self.outputs.remove(output)
            return True
        return False

    def output_failed(self, output: Output, exc: BaseException) -> None:
        """Detach an output that raised, with one log line; everything else goes on."""
        if self.remove_output(output):
            event(log, "output-detached", logging.ERROR, exc_info=exc, stream=self.key, output=output.name,
                  reason=repr(exc))

    def cancel_timers(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None


def _over(v: Viewer, size: int) -> bool:
    """Would ``size`` more bytes take the viewer's buffer past its limit? An empty buffer always takes one
    batch, so a viewer's memory is bounded by its limit plus one batch, and a batch larger than the limit
    (a high bitrate with long merged writes) still reaches a viewer that keeps up."""
    buffered = v.transport.get_write_buffer_size()
    return buffered > 0 and buffered + size > v.limit


class StreamStats:
    """Counters the API and metrics read; updated once per packet (by :meth:`Stream.ingest`), never per viewer."""

    __slots__ = ("recv_bytes", "video_frames", "audio_frames", "samples")

    def __init__(self) -> None:
        self.recv_bytes = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.samples: list[tuple[float, int]] = []  # (monotonic second, recv_bytes) for kbps over 30 s
