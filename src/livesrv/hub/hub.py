"""The registry of streams: the single owner of every stream, its publisher and its viewers.

Every method that changes a stream is a plain ``def`` that checks and commits in one synchronous step
(:func:`livesrv.hub.states.transition`), so no other task can run in between. Slow work runs in drain tasks
while the stream sits in DRAINING; only :meth:`Hub._drained` carrying the same generation returns it to
IDLE. A new publisher never waits for an old one's teardown and never touches it: it gets a new generation,
and every completion of the old one is then stale and ignored.

The lifecycle hazards this rules out are listed in the project's design notes (SRS #4140 and its family):
a stream is removed only when it is IDLE with no viewer registered — and viewers register *before* their
first await (on_play hook) — so nothing can be freed under a client that is still on its way in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from livesrv.hub.clients import Client
from livesrv.hub.keys import StreamKey
from livesrv.log import event
from livesrv.hub.states import PUBLISHED, Event, State, transition
from livesrv.hub.stream import PENDING, Output, Publisher, Stream, StreamSettings, Viewer

log = logging.getLogger("livesrv.hub")


class StreamBusy(Exception):
    """Another publisher holds the stream and this vhost refuses takeovers (SRS's behaviour)."""


class PublishToken:
    """A publisher's claim on one generation of a stream. ``release`` is idempotent and safe when stale."""

    __slots__ = ("hub", "stream", "generation", "publisher", "released")

    def __init__(self, hub: Hub, stream: Stream, generation: int, publisher: Publisher) -> None:
        self.hub = hub
        self.stream = stream
        self.generation = generation
        self.publisher = publisher
        self.released = False

    @property
    def current(self) -> bool:
        s = self.stream
        return not self.released and s.generation == self.generation and s.state in PUBLISHED

    @property
    def live(self) -> bool:
        return self.current and self.stream.state is State.LIVE

    def ready(self) -> bool:
        return self.hub.publish_ready(self)

    def release(self, reason: str = "") -> None:
        self.hub.release_publish(self, reason)


#: Slow work of a generation that ended (on_unpublish hooks, finishing HLS), awaited while DRAINING.
DrainHandler = Callable[[Stream, int, Publisher], Awaitable[None]]


class Hub:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Callable[[float, Callable[[], None]], Any] | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.streams: dict[StreamKey, Stream] = {}
        self.clock = clock
        self._schedule = schedule
        self.drain_timeout = drain_timeout
        self.drain_handlers: list[DrainHandler] = []
        # Called in the READY step: each may return an output to attach to the stream (HLS, DVR, forwards).
        self.output_providers: list[Callable[[Stream], Output | None]] = []
        # Outputs kept after their stream's live period, until a new one starts or ``linger`` seconds pass.
        self._lingering: dict[StreamKey, dict[Output, Any]] = {}  # output -> its timer handle
        self.tasks: set[asyncio.Task[None]] = set()
        self.clients: dict[str, Client] = {}  # every client of every protocol, by id (see hub.clients)
        # Told (synchronously, after the step) when a stream's viewers or publisher changed: a viewer attached
        # or detached, a publisher left. The edge starts and stops its pulls from here. Must not raise or block.
        self.watchers: list[Callable[[StreamKey], None]] = []

    # ------------------------------------------------------------------------------------ lookup

    def get(self, key: StreamKey) -> Stream | None:
        return self.streams.get(key)

    # ----------------------------------------------------------------------------------- clients

    def register(self, client: Client) -> None:
        """List a client (a publisher or viewer that started, a session, a forwarder...). Its owner
        unregisters it exactly once when it ends; an id is never shared by two live clients."""
        old = self.clients.get(client.cid)
        if old is not None and old is not client:
            raise ValueError(f"client id {client.cid} is already registered")
        self.clients[client.cid] = client

    def unregister(self, client: Client) -> None:
        """Forget a client. Idempotent, and a stale call for another client with the same id does nothing."""
        if self.clients.get(client.cid) is client:
            del self.clients[client.cid]

    def viewers(self) -> Iterator[Viewer]:
        for stream in self.streams.values():
            yield from stream.viewers.values()

    def _stream(self, key: StreamKey, settings: StreamSettings) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            schedule = self._schedule
            if schedule is None and settings.flush_interval > 0:
                schedule = _running_loop_schedule()
            stream = self.streams[key] = Stream(key, settings, schedule, self.clock)
        return stream

    # --------------------------------------------------------------------------------- publishing

    def begin_publish(
        self, key: StreamKey, publisher: Publisher, settings: StreamSettings, param: str = ""
    ) -> PublishToken:
        """Claim the stream for ``publisher`` (STARTING). Takes it over from a current publisher when the vhost
        allows, else raises :class:`StreamBusy`. A stream still DRAINING is taken at once."""
        stream = self._stream(key, settings)
        old = stream.publisher if stream.state in PUBLISHED else None
        if old is not None and not settings.takeover:
            raise StreamBusy(f"stream {key} is already published by client {old.cid}")
        was_live = stream.state is State.LIVE
        old_generation = stream.generation
        stream.state = transition(stream.state, Event.PUBLISH)  # checked and committed in this one step
        stream.generation += 1
        stream.publisher = publisher
        stream.param = param
        stream.new_generation()
        token = PublishToken(self, stream, stream.generation, publisher)
        if old is not None:
            reason = f"taken over by client {publisher.cid}"
            if was_live:
                self._start_drain(stream, old_generation, old)
            old.kick(reason)  # its own release is stale now: it cannot touch the new generation
        return token

    def publish_ready(self, token: PublishToken) -> bool:
        """The publisher's hooks accepted: media flows. False when the claim went stale meanwhile."""
        if not token.current or token.stream.state is not State.STARTING:
            return False
        stream = token.stream
        stream.state = transition(stream.state, Event.READY)
        stream.live_since = time.time()
        for handle in self._lingering.pop(stream.key, {}).values():
            handle.cancel()  # continued: no output of this key is disposed now
        for v in list(stream.viewers.values()):
            v.wait_deadline = None
            v.owner.publisher_arrived(stream)
        if getattr(stream.publisher, "mirror", False):
            # A copy of a stream another worker of this host owns (and writes: HLS, DVR, forwards). Two writers
            # of one file would corrupt it, so this period feeds viewers only (HTTP-TS, WebRTC); the owner-only
            # outputs of an earlier period here are let go (their lingering waits were cancelled above: the
            # owner continues those files).
            stream.outputs = [o for o in stream.outputs if not getattr(o, "owner_only", False)]
        else:
            for provide in self.output_providers:
                output = provide(stream)
                if output is not None:
                    stream.add_output(output)
        for output in list(stream.outputs):
            try:
                output.start(stream)
            except Exception as exc:  # isolated: this output is detached, the stream goes live
                stream.output_failed(output, exc)
        return True

    def release_publish(self, token: PublishToken, reason: str = "") -> None:
        """End the publisher's claim: ABORT before READY, UNPUBLISH after. Idempotent; stale calls do nothing."""
        if token.released:
            return
        token.released = True
        stream = token.stream
        if stream.generation != token.generation or stream.state not in PUBLISHED:
            return  # taken over (or already ended): the new generation is not ours to touch
        now = self.clock()
        grace = stream.settings.republish_grace
        if stream.state is State.STARTING:
            stream.state = transition(stream.state, Event.ABORT)
            stream.publisher = None
            for v in stream.viewers.values():
                if v.wait_deadline is None and v.cursor != PENDING:
                    v.wait_deadline = now + grace
            self._linger(stream)  # outputs of an earlier period (a takeover that never went live) wait again
            self._collect(stream)
            self._notify(stream.key)
            return
        stream.state = transition(stream.state, Event.UNPUBLISH)
        publisher, stream.publisher = stream.publisher, None
        stream.flush()  # viewers get the tail of the last batch
        for v in list(stream.viewers.values()):
            v.wait_deadline = now + grace
            v.owner.publisher_left(stream)
        assert publisher is not None
        self._start_drain(stream, token.generation, publisher)
        self._notify(stream.key)

    def _start_drain(self, stream: Stream, generation: int, publisher: Publisher) -> None:
        """The slow work of a period that ended: its outputs' ``end`` and the drain handlers (on_unpublish), all
        at once, each bounded by ``drain_timeout``; the stream is DRAINED when every one has returned."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (getattr(h, "__name__", "handler"), functools.partial(h, stream, generation, publisher))
            for h in self.drain_handlers
        ]
        steps += [(o.name, functools.partial(o.end, stream, generation)) for o in stream.outputs]
        if not steps:
            self._drained(stream, generation)
            return
        task = asyncio.get_running_loop().create_task(
            self._drain(stream, generation, steps), name=f"drain {stream.key} gen={generation}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(
        self, stream: Stream, generation: int, steps: list[tuple[str, Callable[[], Awaitable[None]]]]
    ) -> None:
        async def bounded(name: str, step: Callable[[], Awaitable[None]]) -> None:
            try:
                await asyncio.wait_for(step(), self.drain_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one failing step must not keep the stream draining
                event(log, "drain-error", logging.WARNING, stream=stream.key, generation=generation, step=name,
                      reason=repr(exc))

        try:
            await asyncio.gather(*(bounded(name, step) for name, step in steps))
        finally:
            self._drained(stream, generation)

    def _drained(self, stream: Stream, generation: int) -> None:
        if stream.generation != generation or stream.state is not State.DRAINING:
            # A new publisher arrived meanwhile: this drain's completion is stale. If that one has come and
            # gone without going live, the outputs of this period are idle now: they wait for their dispose.
            if stream.state is State.IDLE:
                self._linger(stream)
            return
        stream.state = transition(stream.state, Event.DRAINED)
        self._linger(stream)
        self._collect(stream)

    def _linger(self, stream: Stream) -> None:
        """The period's outputs that outlive it wait (the stream may be collected meanwhile) for a new period
        of the key, which cancels the wait in its READY step, or for ``linger`` seconds, then are disposed."""
        for output in stream.outputs:
            delay = output.linger
            if delay is None:
                continue
            waiting = self._lingering.setdefault(stream.key, {})
            old = waiting.pop(output, None)
            if old is not None:
                old.cancel()
            schedule = self._schedule or _loop_schedule
            waiting[output] = schedule(delay, functools.partial(self._dispose, stream.key, output))

    def _dispose(self, key: StreamKey, output: Output) -> None:
        waiting = self._lingering.get(key)
        if waiting is None or waiting.pop(output, None) is None:
            return  # (cancelled by a new period)
        if not waiting:
            del self._lingering[key]
        stream = self.streams.get(key)
        if stream is not None:
            stream.remove_output(output)  # a later period gets a fresh one from its provider
        try:
            output.dispose()
        except Exception as exc:  # isolated, as every output call
            event(log, "output-dispose-error", logging.ERROR, exc_info=exc, stream=key, output=output.name,
                  reason=repr(exc))

    def lingering(self, key: StreamKey) -> list[Output]:
        """Outputs of ``key`` waiting to be disposed (none while the key is live)."""
        return list(self._lingering.get(key, {}))

    # ------------------------------------------------------------------------------------ viewers

    def attach(self, key: StreamKey, viewer: Viewer, settings: StreamSettings) -> Stream:
        """Register a viewer (it now holds the stream) before any await; it gets media after :meth:`admit`."""
        stream = self._stream(key, settings)
        viewer.stream = stream
        viewer.created = self.clock()
        old = stream.viewers.get(viewer.cid)
        if old is not None and old is not viewer:
            raise ValueError(f"client id {viewer.cid} already attached to {key}")
        stream.viewers[viewer.cid] = viewer
        self._notify(key)
        return stream

    def admit(self, viewer: Viewer) -> bool:
        """Start sending to a registered viewer (its hooks accepted). False if it was detached meanwhile."""
        stream = viewer.stream
        if viewer.detached or stream is None or stream.viewers.get(viewer.cid) is not viewer:
            return False
        stream.admit(viewer)
        if not stream.live:
            viewer.wait_deadline = self.clock() + stream.settings.wait_timeout
        return True

    def detach(self, viewer: Viewer) -> None:
        """Unregister a viewer. Idempotent."""
        if viewer.detached:
            return
        viewer.detached = True
        stream = viewer.stream
        if stream is not None and stream.viewers.get(viewer.cid) is viewer:
            del stream.viewers[viewer.cid]
            self._collect(stream)
            self._notify(stream.key)

    def _notify(self, key: StreamKey) -> None:
        for watch in self.watchers:
            try:
                watch(key)
            except Exception as exc:  # a watcher's bug must not undo the step that was just committed
                event(log, "watcher-error", logging.ERROR, exc_info=exc, stream=key, reason=repr(exc))

    # ------------------------------------------------------------------------------ housekeeping

    def _collect(self, stream: Stream) -> None:
        """Forget a stream nobody holds: IDLE (no publisher, no drain running) and no viewer registered."""
        if stream.state is State.IDLE and not stream.viewers and self.streams.get(stream.key) is stream:
            stream.cancel_timers()
            del self.streams[stream.key]

    def sweep(self, now: float | None = None) -> None:
        """Close viewers whose wait or grace period ran out, or that stopped reading. Called periodically."""
        if now is None:
            now = self.clock()
        for stream in list(self.streams.values()):
            if not stream.viewers:
                continue
            settings = stream.settings
            live = stream.live
            for v in list(stream.viewers.values()):
                if not live and v.wait_deadline is not None and now >= v.wait_deadline:
                    v.owner.close_viewer("no publisher: wait or republish grace period over")
                elif v.stalled_since is not None and now - v.stalled_since > settings.stall_timeout:
                    v.owner.close_viewer(f"viewer stopped reading for {settings.stall_timeout:g}s")

    def end_stream(self, key: StreamKey, reason: str) -> bool:
        """Operator action: kick the publisher and close every viewer. The stream is then collected."""
        stream = self.streams.get(key)
        if stream is None:
            return False
        if stream.publisher is not None:
            stream.publisher.kick(reason)
        for v in list(stream.viewers.values()):
            v.owner.close_viewer(reason)
        return True

    async def close(self, grace: float = 0.0) -> None:
        """Server shutdown: running drains (on_unpublish hooks, the last HLS segment and DVR file) get up to
        ``grace`` seconds to finish, then are cancelled; lingering outputs' waits are dropped (each service ends
        its own outputs)."""
        if grace > 0 and self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for waiting in self._lingering.values():
            for handle in waiting.values():
                handle.cancel()
        self._lingering.clear()


def _loop_schedule(delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, fn)


def _running_loop_schedule() -> Callable[[float, Callable[[], None]], Any]:
    """The running loop's ``call_later``, looked up once for a stream's flushes (in Python 3.11 each
    ``get_running_loop()`` is a getpid() system call); ``_loop_schedule`` when no loop runs yet."""
    try:
        return asyncio.get_running_loop().call_later
    except RuntimeError:
        return _loop_schedule
