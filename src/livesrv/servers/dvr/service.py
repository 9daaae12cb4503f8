"""DVR: records streams to FLV or MP4 files (SRS's ``vhost { dvr { ... } }``).

A recording is an output of its stream (``hub.stream.Output``): the hub asks this service for one when a
stream goes live (:meth:`DvrService._provide`); each live period (publish to unpublish) is one
:class:`Recording`, which is also a client of the hub's registry (kind ``recorder``, protocol ``dvr``), so the
API lists it and kicking it stops the recording. Its packets go through the sans-IO
:class:`~livesrv.remux.dvr.DvrRecorder`; its files through one :class:`~.files.DvrWriter` (a worker thread).

``on_dvr`` fires once per file, after it is complete under its final name. A recording whose disk fails ends
with one log line (``event=dvr-failed``); the stream and its viewers go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from livesrv.hooks import payloads
from livesrv.hub.clients import RECORDER, HookContext
from livesrv.hub.stream import Stream
from livesrv.log import event
from livesrv.media.packet import MediaPacket
from livesrv.remux.dvr import CloseFile, DvrRecorder, dvr_applies
from livesrv.hub.clients import new_client_id
from livesrv.servers.dvr.files import DvrWriter

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.dvr")

#: Seconds the end of a live period waits for its last file (the rest finishes in the background).
FINISH_TIMEOUT: Final = 20.0
#: Seconds ``stop()`` waits for every recording to finish its files.
STOP_TIMEOUT: Final = 20.0


class Recording:
    """One live period's recording; a client of the hub's registry (kind ``recorder``)."""

    kind = RECORDER
    protocol = "dvr"
    ip = "127.0.0.1"

    def __init__(self, service: DvrService, stream: Stream, recorder: DvrRecorder, ctx: HookContext) -> None:
        self.service = service
        self.stream = stream
        self.generation = stream.generation
        self.recorder = recorder
        self.publisher_context = ctx  # on_dvr reports the publisher, as SRS
        self.cid = new_client_id()
        self.context = dataclasses.replace(ctx, client_id=self.cid)
        self.started = time.time()
        # Nothing comes in from the network for a recording (the publisher's bytes are counted once, as its):
        # recv_bytes stays 0, send_bytes is what was written to disk.
        self.recv_bytes = 0
        self.stopped: str | None = None  # why no more packets are recorded
        self.finished_files: list[str] = []
        self.writer = DvrWriter(f"{stream.key} {self.cid}", self._closed, self._failed)

    @property
    def send_bytes(self) -> int:
        return self.writer.written

    @property
    def current_file(self) -> str | None:
        """The name of the file being written, as it is on disk (a ``-1`` variant when the template's name was
        taken); None between files, until the next one exists."""
        fid = self.recorder.current_fid
        return None if fid is None else self.writer.files.names.get(fid)

    def info(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "file": self.current_file,
            "duration": round(self.recorder.current_duration, 3),
            "files": len(self.finished_files),
            "bytes": self.writer.written,
            "error": self.writer.failed,
        }

    def feed(self, pkt: MediaPacket) -> None:
        if self.stopped is None:
            self.writer.submit(self.recorder.feed(pkt, time.time()))

    def stop(self, reason: str) -> None:
        """No more packets: the open file is finished, then the writer ends."""
        if self.stopped is not None:
            return
        self.stopped = reason
        self.writer.submit(self.recorder.finish())
        self.writer.close()
        self.writer.task.add_done_callback(lambda _t: self.service.hub.unregister(self))
        event(log, "dvr-stop", stream=self.stream.key, client=self.cid, reason=reason)

    def kick(self, reason: str) -> None:
        self.stop(f"kicked: {reason}")

    def _closed(self, act: CloseFile, path: str) -> None:
        self.finished_files.append(path)
        event(log, "dvr-file", stream=self.stream.key, client=self.cid, file=path, duration=round(act.duration, 3),
              size=act.size)
        ctx = self.publisher_context
        self.service.access.dvr(ctx.vhost, lambda ident: payloads.on_dvr(ident, ctx, path))

    def _failed(self, reason: str) -> None:
        event(log, "dvr-failed", logging.ERROR, stream=self.stream.key, client=self.cid, reason=reason)
        self.stopped = self.stopped or f"failed: {reason}"
        self.writer.task.add_done_callback(lambda _t: self.service.hub.unregister(self))


class DvrOutput:
    """A stream's DVR output: one :class:`Recording` per live period (a takeover's new period may start before
    the old one's :meth:`end`: each is keyed by its generation)."""

    name = "dvr"
    owner_only = True  # (workers: one writer of the files)
    linger: float | None = None

    def __init__(self, service: DvrService) -> None:
        self.service = service
        self.recordings: dict[int, Recording] = {}
        self.current: Recording | None = None

    def info(self) -> dict[str, Any] | None:
        """For the API's stream object: the active recording."""
        rec = self.current
        return rec.info() if rec is not None and rec.stopped is None else None

    def start(self, stream: Stream) -> None:
        old = self.current
        if old is not None:
            old.stop("a new publisher took over")  # (its end() waits for the file)
        self.current = self.service.new_recording(stream)
        if self.current is not None:
            self.recordings[stream.generation] = self.current

    def on_packet(self, pkt: MediaPacket) -> None:
        rec = self.current
        if rec is not None:
            rec.feed(pkt)

    async def end(self, stream: Stream, generation: int) -> None:
        rec = self.recordings.pop(generation, None)
        if rec is None:
            return
        if self.current is rec:
            self.current = None
        rec.stop("unpublished")
        try:
            # shielded: a cancelled drain (shutdown) must not cancel the writer, which stop() then awaits
            await asyncio.wait_for(asyncio.shield(rec.writer.task), FINISH_TIMEOUT)
        except asyncio.TimeoutError:
            event(log, "dvr-finish-slow", logging.WARNING, stream=stream.key, client=rec.cid)

    def dispose(self) -> None:
        pass


