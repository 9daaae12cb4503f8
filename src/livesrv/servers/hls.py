"""HLS output and HTTP-TS: the asyncio side of :mod:`livesrv.remux.hls` and :mod:`livesrv.codec.mpegts`.

HLS. Each stream key of an hls-enabled vhost has one :class:`HlsState`, owned by this service rather than by a
:class:`~livesrv.hub.stream.Stream`: the playlist must survive a republish (and a new Stream object) so the next
publisher continues it after an ``#EXT-X-DISCONTINUITY``. A sink on the live stream feeds the sans-IO segmenter;
its file actions go to ONE :class:`HlsWriter` task per key, which performs them in order in a worker thread,
each file written atomically (temp name in the same directory, then ``os.replace``). So writing never blocks the
event loop, files of one key are never written concurrently or out of order, and a reader never sees half a
playlist. Lifecycle, by the hub's handlers: LIVE -> discontinuity and a new sink; DRAINING -> ``finish()`` and
wait (bounded) until written; then, ``hls_dispose`` seconds without a new publish, ``dispose()`` deletes every
file. Timers carry the state's *epoch* (bumped on every publish), so a timer from an old period can never
delete the files of a newer one; a state disposed while its deletions are still queued hands its writer task to
the next state of that key, which waits for it before writing anything.

Serving. ``/<hls_m3u8_file>`` and the segments it names (paths relative to ``hls_path``) are looked up in an
index of what this service wrote: nothing outside ``hls_path`` (or not written by us) can be served from here.
The playlist comes from memory (the text last *written*, so it never names a segment that is not on disk yet),
segments from a small in-memory cache of the newest ones or from disk in a thread.

HLS viewers. As SRS's ``hls_ctx``: a playlist request without ``?hls_ctx=`` is redirected (302) to the same URL
with a session id; players (hls.js, ffmpeg, Safari) follow it and resolve segment URIs against the new URL.
FFmpeg reloads the *original* URL each time, so a request without a session from the same (stream, ip,
user-agent) as a recent session is redirected to that session, not a new one. A session that has not fetched
the playlist for :data:`SESSION_TIMEOUT` seconds ends.

HTTP-TS (``GET /app/stream.ts``, SRS ``http_remux``): one :class:`TsFanout` per stream is a sink with ONE
:class:`~livesrv.codec.mpegts.TSMuxer`; the same bytes object goes to every viewer in step. A viewer joins with
PAT/PMT and starts at the next keyframe (any audio PES for pure audio); one whose socket buffer would pass
``rtmp_limits.max_write_buffer`` skips to the next keyframe. HTTP-TS viewers are ordinary hub viewers (they hold
the stream, wait for a publisher, get the republish grace, are listed and kicked like HTTP-FLV ones) whose
format writes nothing: their media comes from the fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import quote

from livesrv import stats
from livesrv.access import gate_http_viewer
from livesrv.hooks import payloads
from livesrv.hub.clients import VIEWER, HookContext
from livesrv.codec.errors import ProtocolError
from livesrv.codec.mpegts import TSMuxer
from livesrv.config import HlsConfig
from livesrv.hub.keys import StreamKey, StreamRequest, path_problem
from livesrv.hub.stream import REPUBLISH_GAP_MS, Publisher, Stream
from livesrv.hub.viewer import Viewer
from livesrv.log import client_event, event
from livesrv.media.formats import Format
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from livesrv.remux.hls import DeleteFile, HlsAction, HlsSegmenter, SegmentInfo, WritePlaylist, WriteSegment
from livesrv.servers.common import new_client_id, stream_settings
from livesrv.servers.flv import CORS, refuse_bad_name, resolve
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.http_viewer import HttpViewerOwner

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.hls")

PLAYLIST_TYPE: Final = "application/vnd.apple.mpegurl"
TS_TYPE: Final = "video/mp2t"
#: Segments never change once written (until a dispose reuses their names, hls_dispose later).
SEGMENT_CACHE_CONTROL: Final = "max-age=60"
#: Seconds the drain waits for the last segment and playlist to reach the disk.
FINISH_TIMEOUT: Final = 10.0
#: Seconds ``stop()`` waits for every writer to finish.
STOP_TIMEOUT: Final = 10.0
#: Newest segments kept in memory: live players all fetch the same few, so they are served without disk I/O.
RECENT_SEGMENTS: Final = 3
#: Seconds without a playlist request after which an HLS viewer has left.
SESSION_TIMEOUT: Final = 30.0
#: HLS viewer sessions kept at most (beyond it players are served but not counted).
MAX_SESSIONS: Final = 100_000
#: Stream time (ms) between PAT/PMT repeats in an HTTP-TS stream without video.
TS_AUDIO_PSI_INTERVAL_MS: Final = 1000
_CTX_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
TS_EXTRA: Final = "http-ts"


# ----------------------------------------------------------------------------------------------- files


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old file or the whole new one, never a part (no fsync: this
    is about readers, not crashes)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the files from a web server of another user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def perform_actions(root: str, actions: Sequence[HlsAction]) -> list[OSError | None]:
    """Apply segmenter actions below ``root`` in order (runs in a worker thread); one result per action."""
    results: list[OSError | None] = []
    for act in actions:
        path = os.path.join(root, act.name)
        try:
            if isinstance(act, WriteSegment):
                write_atomic(path, act.data)
            elif isinstance(act, WritePlaylist):
                write_atomic(path, act.text.encode())
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            results.append(None)
        except OSError as exc:
            results.append(exc)
    return results


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def relative_path(path: str) -> str | None:
    """The request path as a name relative to ``hls_path``; None when it would leave it."""
    if "\x00" in path or "\\" in path:
        return None
    norm = posixpath.normpath(path.lstrip("/"))
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


class HlsWriter:
    """Performs one stream key's actions in order, a batch at a time in a worker thread.

    ``on_written(actions, results)`` runs on the event loop after each batch, so the in-memory view (what
    may be served) only ever follows what is on disk.
    """

    _STOP: Final = object()

    def __init__(
        self,
        root: str,
        label: str,
        on_written: Callable[[Sequence[HlsAction], Sequence[OSError | None]], None] | None = None,
        after: asyncio.Future[Any] | None = None,
    ) -> None:
        self.root = root
        self.label = label
        self.on_written = on_written
        self.errors = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self.task = asyncio.get_running_loop().create_task(self._run(after), name=f"hls-writer {label}")

    def submit(self, actions: Sequence[HlsAction]) -> None:
        if actions and not self._closed:
            self._queue.put_nowait(list(actions))

    async def flush(self) -> None:
        """Wait until everything submitted so far is on disk."""
        if self.task.done():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(fut)
        await fut

    def close(self) -> None:
        """Perform what is queued, then end the task."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(self._STOP)

    async def _run(self, after: asyncio.Future[Any] | None) -> None:
        if after is not None:
            await asyncio.wait([after])  # the previous writer of this key (still deleting): never overlap it
        queue = self._queue
        carry: Any = None
        while True:
            item = carry if carry is not None else await queue.get()
            carry = None
            if item is self._STOP:
                return
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            batch: list[HlsAction] = item
            while not queue.empty():  # whatever piled up goes to the same thread call
                nxt = queue.get_nowait()
                if isinstance(nxt, list):
                    batch = batch + nxt
                else:
                    carry = nxt
                    break
            try:
                results = await asyncio.to_thread(perform_actions, self.root, batch)
            except Exception:  # noqa: BLE001 - a bug here must not stop this key's output for good
                event(log, "hls-writer-error", logging.ERROR, exc_info=True, writer=self.label)
                continue
            for act, err in zip(batch, results):
                if err is not None:
                    self.errors += 1
                    event(log, "hls-write-error", logging.WARNING, writer=self.label, file=act.name, reason=str(err))
            if self.on_written is not None:
                try:
                    self.on_written(batch, results)
                except Exception:  # noqa: BLE001
                    event(log, "hls-writer-error", logging.ERROR, exc_info=True, writer=self.label)


