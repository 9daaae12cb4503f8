"""HLS files on disk: written in order, off the event loop, only inside ``hls_path``, never seen half done.

ONE :class:`HlsWriter` task per stream key performs the segmenter's file actions in order, a batch at a time in
a worker thread. So writing never blocks the event loop, and files of one key are never written concurrently
or out of order. The writers of one event loop share a :class:`DiskBatcher`: their batches go to the worker
thread together, one thread call every :data:`BATCH_WINDOW` seconds at most, because waking a thread costs the
server more than the writes (50 streams at 2 Mbit/s hand over ~100 batches a second; bench/hlswrite.py).

A segment is appended to its part file (:func:`~livesrv.remux.hls.part_name`: hidden, same directory) as the
segmenter produces it, through one handle the writer keeps open per open segment, and renamed into place when
it is complete: the server never holds a whole segment in memory, and a reader (or a crash) never sees half a
segment under its final name. A playlist is small and written whole, atomically (temp name, then
``os.replace``). What a writer leaves open when it ends (stopped, cancelled) is deleted; what a killed process
left is deleted by the next output of that stream (:class:`~livesrv.remux.hls.DeleteLeftovers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

from livesrv.log import describe_error, event
from livesrv.remux.hls import (
    AppendSegment,
    CloseSegment,
    DeleteFile,
    DeleteLeftovers,
    HlsAction,
    WritePlaylist,
    part_name,
)

log = logging.getLogger("livesrv.hls")

#: Mode of every file written: mkstemp's 0600 would hide the files from a web server of another user.
FILE_MODE: Final = 0o644
#: Seconds a :class:`DiskBatcher` gathers the writers' batches before handing them to a worker thread: delays
#: a segment's arrival on disk by at most this (a small part of a fragment), and bounds the thread hand-offs
#: to 1/BATCH_WINDOW a second whatever the number of streams.
BATCH_WINDOW: Final = 0.05


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old file or the whole new one, never a part (no fsync: this
    is about readers, not crashes)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # (best effort: only ever a leftover)
        log.debug("event=hls-unlink-failed file=%s reason=%s", path, exc)


class WriterStopped(OSError):
    """The writer ended (stopped or cancelled) before this action."""


class SegmentFiles:
    """The file side of one stream key's actions, run in a worker thread (one call at a time).

    Holds one open handle per open segment (normally one), keyed by the segment's name, so appends never
    reopen the file. ``perform`` and ``abandon`` hold a lock: a writer task cancelled while its thread is
    still in a batch cannot close a handle under it.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._parts: dict[str, BinaryIO] = {}  # (unbuffered FileIO: written with os.writev)
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def open_segments(self) -> list[str]:
        return list(self._parts)

    def perform(self, actions: Sequence[HlsAction]) -> list[OSError | None]:
        """Apply actions below ``root`` in order; one result per action (None: done)."""
        with self._lock:
            results: list[OSError | None] = []
            for act in actions:
                if self._stopped:
                    results.append(WriterStopped(f"writer stopped before {act.name}"))
                    continue
                try:
                    self._perform(act)
                    results.append(None)
                except OSError as exc:
                    results.append(exc)
            return results

    def abandon(self) -> None:
        """The writer ends: no action runs any more; open segments' parts are closed and deleted (an
        unfinished segment never reaches its final name)."""
        self._stopped = True
        with self._lock:
            self._discard_all()

    def try_abandon(self) -> bool:
        """:meth:`abandon` unless a batch is running (then False: call :meth:`abandon` from a thread)."""
        self._stopped = True
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._discard_all()
        finally:
            self._lock.release()
        return True

    def _perform(self, act: HlsAction) -> None:
        path = os.path.join(self.root, act.name)
        if isinstance(act, AppendSegment):
            self._append(act, path)
        elif isinstance(act, CloseSegment):
            self._close(act, path)
        elif isinstance(act, WritePlaylist):
            write_atomic(path, act.text.encode())
        elif isinstance(act, DeleteFile):
            if act.name in self._parts:
                self._discard(act.name)
            _unlink_strict(path)
        else:
            self._delete_leftovers(act, path)

    def _append(self, act: AppendSegment, path: str) -> None:
        f = self._parts.get(act.name)
        if act.offset == 0:
            if f is not None:  # (a segment restarted under the same name: the old part is void)
                self._discard(act.name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(self._part_path(act.name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)  # (whatever the umask, as write_atomic)
                f = os.fdopen(fd, "wb", buffering=0)  # (unbuffered: appends go out with writev)
            except BaseException:
                os.close(fd)
                raise
            self._parts[act.name] = f
        elif f is None:
            raise FileNotFoundError(f"part of {act.name} lost (an earlier append failed)")
        try:
            if f.tell() != act.offset:
                raise OSError(f"part of {act.name} has {f.tell()} bytes, the append starts at {act.offset}")
            _write_pieces(f.fileno(), act.pieces, act.size)
        except BaseException:
            self._discard(act.name)  # a segment with a hole is never renamed into place
            raise

    def _close(self, act: CloseSegment, path: str) -> None:
        f = self._parts.pop(act.name, None)
        if f is None:
            raise FileNotFoundError(f"part of {act.name} lost (an earlier append failed)")
        part = self._part_path(act.name)
        try:
            size = f.tell()
            f.close()
            if size != act.size:
                raise OSError(f"part of {act.name} has {size} bytes, {act.size} expected")
            os.replace(part, path)
        except BaseException:
            _unlink(part)
            raise

    def _delete_leftovers(self, act: DeleteLeftovers, path: str) -> None:
        pattern = re.compile(act.pattern)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return
        ours = {posixpath.normpath(part_name(n)) for n in self._parts}  # (none, as the first action)
        for name in names:
            if pattern.fullmatch(name) and posixpath.normpath(posixpath.join(act.name, name)) not in ours:
                _unlink(os.path.join(path, name))

    def _part_path(self, name: str) -> str:
        return os.path.join(self.root, part_name(name))

    def _discard(self, name: str) -> None:
        f = self._parts.pop(name)
        try:
            f.close()
        except OSError:
            pass
        _unlink(self._part_path(name))

    def _discard_all(self) -> None:
        for name in list(self._parts):
            self._discard(name)


def _iov_max() -> int:
    try:
        n = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 16  # (POSIX's minimum)
    return n if 0 < n <= 1024 else 1024


#: Buffers one ``writev`` takes at most (IOV_MAX: 1024 on Linux).
_IOV_MAX: Final = _iov_max()


def _write_pieces(fd: int, pieces: Sequence[bytes | bytearray | memoryview], size: int) -> None:
    """Write ``pieces`` (``size`` bytes) at the file's position: one ``writev`` per IOV_MAX pieces, so the
    kernel gathers them and they are never joined in user space. A short write (a disk filling up, a signal)
    goes on with what is left, until it is written or the system call raises."""
    for i in range(0, len(pieces), _IOV_MAX):
        batch = pieces[i : i + _IOV_MAX] if len(pieces) > _IOV_MAX else pieces
        want = size if batch is pieces else sum(map(len, batch))
        done = os.writev(fd, batch)
        if done < want:
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                rest = rest[os.write(fd, rest):]


def _unlink_strict(path: str) -> None:
    """Delete ``path``; already gone is fine, any other error is the action's result."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def perform_actions(root: str, actions: Sequence[HlsAction]) -> list[OSError | None]:
    """Apply actions below ``root`` in order with a fresh :class:`SegmentFiles` (segments must be complete in
    ``actions``; a part left open is deleted)."""
    files = SegmentFiles(root)
    try:
        return files.perform(actions)
    finally:
        files.abandon()


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class SegmentCache:
    """Segments recently served, shared by every stream key, bounded in total bytes (least recently used out).

    Why not keep each stream's newest segments as they are written: that is ~3 segments per stream whether or
    not anyone watches (50 streams of 2.7 MB segments: 400 MB). Segments are read from disk when first asked
    for (the OS page cache usually has them: they were just written) and kept here while players ask for them:
    the live players of a stream all fetch the same newest few, so a popular stream is served from memory and
    an unwatched one costs nothing. Concurrent misses for one file share one read. Entries larger than a
    quarter of the bound are served but not kept.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._loading: dict[str, asyncio.Task[bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    async def get(self, path: str) -> bytes | None:
        """The file's bytes (None when it cannot be read), from memory or read in a worker thread."""
        data = self._entries.get(path)
        if data is not None:
            self._entries.move_to_end(path)
            return data
        task = self._loading.get(path)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(path), name="hls-segment-read")
            self._loading[path] = task
            task.add_done_callback(lambda t: self._loading.pop(path) if self._loading.get(path) is t else None)
        return await asyncio.shield(task)  # a requester that goes away does not cancel the others' read

    def clear(self) -> None:
        self._loading.clear()
        self._entries.clear()
        self.size = 0

    def discard(self, path: str) -> None:
        """``path`` was deleted or replaced: forget it, and do not keep what a read in flight returns."""
        self._loading.pop(path, None)
        data = self._entries.pop(path, None)
        if data is not None:
            self.size -= len(data)

    async def _load(self, path: str) -> bytes | None:
        data = await asyncio.to_thread(read_file, path)
        if data is not None and self._loading.get(path) is asyncio.current_task() and len(data) <= self.limit // 4:
            self._entries[path] = data
            self.size += len(data)
            while self.size > self.limit:
                _, old = self._entries.popitem(last=False)
                self.size -= len(old)
        return data


def relative_path(path: str) -> str | None:
    """The request path as a name relative to ``hls_path``; None when it would leave it."""
    if "\x00" in path or "\\" in path:
        return None
    norm = posixpath.normpath(path.lstrip("/"))
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


Job = tuple[SegmentFiles, Sequence[HlsAction], "asyncio.Future[list[OSError | None]]"]


def _perform_jobs(jobs: list[Job]) -> list[list[OSError | None] | BaseException]:
    """Worker thread: every job's actions, in order; a job that raises does not stop the others."""
    out: list[list[OSError | None] | BaseException] = []
    for files, actions, _ in jobs:
        try:
            out.append(files.perform(actions))
        except BaseException as exc:  # noqa: BLE001 - the exception is the job's result, raised in its writer
            out.append(exc)
    return out


class DiskBatcher:
    """Hands the batches of every writer of one event loop to a worker thread together, one thread call at a
    time, at most one every ``window`` seconds.

    Why: each ``to_thread`` wakes a thread, which costs the event loop more than a page-cache write (and holds
    the GIL against it); with one call per writer per batch, 50 streams cost ~100 hand-offs a second. Gathering
    them makes that ~1/window whatever the number of streams, and the actions of one writer still run in order
    (a writer waits for its batch before it hands over the next). A slow disk slows every stream's writing, as
    the shared thread pool did, but never the event loop.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DiskBatcher] = weakref.WeakKeyDictionary()

    def __init__(self, window: float = BATCH_WINDOW) -> None:
        self.window = window
        self.calls = 0  # thread calls made (for the tests and the bench)
        self._jobs: list[Job] = []
        self._busy = False

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> DiskBatcher:
        """The batcher shared by the writers of ``loop``."""
        batcher = cls._by_loop.get(loop)
        if batcher is None:
            batcher = cls._by_loop[loop] = cls()
        return batcher

    def perform(self, files: SegmentFiles, actions: Sequence[HlsAction]) -> asyncio.Future[list[OSError | None]]:
        """``files.perform(actions)`` in the worker thread with the other writers' batches; its results."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[OSError | None]] = loop.create_future()
        self._jobs.append((files, actions, fut))
        if not self._busy:
            self._busy = True
            loop.call_later(self.window, self._start, loop)
        return fut

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._jobs = self._jobs, []
        # (the job of a writer cancelled meanwhile is run too: its SegmentFiles was stopped when the writer
        # ended, so every action of it returns WriterStopped and touches no file; see HlsWriter._run)
        try:
            call = loop.run_in_executor(None, _perform_jobs, jobs)
        except RuntimeError as exc:  # the loop's executor is shut down (the server is stopping)
            self._busy = False
            for _, _, fut in jobs:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.calls += 1
        call.add_done_callback(lambda done: self._done(loop, jobs, done))

    def _done(self, loop: asyncio.AbstractEventLoop, jobs: list[Job], call: asyncio.Future[Any]) -> None:
        exc = None if call.cancelled() else call.exception()
        results = call.result() if exc is None and not call.cancelled() else None
        for i, (_, _, fut) in enumerate(jobs):
            if fut.done():
                continue  # its writer was cancelled meanwhile
            if results is None:
                fut.set_exception(exc or asyncio.CancelledError())
            elif isinstance(results[i], BaseException):
                fut.set_exception(results[i])  # type: ignore[arg-type]
            else:
                fut.set_result(results[i])  # type: ignore[arg-type]
        if self._jobs:
            loop.call_later(self.window, self._start, loop)
        else:
            self._busy = False


class HlsWriter:
    """Performs one stream key's actions in order, a batch at a time in a worker thread (through ``disk``, by
    default the :class:`DiskBatcher` of the running loop).

    ``on_written(actions, results)`` runs on the event loop after each batch, so the in-memory view (what
    may be served) only ever follows what is on disk. When the task ends (:meth:`close` performed, or
    cancelled) the parts of segments still open are deleted.

    Failed actions are logged once per failing run, not once each: a full disk fails every append, close and
    playlist of the stream for as long as it is full. The first failure is logged (``hls-write-error``); the
    run ends when a segment is complete on disk again (``hls-write-recovered``, with the failures not logged).
    """

    _STOP: Final = object()

    def __init__(
        self,
        root: str,
        label: str,
        on_written: Callable[[Sequence[HlsAction], Sequence[OSError | None]], None] | None = None,
        after: asyncio.Future[Any] | None = None,
        disk: DiskBatcher | None = None,
    ) -> None:
        self.root = root
        self.label = label
        self.on_written = on_written
        self.errors = 0  # actions that failed
        self.failing = False  # in a run of failures (logged once, see the class docstring)
        self._unlogged = 0  # failures of the current run not logged
        self.files = SegmentFiles(root)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        loop = asyncio.get_running_loop()
        self.disk = disk if disk is not None else DiskBatcher.for_loop(loop)
        self.task = loop.create_task(self._run(after), name=f"hls-writer {label}")

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
        try:
            await self._loop(after)
        finally:
            if not self.files.try_abandon():  # cancelled in the middle of a batch: its thread finishes first
                try:
                    asyncio.get_running_loop().run_in_executor(None, self.files.abandon)
                except RuntimeError:  # (the loop's executor is already shut down: a leftover, cleared later)
                    pass

    async def _loop(self, after: asyncio.Future[Any] | None) -> None:
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
                results = await self.disk.perform(self.files, batch)
            except Exception:  # noqa: BLE001 - a bug here must not stop this key's output for good
                event(log, "hls-writer-error", logging.ERROR, exc_info=True, writer=self.label)
                continue
            self._log_results(batch, results)
            if self.on_written is not None:
                try:
                    self.on_written(batch, results)
                except Exception:  # noqa: BLE001
                    event(log, "hls-writer-error", logging.ERROR, exc_info=True, writer=self.label)

    def _log_results(self, batch: Sequence[HlsAction], results: Sequence[OSError | None]) -> None:
        for act, err in zip(batch, results):
            if err is not None:
                self.errors += 1
                if self.failing:
                    self._unlogged += 1
                else:
                    self.failing = True
                    event(log, "hls-write-error", logging.WARNING, writer=self.label, file=act.name,
                          reason=describe_error(err))
            elif self.failing and isinstance(act, CloseSegment):
                event(log, "hls-write-recovered", writer=self.label, file=act.name, unlogged=self._unlogged)
                self.failing = False
                self._unlogged = 0
