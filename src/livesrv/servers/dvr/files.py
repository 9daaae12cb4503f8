"""DVR files on disk: written in order, off the event loop, and only complete files under their final names.

ONE :class:`DvrWriter` task per recording performs the recorder's actions (:mod:`livesrv.remux.dvr`) in order,
a batch at a time in a worker thread, so a slow or failing disk never blocks the event loop or other streams.

A file is written to ``<final name>.tmp`` (SRS's temporary name) and renamed into place when it is complete:
the onMetaData ``duration`` and ``filesize`` written back first. A path ending in ``.mp4`` is recorded the
same way (FLV bytes in the ``.tmp`` file) and remuxed to MP4 by PyAV's muxer (FFmpeg's, in C) when it closes,
to a second temporary name that is then renamed into place. Why not a fragmented MP4 written in place: a
reader (or a crash) would then find a half-written file under the final name, its duration unknown; this way
the final names only ever hold finished files, and what a crash leaves is the ``.tmp`` FLV, which plays up to
its last complete tag (any player, or ``ffmpeg -i x.mp4.tmp -c copy x.mp4``).

A write that fails (a full disk, a directory that cannot be created or written) ends the recording, and the
owner is told once, with the reason. What the file being written has on disk for sure is not thrown away (a
full disk could otherwise cost hours of a session's recording): the ``.tmp`` is cut at the last flushed tag
(at most about the last GOP is lost), its onMetaData gets that part's duration and size, and it is published
as a finished file (``on_dvr`` included). An ``.mp4`` whose remux fails too (a full disk has no room for the
copy) stays as its ``.tmp`` FLV, never under its final name; a file with no frame is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

from livesrv.log import describe_error, event
from livesrv.remux.dvr import AppendFile, CloseFile, DvrAction, OpenFile

log = logging.getLogger("livesrv.dvr")

#: Mode of the files written (readable by a web server of another user, as HLS's).
FILE_MODE: Final = 0o644
#: Bytes a recording may have waiting for the disk: beyond this the disk is too slow for the stream, and the
#: recording ends rather than growing the server's memory without bound.
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
TMP_SUFFIX: Final = ".tmp"
#: Names tried for one file when its name is taken (see :meth:`DvrFiles._start`).
MAX_NAME_TRIES: Final = 100
MUX_SUFFIX: Final = ".mux.tmp"

_DOUBLE = struct.Struct(">d")


def tmp_path(path: str) -> str:
    return path + TMP_SUFFIX


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remux_to_mp4(src: str, dst: str) -> None:
    """Copy the packets of the FLV ``src`` into the MP4 ``dst`` (no re-encoding): FFmpeg's demuxer knows every
    codec a publisher may send (H.264, HEVC in Enhanced RTMP, AAC, MP3), FFmpeg's muxer writes the MP4."""
    import av  # a runtime dependency only for .mp4 recordings

    with av.open(src, "r", format="flv") as inp, av.open(dst, "w", format="mp4") as out:
        mapping: dict[int, Any] = {}
        for s in inp.streams:
            if s.type in ("video", "audio"):
                mapping[s.index] = out.add_stream_from_template(s)
        if not mapping:
            raise OSError(f"{src}: no audio or video to put in an MP4")
        for pkt in inp.demux(*[inp.streams[i] for i in mapping]):
            if pkt.dts is None or pkt.size == 0:
                continue  # (the flush packet at the end of each stream)
            pkt.stream = mapping[pkt.stream.index]
            out.mux(pkt)


class _OpenFile:
    """A file being written: its handle on ``<path>.tmp`` and what of it is known to be on disk."""

    __slots__ = ("path", "f", "size", "duration", "safe_size", "safe_duration", "patch_at", "closed", "unpublished")

    def __init__(self, path: str, f: BinaryIO, act: OpenFile) -> None:
        self.path = path  # the final name (the template's, or a variant of it)
        self.f = f
        self.size = 0  # bytes handed to the handle
        self.duration = 0.0  # of what was handed
        self.safe_size = 0  # bytes on disk for sure (flushed), always at a tag boundary
        self.safe_duration = 0.0
        self.patch_at = act.patch_at
        self.closed = False  # the handle is closed
        self.unpublished = False  # complete, but its publishing (rename, remux) failed

    def write(self, data: bytes, duration: float) -> None:
        self.f.write(data)
        self.size += len(data)
        self.duration = max(self.duration, duration)

    def flushed(self) -> None:
        self.safe_size = self.size
        self.safe_duration = self.duration