# ----------------------------------------------------------------------------------------------- HLS state


class HlsState:
    """One stream key's HLS output; outlives Stream objects (republish) until disposed."""

    def __init__(self, key: StreamKey, config: HlsConfig, segmenter: HlsSegmenter, writer: HlsWriter) -> None:
        self.key = key
        self.config = config
        self.segmenter = segmenter
        self.writer = writer
        self.root = writer.root
        self.epoch = 0  # bumped on each publish: dispose timers of an older period are stale
        self.live_for: tuple[Stream, int] | None = None  # (stream, generation) feeding it now
        self.sink: HlsSink | None = None
        self.dispose_handle: asyncio.TimerHandle | None = None
        self.playlist_body: bytes | None = None  # as last written to disk
        self.recent: dict[str, bytes] = {}  # newest segments, insertion ordered
        self.errors = 0  # packets the segmenter failed on (a bug), skipped
        self.last_ts = -1  # newest timestamp fed, on this state's timeline (across publish periods)
        self.stamp_names = "[timestamp]" in config.hls_ts_file

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


class _Shifted:
    """A packet on the HLS state's own timeline (see :class:`HlsSink`)."""

    __slots__ = ("kind", "timestamp", "payload")

    def __init__(self, kind: int, timestamp: int, payload: bytes) -> None:
        self.kind = kind
        self.timestamp = timestamp
        self.payload = payload


