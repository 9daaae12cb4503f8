"""HLS output and serving: the asyncio side of :mod:`livesrv.remux.hls`.

Each stream key of an hls-enabled vhost has one :class:`~.output.HlsState`, whose output the hub feeds while a
publisher is live and disposes ``hls_dispose`` seconds after the last one left (see :mod:`.output`); its files
go through one writer per key (:mod:`.files`). A state disposed while its deletions are still queued hands its
writer task to the next state of that key, which waits for it before writing anything.

Serving. ``/<hls_m3u8_file>`` and the segments it names (paths relative to ``hls_path``) are looked up in an
index of what this service wrote: nothing outside ``hls_path`` (or not written by us) can be served from here.
The playlist comes from memory (the text last *written*, so it never names a segment that is not on disk yet),
segments from disk in a worker thread through one small cache shared by every stream
(:class:`~.files.SegmentCache`, :data:`SEGMENT_CACHE_BYTES`): segments are never held in memory because they
were written, only while players ask for them. HLS players are counted as sessions (:mod:`.sessions`).

Workers (``workers N``, :attr:`HlsService.shared`). Only a stream's owner writes its files (a worker's pull of it
feeds viewers only, see ``Hub.publish_ready``), into the ``hls_path`` every worker of the host shares. A request
for a file this worker is not writing now is served from disk instead (:meth:`HlsService._serve_disk`): the
owner wrote it atomically (playlists by rename, segments renamed once complete), and the name is confined to
``hls_path`` and to ``.m3u8`` and ``.ts`` files that are not hidden (parts and temporaries are). Such players
are not counted as sessions: they would start a pull that nothing needs. A key another worker claimed is let go
without deleting anything (:meth:`HlsService.forget`): its new owner writes those names now, and continues the
playlist it finds on disk (its segments stay in the window, the numbering goes on, a discontinuity marks the new
timeline), as a republish in one process continues it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from livesrv.codec.hls_playlist import MediaPlaylist, parse_media_playlist
from livesrv.config import HlsConfig
from livesrv.hooks import payloads
from livesrv.hub.keys import StreamKey
from livesrv.names import path_problem
from livesrv.hub.stream import Stream
from livesrv.log import client_event, event
from livesrv.remux.hls import CloseSegment, DeleteFile, HlsAction, HlsSegmenter, SegmentInfo, WritePlaylist
from livesrv.hub.clients import new_client_id
from livesrv.servers.hls.files import HlsWriter, SegmentCache, relative_path
from livesrv.servers.hls.output import HlsOutput, HlsState
from livesrv.servers.hls.sessions import HlsSession, HlsSessions
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.http_viewer import CORS

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.hls")

PLAYLIST_TYPE: Final = "application/vnd.apple.mpegurl"
SEGMENT_TYPE: Final = "video/mp2t"
#: Segments never change once written (until a dispose reuses their names, hls_dispose later).
SEGMENT_CACHE_CONTROL: Final = "max-age=60"
#: Seconds ``stop()`` waits for every writer to finish.
STOP_TIMEOUT: Final = 10.0
#: Bytes of segments kept in memory for players, all streams together (see :class:`~.files.SegmentCache`):
#: the newest few segments of the streams being watched.
SEGMENT_CACHE_BYTES: Final = 16 * 1024 * 1024


class HlsService:
    """Owns every stream key's HLS output and serves its files; the hub asks it for an output when a stream
    goes live (:meth:`_provide`)."""

    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access) -> None:
        self.hub = hub
        self._config = config  # read per event: a reload applies to new streams and viewers
        self.access = access
        self.sessions = HlsSessions(hub, access)
        self._states: dict[StreamKey, HlsState] = {}
        self._playlists: dict[str, HlsState] = {}  # name under hls_path -> state
        self._playlist_waiters: dict[StreamKey, list[asyncio.Future[None]]] = {}  # see wait_playlist
        self._segment_files: dict[str, HlsState] = {}  # written segments -> state
        self.cache = SegmentCache(SEGMENT_CACHE_BYTES)
        self._retired: dict[StreamKey, asyncio.Task[None]] = {}  # writers of disposed states, still working
        #: A worker of ``workers N``: files this service is not writing are served from disk (module doc).
        self.shared = False
        self._disowned: set[HlsState] = set()  # keys another worker owns now: their files are not ours to delete

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.hub.output_providers.append(self._provide)
        self.sessions.start()

    async def stop(self) -> None:
        """Finish every stream's output and dispose it (as SRS does at shutdown), bounded in time."""
        hub = self.hub
        if self._provide in hub.output_providers:
            hub.output_providers.remove(self._provide)
        tasks = list(self._retired.values())
        for state in list(self._states.values()):
            stream = hub.get(state.key)
            if stream is not None:
                stream.remove_output(state.output)  # stopped: the hub must not feed, end or dispose it again
            state.live_for = None
            actions = []
            if state not in self._disowned:  # (workers: a key another worker owns now is not ours to finish)
                actions = list(state.segmenter.finish())
                if state.config.hls_dispose > 0:
                    actions += state.segmenter.dispose()
            state.writer.submit(actions)
            state.writer.close()
            tasks.append(state.writer.task)
        self._states.clear()
        self._disowned.clear()
        self._playlists.clear()
        self._segment_files.clear()
        self.cache.clear()
        await self.sessions.stop()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("event=hls-stop-timeout writers=%d", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        self._retired.clear()

    # ------------------------------------------------------------------------------ the hub's side

    def _provide(self, stream: Stream) -> HlsOutput | None:
        """A stream goes live: its key's HLS output (continued after a republish), when its vhost has HLS."""
        key = stream.key
        vhost = self._config().vhost(key.vhost)
        if not (vhost.enabled and vhost.hls.enabled):
            return None
        state = self._states.get(key)
        if state is not None and state in self._disowned:
            self._let_go(state)  # (another worker wrote these files meanwhile: start afresh, as that one did)
            state = None
        if state is None:
            state = self._new_state(key, vhost.hls)
            if state is None:
                return None
        return state.output

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
        if self.shared:
            # (workers) Another worker may have written this key's playlist: go on from it (a small file, read
            # here in the READY step: the numbering must be known before the first segment).
            found = _playlist_on_disk(os.path.join(root, segmenter.playlist_name), max_age=cfg.hls_window)
            if found is not None:
                segmenter.continue_after(found)
        writer.submit(segmenter.clear_leftovers())  # parts of segments a killed process left
        state = HlsState(key, cfg, segmenter, writer, self._dispose)
        holder.append(state)
        self._states[key] = state
        other = self._playlists.get(state.playlist_name)
        if other is not None and other is not state:
            event(log, "hls-conflict", logging.WARNING, stream=key, other=other.key, playlist=state.playlist_name)
        self._playlists[state.playlist_name] = state
        return state

    def _dispose(self, state: HlsState) -> None:
        """``hls_dispose`` seconds without a new publisher (the hub's wait): every file of the key goes."""
        if self._states.get(state.key) is not state or state.live_for is not None:
            return
        if state in self._disowned:
            self._let_go(state)  # (the files are another worker's now)
            return
        state.writer.submit(state.segmenter.dispose())
        self._let_go(state)
        event(log, "hls-dispose", stream=state.key)

    def _let_go(self, state: HlsState) -> None:
        """Forget ``state`` (its writer finishes what it was given, then ends; the next state of the key waits
        for it)."""
        state.writer.close()
        self._drop(state)
        self._disowned.discard(state)
        task = state.writer.task
        self._retired[state.key] = task
        task.add_done_callback(lambda t, key=state.key: self._retired.pop(key) if self._retired.get(key) is t else None)

    def forget(self, key: StreamKey, node: str = "") -> None:
        """(workers) Another worker (``node``) claimed ``key``: it writes the key's files from now on, so they
        are never deleted from here (a dispose would delete what it writes). A period still live here ends by
        the takeover and is let go once over (:meth:`_dispose`)."""
        state = self._states.get(key)
        if state is None or state in self._disowned:
            return
        self._disowned.add(state)
        state.disowned = True
        event(log, "hls-disowned", stream=key, node=node)
        if state.live_for is None:
            self._let_go(state)

    def _drop(self, state: HlsState) -> None:
        del self._states[state.key]
        if self._playlists.get(state.playlist_name) is state:
            del self._playlists[state.playlist_name]
        for name in [n for n, s in self._segment_files.items() if s is state]:
            del self._segment_files[name]
            self.cache.discard(os.path.join(state.root, name))
        state.playlist_body = None

    def _written(self, state: HlsState, actions: Sequence[HlsAction], results: Sequence[OSError | None]) -> None:
        """The writer finished a batch: what may be served follows what is on disk."""
        current = self._states.get(state.key) is state
        for act, err in zip(actions, results):
            if isinstance(act, DeleteFile):
                if self._segment_files.get(act.name) is state:
                    del self._segment_files[act.name]
                self.cache.discard(os.path.join(state.root, act.name))
                continue
            if err is not None or not current:
                continue
            if isinstance(act, CloseSegment):  # (appends are not served: a segment is served once complete)
                self._segment_files[act.name] = state
                self.cache.discard(os.path.join(state.root, act.name))  # (a name reused after a dispose)
                info = next((x for x in state.segmenter.segments if x.name == act.name), None)
                if info is not None:
                    self._segment_written(state, info)
            elif isinstance(act, WritePlaylist):
                state.playlist_body = act.text.encode()
                for waiter in self._playlist_waiters.pop(state.key, ()):
                    if not waiter.done():
                        waiter.set_result(None)

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

    def playlist_ready(self, key: StreamKey) -> bool:
        state = self._states.get(key)
        return state is not None and state.playlist_body is not None

    async def wait_playlist(self, key: StreamKey, timeout: float) -> bool:
        """Wait until ``key`` has a playlist to serve (its first segment is on disk); False after ``timeout``."""
        if self.playlist_ready(key):
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._playlist_waiters.setdefault(key, [])
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters and self._playlist_waiters.get(key) is waiters:
                    del self._playlist_waiters[key]
        return self.playlist_ready(key)

    def info(self, key: StreamKey) -> dict[str, Any] | None:
        state = self._states.get(key)
        return state.info() if state is not None else None

    def viewers(self, key: StreamKey) -> list[HlsSession]:
        """HLS viewers (sessions) of a stream (each is also in the hub's client registry)."""
        return self.sessions.of(key)

    # ------------------------------------------------------------------------------ HTTP

    async def handle(self, req: Request, conn: HTTPConnection) -> Response | None:
        """A ``.m3u8`` or ``.ts`` request; ``NotImplemented`` when it names no file this service wrote."""
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
            if state is not None and (not self.shared or state.live_for is not None):
                return await self._serve_playlist(req, state)
            if self.shared:
                return await self._serve_disk(req, rel, PLAYLIST_TYPE, "no-cache")
            return NotImplemented  # type: ignore[return-value]
        state = self._segment_files.get(rel)
        if state is not None and state not in self._disowned:
            return await self._serve_segment(req, state, rel)
        if self.shared and rel.endswith(".ts"):
            resp = await self._serve_disk(req, rel, SEGMENT_TYPE, SEGMENT_CACHE_CONTROL)
            if resp.status != 404:
                return resp
        return NotImplemented  # type: ignore[return-value]  # a live HTTP-TS URL, or a file: not ours

    async def _serve_playlist(self, req: Request, state: HlsState) -> Response:
        headers = [*CORS, ("Cache-Control", "no-cache")]
        if req.method == "OPTIONS":
            return Response(200, b"", headers=headers)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        if state.playlist_body is None:  # no segment cut yet (as SRS: 404 until the first one)
            return Response(404, b"not found\n", headers=CORS)
        if req.method == "GET":
            redirect = await self.sessions.check(req, state.key)
            if redirect is not None:
                return redirect
        body = state.playlist_body  # (read after the await: the newest)
        if body is None or self._states.get(state.key) is not state:
            return Response(404, b"not found\n", headers=CORS)
        session = self.sessions.get(req.query.get("hls_ctx", ""))
        if session is not None and req.method == "GET":
            session.sent += len(body)
        return Response(200, body, PLAYLIST_TYPE, headers)

    async def _serve_disk(self, req: Request, rel: str, content_type: str, cache_control: str) -> Response:
        """(workers) A file another worker of this host wrote into ``hls_path`` (of the request's vhost)."""
        if req.method == "OPTIONS":
            return Response(200, b"", headers=CORS)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        if any(part.startswith(".") for part in rel.split("/")):  # parts of segments, temporaries
            return Response(404, b"not found\n", headers=CORS)
        vhost = self._config().vhost(_host_name(req.headers.get("host")))
        if not (vhost.enabled and vhost.hls.enabled):  # (no HLS here: nothing of hls_path is served)
            return Response(404, b"not found\n", headers=CORS)
        root = os.path.realpath(vhost.hls.hls_path)
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep):  # (a symbolic link out of hls_path)
            return Response(404, b"not found\n", headers=CORS)
        data = await asyncio.to_thread(_read_file, path)
        if data is None:
            return Response(404, b"not found\n", headers=CORS)
        return Response(200, data, content_type, [*CORS, ("Cache-Control", cache_control)])

    async def _serve_segment(self, req: Request, state: HlsState, rel: str) -> Response:
        if req.method == "OPTIONS":
            return Response(200, b"", headers=CORS)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS"), *CORS])
        data = await self.cache.get(os.path.join(state.root, rel))
        if data is None:
            return Response(404, b"not found\n", headers=CORS)
        return Response(200, data, SEGMENT_TYPE, [*CORS, ("Cache-Control", SEGMENT_CACHE_CONTROL)])


def _host_name(host: str | None) -> str | None:
    """The vhost part of a Host header (no port)."""
    if not host:
        return None
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _read_file(path: str) -> bytes | None:
    """A whole file (a playlist or a segment), or None when it is not there (deleted meanwhile)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def _playlist_on_disk(path: str, max_age: float) -> MediaPlaylist | None:
    """The media playlist at ``path`` if it was written in the last ``max_age`` seconds (older, every segment it
    names has left the window: a leftover of an earlier run, not a stream that just moved), else None."""
    try:
        if time.time() - os.stat(path).st_mtime > max_age:
            return None
    except OSError:
        return None
    data = _read_file(path)
    if data is None:
        return None
    try:
        return parse_media_playlist(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