class DvrService:
    """Gives every stream of a DVR-enabled vhost its recording output."""

    def __init__(self, hub: Hub, config: Callable[[], Config], access: Access) -> None:
        self.hub = hub
        self._config = config
        self.access = access
        self.recordings: set[Recording] = set()

    async def start(self) -> None:
        self.hub.output_providers.append(self._provide)

    async def stop(self) -> None:
        """Finish every recording's file (server shutdown), bounded in time."""
        if self._provide in self.hub.output_providers:
            self.hub.output_providers.remove(self._provide)
        for rec in list(self.recordings):
            rec.stop("server stopping")
        tasks = [rec.writer.task for rec in self.recordings]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                t.cancel()
            if pending:
                event(log, "dvr-stop-timeout", logging.WARNING, recordings=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        self.recordings.clear()

    def _provide(self, stream: Stream) -> DvrOutput | None:
        existing = stream.extra.get("dvr")
        if isinstance(existing, DvrOutput):
            return existing  # (already attached: a republish on the same Stream)
        cfg = self._config().vhost(stream.key.vhost)
        if not (cfg.enabled and cfg.dvr.enabled):
            return None
        output = stream.extra["dvr"] = DvrOutput(self)
        return output

    def new_recording(self, stream: Stream) -> Recording | None:
        """A live period starts: its recording, when the vhost's DVR (read now: reloads apply) applies."""
        key = stream.key
        vhost = self._config().vhost(key.vhost)
        cfg = vhost.dvr
        if not (vhost.enabled and cfg.enabled and dvr_applies(cfg.dvr_apply, key.app, key.stream)):
            return None
        if stream.publisher is None:
            return None
        try:
            recorder = DvrRecorder(path=cfg.dvr_path, vhost=key.vhost, app=key.app, stream=key.stream,
                                   plan=cfg.dvr_plan, duration=cfg.dvr_duration, wait_keyframe=cfg.dvr_wait_keyframe,
                                   time_jitter=cfg.time_jitter)
        except ValueError as exc:  # a stream name that would write outside the dvr_path's directory
            event(log, "dvr-refused", logging.WARNING, stream=key, reason=str(exc))
            return None
        rec = Recording(self, stream, recorder, stream.publisher.context)
        self.recordings.add(rec)
        rec.writer.task.add_done_callback(lambda _t: self.recordings.discard(rec))
        self.hub.register(rec)
        event(log, "dvr-start", stream=key, client=rec.cid, generation=stream.generation, plan=cfg.dvr_plan,
              path=cfg.dvr_path)
        return rec