class HlsSink:
    """Feeds one publish period's packets to its state's segmenter (a :class:`~livesrv.hub.stream.Sink`).

    The playlist's timeline never goes back: a period whose first frame is earlier than the end of the
    previous one (a new Stream object after the old one was collected restarts at 0) is shifted to follow it.
    ``EXT-X-DISCONTINUITY`` would allow a reset, but players that ignore it (FFmpeg) would see time go back.
    """

    __slots__ = ("state", "epoch", "offset")

    def __init__(self, state: HlsState) -> None:
        self.state = state
        self.epoch = state.epoch
        self.offset: int | None = None

    def on_packet(self, pkt: MediaPacket) -> None:
        state = self.state
        kind = pkt.kind
        if state.epoch != self.epoch or (kind != VIDEO and kind != AUDIO):
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
        except Exception:  # noqa: BLE001 - called inside the publisher's ingest: never break it
            state.errors += 1
            if state.errors == 1:
                event(log, "hls-error", logging.ERROR, exc_info=True, stream=state.key)
            return
        if actions:
            state.writer.submit(actions)


@dataclass(slots=True, eq=False)
class HlsSession:
    """An HLS viewer: a player that keeps fetching the playlist with its ``hls_ctx``; a client in the hub's
    registry (it has no connection: kicking it ends the session and refuses its id for a while)."""

    id: str
    key: StreamKey
    ip: str
    user_agent: str
    started: float  # time.time()
    last_seen: float  # monotonic
    context: HookContext
    service: HlsService
    sent: int = 0  # playlist bytes served to it (segment requests carry no session id)

    kind: ClassVar[str] = VIEWER
    protocol: ClassVar[str] = "hls"

    @property
    def cid(self) -> str:
        return self.id

    @property
    def recv_bytes(self) -> int:
        return 0

    @property
    def send_bytes(self) -> int:
        return self.sent

    def kick(self, reason: str) -> None:
        self.service.kick_session(self, reason)


# ----------------------------------------------------------------------------------------------- HTTP-TS


class _NoFormat(Format):
    """The hub's fan-out writes nothing to an HTTP-TS viewer: its bytes come from the stream's TsFanout."""

    __slots__ = ()

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        return b""


class _BufferView:
    """An HTTP-TS viewer's transport as the hub sees it: writes nothing, but reports the real backlog, so the
    hub's stall rules judge it as they judge an HTTP-FLV viewer."""

    __slots__ = ("conn",)

    def __init__(self, conn: HTTPConnection) -> None:
        self.conn = conn

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None and not self.conn.closed else 0


NO_FORMAT: Final = _NoFormat("ts")


class TsViewerOwner(HttpViewerOwner):
    """An HTTP-TS viewer: ``waiting`` for a random access point (joined, fell behind, new publisher)."""

    def __init__(self, conn: HTTPConnection) -> None:
        super().__init__(conn)
        self.waiting = True