class DvrFiles:
    """The file side of one recording, run in a worker thread, one batch at a time (the writer's task awaits
    each batch before the next)."""

    def __init__(self) -> None:
        self._open: dict[int, _OpenFile] = {}
        # fid -> the name a file really got (see _start), set once its temporary file exists; read from the event
        # loop (the API) while the worker thread writes it: one dict item set or popped at a time.
        self.names: dict[int, str] = {}
        self.failed: str | None = None
        # A writer task cancelled while its thread is in a batch abandons from another thread: never at once.
        self._lock = threading.Lock()

    def perform(self, actions: Sequence[DvrAction]) -> tuple[list[tuple[CloseFile, str]], str | None]:
        """Apply actions in order: the files completed (with the name each got, see :meth:`_start`), and why the
        recording failed (None: it did not)."""
        with self._lock:
            return self._perform(actions)

    def _perform(self, actions: Sequence[DvrAction]) -> tuple[list[tuple[CloseFile, str]], str | None]:
        done: list[tuple[CloseFile, str]] = []
        for act in actions:
            if self.failed is not None:
                break
            name = self._path(act.fid) or getattr(act, "path", "")  # (the name really used, once open)
            try:
                if isinstance(act, OpenFile):
                    self._start(act)
                elif isinstance(act, AppendFile):
                    entry = self._open.get(act.fid)
                    if entry is not None:
                        entry.write(act.data, act.duration)
                else:
                    path = self._close(act)
                    if path is not None:
                        done.append((act, path))
            except Exception as exc:  # noqa: BLE001 - OSError mostly; a remux error is as final for the file
                self._fail(f"{name}: {describe_error(exc)}", done)
        if self.failed is None:
            entry = None
            try:
                for entry in self._open.values():
                    entry.f.flush()  # to the OS: what a killed process leaves is on disk
                    entry.flushed()
            except OSError as exc:
                self._fail(f"{entry.path if entry else ''}: {describe_error(exc)}", done)
        return done, self.failed

    def _fail(self, reason: str, done: list[tuple[CloseFile, str]]) -> None:
        """A write failed: the recording ends. What each open file has on disk for sure (up to its last flush,
        so at most the last batch, about a GOP, is lost) is kept as a finished file (:meth:`_salvage`)."""
        kept = []
        for fid, entry in list(self._open.items()):
            result = self._salvage(entry)
            if result is None:
                continue
            del self._open[fid]
            self.names.pop(fid, None)
            path, finished = result
            if finished:
                done.append((CloseFile(fid, path, entry.safe_duration, entry.safe_size), path))
            kept.append(f"{entry.safe_duration:.3f} s kept in {path}")
        self.failed = "; ".join([reason, *kept])
        self._abandon()

    def _salvage(self, entry: _OpenFile) -> tuple[str, bool] | None:
        """Make what ``entry`` has on disk a finished file: its ``.tmp`` cut at the last tag flushed, the
        onMetaData ``duration`` and ``filesize`` written back, then published as :meth:`_close` does. Returns
        (name, True) when it is under its final name; (its ``.tmp`` name, False) for an ``.mp4`` whose remux
        failed too (a full disk has no room for the copy): a playable FLV, kept rather than deleted (see the
        README on recovering a ``.tmp``); None when nothing worth keeping is there (it is then deleted)."""
        tmp = tmp_path(entry.path)
        if not entry.closed:
            try:
                entry.f.close()  # (what it still held goes out or not: it is cut off below)
            except OSError:
                pass
            entry.closed = True
        if entry.safe_duration <= 0:
            return None  # no frame for sure, or a single one
        try:
            os.truncate(tmp, entry.safe_size)  # (shrinking needs no room)
        except OSError:
            return None
        try:  # overwriting 16 bytes needs no room either, except on a copy-on-write file system
            fd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC)
            try:
                dur_at, size_at = entry.patch_at
                if dur_at and size_at:
                    os.pwrite(fd, _DOUBLE.pack(entry.safe_duration), dur_at)
                    os.pwrite(fd, _DOUBLE.pack(float(entry.safe_size)), size_at)
            finally:
                os.close(fd)
        except OSError:
            pass  # (the file plays without them; players compute the duration)
        mp4 = entry.path.endswith(".mp4")
        try:
            if mp4 and entry.unpublished:
                raise OSError("its remux failed already")  # (not tried twice)
            self._publish(entry.path)
        except Exception:  # noqa: BLE001
            return (tmp, False) if mp4 and os.path.exists(tmp) else None
        return entry.path, True

    def abandon(self) -> None:
        """Close and delete what is open: an unfinished file never reaches its final name."""
        with self._lock:
            self._abandon()

    def _abandon(self) -> None:
        self.names.clear()
        for entry in self._open.values():
            if not entry.closed:
                try:
                    entry.f.close()
                except OSError:
                    pass
            _unlink(tmp_path(entry.path))
        self._open.clear()

    def _path(self, fid: int) -> str:
        entry = self._open.get(fid)
        return entry.path if entry is not None else ""

    def _start(self, act: OpenFile) -> None:
        """Create the file's temporary name. A name already taken (a finished file, or another recording's
        temporary file: a template without ``[timestamp]``, a republish within the same millisecond) gets a
        ``-1``, ``-2``... before its extension: SRS overwrites the earlier recording."""
        directory = os.path.dirname(act.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        stem, ext = os.path.splitext(act.path)
        for n in range(MAX_NAME_TRIES):
            path = act.path if n == 0 else f"{stem}-{n}{ext}"
            if os.path.lexists(path):
                continue
            try:
                fd = os.open(tmp_path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{act.path} and {MAX_NAME_TRIES - 1} variants of it exist")
        try:
            os.fchmod(fd, FILE_MODE)
            f = os.fdopen(fd, "wb", buffering=256 * 1024)
        except BaseException:
            os.close(fd)
            _unlink(tmp_path(path))
            raise
        entry = self._open[act.fid] = _OpenFile(path, f, act)
        self.names[act.fid] = path
        entry.write(act.data, 0.0)

    def _close(self, act: CloseFile) -> str | None:
        entry = self._open.get(act.fid)
        if entry is None:
            return None
        f = entry.f
        for offset, data in act.patches:
            f.seek(offset)
            f.write(data)
        f.close()
        entry.closed = True
        entry.size, entry.duration = act.size, act.duration
        entry.flushed()  # the whole file is on disk (what a failing remux then keeps)
        try:
            self._publish(entry.path)
        except BaseException:
            entry.unpublished = True
            raise
        del self._open[act.fid]
        self.names.pop(act.fid, None)
        return entry.path

    @staticmethod
    def _publish(path: str) -> None:
        """The complete ``<path>.tmp`` goes under ``path``: renamed, or remuxed for an ``.mp4``."""
        tmp = tmp_path(path)
        if path.endswith(".mp4"):
            mux = path + MUX_SUFFIX
            try:
                remux_to_mp4(tmp, mux)
                os.chmod(mux, FILE_MODE)
                os.replace(mux, path)
            finally:
                _unlink(mux)
            _unlink(tmp)
        else:
            os.replace(tmp, path)


class DvrWriter:
    """Performs one recording's actions in order, a batch at a time in a worker thread.

    ``on_closed(act, path)`` runs on the event loop for each file once it is complete under its final name
    (``path``: ``act.path``, or a variant of it when that name was taken);
    ``on_failed(reason)`` once if the recording fails (then nothing more is written).
    """

    _STOP: Final = object()

    def __init__(self, label: str, on_closed: Callable[[CloseFile, str], None],
                 on_failed: Callable[[str], None]) -> None:
        self.label = label
        self.on_closed = on_closed
        self.on_failed = on_failed
        self.files = DvrFiles()
        self.queued = 0  # bytes submitted, not yet on disk
        self.written = 0  # bytes on disk
        self.failed: str | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"dvr-writer {label}")

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, actions: Sequence[DvrAction]) -> None:
        if not actions or self._closed:
            return
        size = sum(len(a.data) for a in actions if not isinstance(a, CloseFile))
        if self.queued + size > MAX_QUEUED_BYTES:
            self._fail(f"the disk is too slow: {self.queued // (1024 * 1024)} MiB waiting to be written")
            return
        self.queued += size
        self._queue.put_nowait(list(actions))

    def close(self) -> None:
        """Perform what is queued, then end the task."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(self._STOP)

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            self.close()
            self.on_failed(reason)

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            await asyncio.to_thread(self.files.abandon)  # whatever is still open was not finished

    async def _loop(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is self._STOP:
                return
            batch: list[DvrAction] = item
            stop = False
            while not queue.empty():  # whatever piled up goes to the same thread call
                nxt = queue.get_nowait()
                if nxt is self._STOP:
                    stop = True
                    break
                batch.extend(nxt)
            if self.failed is None:
                size = sum(len(a.data) for a in batch if not isinstance(a, CloseFile))
                try:
                    done, failed = await asyncio.to_thread(self.files.perform, batch)
                except Exception as exc:  # noqa: BLE001 - a bug here ends this recording only
                    event(log, "dvr-writer-error", logging.ERROR, exc_info=True, writer=self.label)
                    done, failed = [], repr(exc)
                self.queued -= size
                self.written += size
                for act, path in done:
                    self.on_closed(act, path)
                if failed is not None:
                    self._fail(failed)
            if stop:
                return
