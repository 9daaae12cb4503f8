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

A write that fails (a full disk, a directory that cannot be created or written) ends the recording: its
temporary files are deleted, and the owner is told once, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

from livesrv.log import event
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


class DvrFiles:
    """The file side of one recording, run in a worker thread, one batch at a time (the writer's task awaits
    each batch before the next)."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[str, BinaryIO]] = {}  # fid -> (final path, handle on its .tmp)
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
            try:
                if isinstance(act, OpenFile):
                    self._start(act)
                elif isinstance(act, AppendFile):
                    entry = self._open.get(act.fid)
                    if entry is not None:
                        entry[1].write(act.data)
                else:
                    path = self._close(act)
                    if path is not None:
                        done.append((act, path))
            except Exception as exc:  # noqa: BLE001 - OSError mostly; a remux error is as final for the file
                self.failed = f"{getattr(act, 'path', '') or self._path(act.fid)}: {exc}"
                self._abandon()
        if self.failed is None:
            try:
                for _path, f in self._open.values():
                    f.flush()  # to the OS: what a killed process leaves is on disk
            except OSError as exc:
                self.failed = f"{_path}: {exc}"
                self._abandon()
        return done, self.failed

    def abandon(self) -> None:
        """Close and delete what is open: an unfinished file never reaches its final name."""
        with self._lock:
            self._abandon()

    def _abandon(self) -> None:
        self.names.clear()
        for path, f in self._open.values():
            try:
                f.close()
            except OSError:
                pass
            _unlink(tmp_path(path))
        self._open.clear()

    def _path(self, fid: int) -> str:
        entry = self._open.get(fid)
        return entry[0] if entry is not None else ""

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
        self._open[act.fid] = (path, f)
        self.names[act.fid] = path
        f.write(act.data)

    def _close(self, act: CloseFile) -> str | None:
        entry = self._open.pop(act.fid, None)
        self.names.pop(act.fid, None)
        if entry is None:
            return None
        path, f = entry
        tmp = tmp_path(path)
        try:
            for offset, data in act.patches:
                f.seek(offset)
                f.write(data)
            f.close()
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
        except BaseException:
            try:
                f.close()
            except OSError:
                pass
            _unlink(tmp)
            raise
        return path


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