class TsFanout:
    """One stream's HTTP-TS output: ONE muxer, the same bytes for every viewer in step (a stream sink)."""

    __slots__ = ("stream", "muxer", "viewers", "dropped", "_last_psi_ms")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.muxer = TSMuxer()
        self.viewers: dict[str, TsViewerOwner] = {}
        self.dropped = 0  # packets the muxer rejected
        self._last_psi_ms: int | None = None
        for pkt in (stream.gop.video_header, stream.gop.audio_header):  # joined mid-stream: know the codecs
            if pkt is not None:
                self._mux(pkt)

    def _mux(self, pkt: MediaPacket) -> bytes:
        try:
            return self.muxer.mux(pkt)
        except ProtocolError:
            self.dropped += 1
            return b""

    def add(self, owner: TsViewerOwner) -> None:
        assert owner.viewer is not None
        self.viewers[owner.viewer.cid] = owner
        owner.waiting = True
        if self.muxer.has_video or self.muxer.has_audio:
            psi = self.muxer.psi(advance=False)  # the player learns the program at once
            owner.viewer.send_bytes += len(psi)
            owner.conn.write(psi)

    def remove(self, cid: str) -> bool:
        """Forget a viewer; True when none is left."""
        self.viewers.pop(cid, None)
        return not self.viewers

    def new_publisher(self) -> None:
        """A new generation: its headers replace the codecs, everyone restarts at its first keyframe."""
        tail = self.muxer.discontinuity() + self.muxer.reset_codecs()
        self._last_psi_ms = None
        if tail:
            self._send(tail, None, False)
        for owner in self.viewers.values():
            owner.waiting = True

    def on_packet(self, pkt: MediaPacket) -> None:
        try:
            self._on_packet(pkt)
        except Exception:  # noqa: BLE001 - inside the publisher's ingest: never break it
            self.dropped += 1
            if self.dropped == 1:
                event(log, "http-ts-error", logging.ERROR, exc_info=True, stream=self.stream.key)

    def _on_packet(self, pkt: MediaPacket) -> None:
        kind = pkt.kind
        if kind != VIDEO and kind != AUDIO:
            return
        muxer = self.muxer
        head = b""
        if pkt.sequence_header:
            join = False
        elif kind == VIDEO:
            join = pkt.keyframe
            if join:
                head = muxer.psi()  # PAT/PMT in front of every keyframe: where players can start
        else:
            join = not muxer.has_video
            if join and (self._last_psi_ms is None or pkt.timestamp - self._last_psi_ms >= TS_AUDIO_PSI_INTERVAL_MS
                         or pkt.timestamp < self._last_psi_ms):
                head = muxer.psi()
                self._last_psi_ms = pkt.timestamp
        body = self._mux(pkt)
        if not body:
            join = False  # (buffered audio, a skipped codec): nothing here to start with
        data = head + body if head else body
        if data:
            self._send(data, head, join)

    def _send(self, data: bytes, head: bytes | None, join: bool) -> None:
        joiner_data: bytes | None = None
        now = 0.0
        for owner in list(self.viewers.values()):
            v = owner.viewer
            conn = owner.conn
            if v is None or conn.closed or conn.transport is None:
                continue
            out = data
            if owner.waiting:
                if not join:
                    v.dropped += 1
                    continue
                if not head:  # pure audio between PSI repeats: give this one the program first
                    if joiner_data is None:
                        joiner_data = self.muxer.psi(advance=False) + data
                    out = joiner_data
            buffered = conn.transport.get_write_buffer_size()
            if v.blocked or (buffered > 0 and buffered + len(out) > v.limit):
                owner.waiting = True  # skip to the next keyframe; the hub's sweep closes it if this lasts
                v.dropped += 1
                if v.stalled_since is None:
                    now = now or time.monotonic()
                    v.stalled_since = now
                continue
            if owner.waiting:
                owner.waiting = False
                if not v.blocked:
                    v.stalled_since = None
            v.send_bytes += len(out)
            conn.transport.write(out)


# ----------------------------------------------------------------------------------------------- service


def _without_ctx(query: str) -> str:
    """The query a player sent, without the ``hls_ctx`` this server added (hooks see the player's own)."""
    if not query:
        return ""
    kept = [p for p in query.lstrip("?").split("&") if p and not p.startswith("hls_ctx=")]
    return "?" + "&".join(kept) if kept else ""


