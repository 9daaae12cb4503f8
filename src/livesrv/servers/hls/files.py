"""HLS files on disk: written atomically, in order, off the event loop, and only inside ``hls_path``.

ONE :class:`HlsWriter` task per stream key performs the segmenter's file actions in order, a batch at a time in
a worker thread, each file written atomically (temp name in the same directory, then ``os.replace``). So
writing never blocks the event loop, files of one key are never written concurrently or out of order, and a
reader never sees half a playlist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Final

from livesrv.log import event
from livesrv.remux.hls import HlsAction, WritePlaylist, WriteSegment

log = logging.getLogger("livesrv.hls")


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


def read_file(path: str) -> bytes | None:
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