def _segment_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the names ``hls_ts_file`` produces (to tell a segment URL from an HTTP-TS one)."""
    out = re.escape(template)
    for var, rx in (("[vhost]", r"[^/]+"), ("[app]", r".+"), ("[stream]", r"[^/]+"), ("[seq]", r"\d+"),
                    ("[timestamp]", r"\d+")):
        out = out.replace(re.escape(var), rx)
    return re.compile(out)


class HlsService:
    """Owns every stream's HLS segmenter and HTTP-TS viewers; registered with the hub by :class:`App`."""

    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access) -> None:
        self.hub = hub
        self._config = config  # read per event: a reload applies to new streams and viewers
        self.access = access
        self._states: dict[StreamKey, HlsState] = {}
        self._playlists: dict[str, HlsState] = {}  # name under hls_path -> state
        self._segment_files: dict[str, HlsState] = {}  # written segments -> state
        self._retired: dict[StreamKey, asyncio.Task[None]] = {}  # writers of disposed states, still working
        self._sessions: dict[str, HlsSession] = {}
        self._session_by_client: dict[tuple[StreamKey, str, str], str] = {}
        self._segment_patterns: dict[str, re.Pattern[str]] = {}
        self._kicked: dict[str, float] = {}  # session ids kicked by the operator -> monotonic time, refused
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        hub = self.hub
        hub.live_handlers.append(self._on_live)
        hub.drain_handlers.append(self._on_drain)
        hub.removed_handlers.append(self._on_removed)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_sessions(), name="hls-sessions")

    async def stop(self) -> None:
        """Finish every stream's output and dispose it (as SRS does at shutdown), bounded in time."""
        hub = self.hub
        for lst, fn in ((hub.live_handlers, self._on_live), (hub.drain_handlers, self._on_drain),
                        (hub.removed_handlers, self._on_removed)):
            if fn in lst:
                lst.remove(fn)  # type: ignore[arg-type]
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        tasks = list(self._retired.values())
        for state in list(self._states.values()):
            if state.dispose_handle is not None:
                state.dispose_handle.cancel()
                state.dispose_handle = None
            state.epoch += 1
            state.live_for = None
            actions = list(state.segmenter.finish())
            if state.config.hls_dispose > 0:
                actions += state.segmenter.dispose()
            state.writer.submit(actions)
            state.writer.close()
            tasks.append(state.writer.task)
        self._states.clear()
        self._playlists.clear()
        self._segment_files.clear()
        for session in list(self._sessions.values()):
            self._end_session(session, "server stopped")
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("event=hls-stop-timeout writers=%d", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        self._retired.clear()

    # ------------------------------------------------------------------------------ hub handlers

    def _on_live(self, stream: Stream) -> None:
        fan = stream.extra.get(TS_EXTRA)
        if isinstance(fan, TsFanout):
            fan.new_publisher()
        key = stream.key
        vhost = self._config().vhost(key.vhost)
        if not (vhost.enabled and vhost.hls.enabled):
            return
        state = self._states.get(key)
        if state is None:
            state = self._new_state(key, vhost.hls)
            if state is None:
                return
        if state.dispose_handle is not None:
            state.dispose_handle.cancel()
            state.dispose_handle = None
        state.epoch += 1
        actions = state.segmenter.discontinuity()  # after a republish: EXT-X-DISCONTINUITY on the next one
        state.writer.submit(actions)
        if state.live_for is not None:  # (a takeover whose drain did not reach us yet)
            self._remove_sink(state.live_for[0], state)
        state.live_for = (stream, stream.generation)
        state.sink = HlsSink(state)
        stream.sinks.append(state.sink)
        event(log, "hls-live", stream=key, generation=stream.generation,
              playlist=os.path.join(state.root, state.playlist_name))

    def _new_state(self, key: StreamKey, cfg: HlsConfig) -> HlsState | None:
        try:
            segmenter = HlsSegmenter(cfg, key.vhost, key.app, key.stream)
        except ValueError as exc:  # a stream name that would write outside hls_path
            event(log, "hls-refused", logging.WARNING, stream=key, reason=str(exc))
            return None
        root = os.path.abspath(cfg.hls_path)
        previous = self._retired.get(key)
        holder: list[HlsState] = []
        writer = HlsWriter(root, str(key), lambda acts, res: self._written(holder[0], acts, res), previous)
        state = HlsState(key, cfg, segmenter, writer)
        holder.append(state)
        self._states[key] = state
        other = self._playlists.get(state.playlist_name)
        if other is not None and other is not state:
            event(log, "hls-conflict", logging.WARNING, stream=key, other=other.key, playlist=state.playlist_name)
        self._playlists[state.playlist_name] = state
        return state

    async def _on_drain(self, stream: Stream, generation: int, publisher: Publisher) -> None:
        state = self._states.get(stream.key)
        if state is None or state.live_for is None:
            return
        live_stream, live_generation = state.live_for
        if live_stream is not stream or live_generation != generation:
            return  # a newer publisher feeds it now: not ours to finish
        epoch = state.epoch
        state.live_for = None
        self._remove_sink(stream, state)
        state.writer.submit(state.segmenter.finish())
        try:
            await asyncio.wait_for(state.writer.flush(), FINISH_TIMEOUT)
        except asyncio.TimeoutError:
            event(log, "hls-finish-timeout", logging.WARNING, stream=stream.key)
        finally:
            if state.epoch == epoch and self._states.get(stream.key) is state:
                self._schedule_dispose(state)

    def _on_removed(self, stream: Stream) -> None:
        state = self._states.get(stream.key)
        if state is None:
            return
        if state.live_for is not None and state.live_for[0] is stream:  # (never drained: be safe)
            state.live_for = None
            self._remove_sink(stream, state)
            state.writer.submit(state.segmenter.finish())
        if state.live_for is None and state.dispose_handle is None:
            self._schedule_dispose(state)

    @staticmethod
    def _remove_sink(stream: Stream, state: HlsState) -> None:
        sink = state.sink
        if sink is not None and sink in stream.sinks:
            stream.sinks.remove(sink)
        state.sink = None

    def _schedule_dispose(self, state: HlsState) -> None:
        delay = state.config.hls_dispose
        if delay <= 0:
            return  # SRS: 0 keeps the files
        if state.dispose_handle is not None:
            state.dispose_handle.cancel()
        state.dispose_handle = asyncio.get_running_loop().call_later(delay, self._dispose, state, state.epoch)

    def _dispose(self, state: HlsState, epoch: int) -> None:
        state.dispose_handle = None
        if self._states.get(state.key) is not state or state.epoch != epoch or state.live_for is not None:
            return  # a newer publish period owns these files now
        state.epoch += 1
        state.writer.submit(state.segmenter.dispose())
        state.writer.close()
        self._drop(state)
        task = state.writer.task
        self._retired[state.key] = task
        task.add_done_callback(lambda t, key=state.key: self._retired.pop(key) if self._retired.get(key) is t else None)
        event(log, "hls-dispose", stream=state.key)

    def _drop(self, state: HlsState) -> None:
        del self._states[state.key]
        if self._playlists.get(state.playlist_name) is state:
            del self._playlists[state.playlist_name]
        for name in [n for n, s in self._segment_files.items() if s is state]:
            del self._segment_files[name]
        state.recent.clear()
        state.playlist_body = None

    def _written(self, state: HlsState, actions: Sequence[HlsAction], results: Sequence[OSError | None]) -> None:
        """The writer finished a batch: what may be served follows what is on disk."""
        current = self._states.get(state.key) is state
        for act, err in zip(actions, results):
            if isinstance(act, DeleteFile):
                if self._segment_files.get(act.name) is state:
                    del self._segment_files[act.name]
                state.recent.pop(act.name, None)
                continue
            if err is not None or not current:
                continue
            if isinstance(act, WriteSegment):
                self._segment_files[act.name] = state
                state.recent[act.name] = act.data
                while len(state.recent) > RECENT_SEGMENTS:
                    del state.recent[next(iter(state.recent))]
                info = next((x for x in state.segmenter.segments if x.name == act.name), None)
                if info is not None:
                    self._segment_written(state, info)
            else:
                state.playlist_body = act.text.encode()

    def _segment_written(self, state: HlsState, info: SegmentInfo) -> None:
        """on_hls, with the publisher's context, once a segment is on disk."""
        stream = state.live_for[0] if state.live_for else None
        if stream is None or stream.publisher is None:
            return
        ctx = stream.publisher.context
        m3u8 = os.path.join(state.root, state.playlist_name)
        self.access.hls(ctx.vhost, lambda ident: payloads.on_hls(
            ident, ctx, duration=info.duration, file=os.path.join(state.root, info.name), url=info.uri,
            m3u8=m3u8, m3u8_url="/" + state.playlist_name, seq_no=info.sequence,
        ))

    # ------------------------------------------------------------------------------ queries (API)

    def state(self, key: StreamKey) -> HlsState | None:
        return self._states.get(key)

    def info(self, key: StreamKey) -> dict[str, Any] | None:
        state = self._states.get(key)
        return state.info() if state is not None else None

    def viewers(self, key: StreamKey) -> list[HlsSession]:
        """HLS viewers (sessions) of a stream (each is also in the hub's client registry)."""
        return [s for s in self._sessions.values() if s.key == key]

    # ------------------------------------------------------------------------------ HTTP

    async def handle(self, req: Request, conn: HTTPConnection) -> Response | None:
        """A ``.m3u8`` or ``.ts`` request; ``NotImplemented`` when this service does not serve it."""
        problem = path_problem(req.path)
        if problem is not None:  # (no file we write has such a name)
            client_event(log, "play-rejected", new_client_id(), req.ip, reason=problem, level=logging.WARNING,
                         protocol="hls")
            return Response(400, f"bad request: {problem}\n".encode(), headers=CORS)
        rel = relative_path(req.path)
        if rel is None:
            return Response(404, b"not found\n", headers=CORS)  # never anything outside hls_path
        if rel.endswith(".m3u8"):
            state = self._playlists.get(rel)
            if state is None:
                return NotImplemented  # type: ignore[return-value]
            return await self._serve_playlist(req, state)
        state = self._segment_files.get(rel)
        if state is not None:
            return await self._serve_segment(req, state, rel)
        sreq = resolve(self._config(), req, ".ts")
        if sreq is not None and (refused := refuse_bad_name(req, sreq, "ts")) is not None:
            return refused
        if sreq is None or (sreq.key not in self.hub.streams and self._looks_like_segment(sreq.key.vhost, rel)):
            return NotImplemented  # type: ignore[return-value]  # a file (an old segment, a VOD): static
        return await self._serve_ts(req, conn, sreq)

    def _looks_like_segment(self, vhost_name: str, rel: str) -> bool:
        hls = self._config().vhost(vhost_name).hls
        if not hls.enabled:
            return False
        pattern = self._segment_patterns.get(hls.hls_ts_file)
        if pattern is None:
            pattern = self._segment_patterns[hls.hls_ts_file] = _segment_pattern(hls.hls_ts_file)
        return pattern.fullmatch(rel) is not None

    async def _serve_playlist(self, req: Request, state: HlsState) -> Response:
        headers = [*CORS, ("Cache-Control", "no-cache")]
        if req.method == "OPTIONS":
            return Response(200, b"", headers=headers)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        if state.playlist_body is None:  # no segment cut yet (as SRS: 404 until the first one)
            return Response(404, b"not found\n", headers=CORS)
        if req.method == "GET":
            redirect = await self._session(req, state)
            if redirect is not None:
                return redirect
        body = state.playlist_body  # (read after the await: the newest)
        if body is None or self._states.get(state.key) is not state:
            return Response(404, b"not found\n", headers=CORS)
        session = self._sessions.get(req.query.get("hls_ctx", ""))
        if session is not None and req.method == "GET":
            session.sent += len(body)
        return Response(200, body, PLAYLIST_TYPE, headers)

    async def _serve_segment(self, req: Request, state: HlsState, rel: str) -> Response:
        if req.method == "OPTIONS":
            return Response(200, b"", headers=CORS)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        data = state.recent.get(rel)
        if data is None:
            data = await asyncio.to_thread(_read_file, os.path.join(state.root, rel))
        if data is None:
            return Response(404, b"not found\n", headers=CORS)
        return Response(200, data, TS_TYPE, [*CORS, ("Cache-Control", SEGMENT_CACHE_CONTROL)])

    # ------------------------------------------------------------------------------ HLS viewers

    async def _session(self, req: Request, state: HlsState) -> Response | None:
        """Count the player (SRS ``hls_ctx``): a redirect for a request without a session, else None."""
        key = state.key
        ua = req.headers.get("user-agent", "")[:200]
        client = (key, req.ip, ua)
        now = time.monotonic()
        ctx = req.query.get("hls_ctx", "")
        if not ctx:
            sid = self._session_by_client.get(client)
            old = self._sessions.get(sid) if sid else None
            if old is None or now - old.last_seen > SESSION_TIMEOUT:
                sid = new_client_id()
            query = req.raw_query
            target = quote(req.path, safe="/:@!$&'()*+,;=-._~") + (query + "&" if query else "?") + f"hls_ctx={sid}"
            return Response(302, b"", headers=[("Location", target), *CORS, ("Cache-Control", "no-cache")])
        session = self._sessions.get(ctx)
        if session is not None and session.key == key:
            session.last_seen = now
            return None
        if not _CTX_RE.fullmatch(ctx):
            return Response(400, b"bad hls_ctx\n", headers=CORS)
        kicked = self._kicked.get(ctx)
        if kicked is not None and now - kicked < SESSION_TIMEOUT:
            return Response(403, b"forbidden: kicked\n", headers=CORS)
        if len(self._sessions) >= MAX_SESSIONS:
            return None  # (ids are the client's to choose: bounded memory) served, not counted
        # A new viewer (or one whose session expired, or from before a restart: it keeps its URL).
        context = HookContext(ctx, req.ip, key.vhost, key.app, key.stream, _without_ctx(req.raw_query),
                              f"http://{req.headers.get('host', '')}/{key.app}", req.headers.get("referer", ""))
        session = HlsSession(ctx, key, req.ip, ua, time.time(), now, context, self)
        refused = self.access.security(key.vhost, "play", req.ip)
        if refused is None:
            refused = await self.access.play(context)
        if refused is not None:
            client_event(log, "play-rejected", ctx, req.ip, key, refused, logging.WARNING, protocol="hls")
            return Response(403, b"forbidden\n", headers=CORS)
        if ctx in self._sessions:  # the same id on another stream: the old one is over
            self._end_session(self._sessions[ctx], "switched stream")
        self._sessions[ctx] = session
        self._session_by_client[client] = ctx
        self.hub.register(session)
        client_event(log, "play", ctx, req.ip, key, protocol="hls")
        return None

    def _end_session(self, session: HlsSession, reason: str) -> None:
        if self._sessions.get(session.id) is not session:
            return
        del self._sessions[session.id]
        client = (session.key, session.ip, session.user_agent)
        if self._session_by_client.get(client) == session.id:
            del self._session_by_client[client]
        self.hub.unregister(session)
        client_event(log, "close", session.id, session.ip, session.key, reason, protocol="hls")
        stats.connection_closed("hls", 0, session.sent)
        self.access.stop(session.context)

    def kick_session(self, session: HlsSession, reason: str) -> None:
        """End a session now; its id is refused (403) for :data:`SESSION_TIMEOUT`, so the player stops."""
        if len(self._kicked) >= MAX_SESSIONS:
            self._kicked.clear()
        self._kicked[session.id] = time.monotonic()
        self._end_session(session, reason)

    def expire_sessions(self, now: float | None = None) -> None:
        limit = (time.monotonic() if now is None else now) - SESSION_TIMEOUT
        for session in [s for s in self._sessions.values() if s.last_seen < limit]:
            self._end_session(session, f"no playlist request for {SESSION_TIMEOUT:g}s")
        for sid in [sid for sid, t in self._kicked.items() if t < limit]:
            del self._kicked[sid]

    async def _sweep_sessions(self) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                self.expire_sessions()
            except Exception:  # noqa: BLE001
                log.exception("event=hls-session-error")

    # ------------------------------------------------------------------------------ HTTP-TS

    async def _serve_ts(self, req: Request, conn: HTTPConnection, sreq: StreamRequest) -> Response | None:
        headers = [*CORS, ("Cache-Control", "no-cache")]
        if req.method == "OPTIONS":
            return Response(200, b"", headers=headers)
        if req.method == "HEAD":
            return Response(200, b"", TS_TYPE, headers)  # without attaching a viewer
        if req.method != "GET":
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        config = self._config()
        hub = self.hub
        key = sreq.key
        cid = new_client_id()
        owner = TsViewerOwner(conn)
        viewer = owner.viewer = Viewer(cid, conn.ip, "ts", NO_FORMAT, _BufferView(conn), owner, sreq.param)
        viewer.limit = config.rtmp_limits.max_write_buffer
        ctx, refused = await gate_http_viewer(self.access, hub, viewer, sreq, req.headers.get("referer", ""),
                                              stream_settings(config, key.vhost))
        if refused is not None:
            client_event(log, "play-rejected", cid, conn.ip, key, refused, logging.WARNING, protocol="ts")
            return Response(403, f"forbidden: {refused}\n".encode(), headers=CORS)
        if conn.closed:  # it left while its hook was awaited
            hub.detach(viewer)
            return None
        conn.start_stream(200, [("Content-Type", TS_TYPE), *headers])
        conn.attach_viewer(viewer, owner)
        client_event(log, "play", cid, conn.ip, key, param=sreq.masked_param(), protocol="ts")
        stream = viewer.stream
        assert stream is not None
        fan = stream.extra.get(TS_EXTRA)
        if not isinstance(fan, TsFanout):
            fan = stream.extra[TS_EXTRA] = TsFanout(stream)
            stream.sinks.append(fan)
        fan.add(owner)
        conn.on_close.append(lambda: self._ts_closed(viewer, stream, fan))
        owner.start(hub, self.access, ctx, log)
        if conn.write_paused:
            viewer.pause(time.monotonic())
        hub.admit(viewer)
        return None

    def _ts_closed(self, viewer: Viewer, stream: Stream, fan: TsFanout) -> None:
        if fan.remove(viewer.cid) and stream.extra.get(TS_EXTRA) is fan:
            del stream.extra[TS_EXTRA]  # no viewer left: no muxing
            if fan in stream.sinks:
                stream.sinks.remove(fan)
