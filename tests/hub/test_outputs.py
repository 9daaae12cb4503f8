"""Outputs of a stream (hub.stream.Output): told when a live period starts and ends, isolated from each other
and from the publisher, and drained concurrently with the hooks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from livesrv.access import Access, default_identity
from livesrv.hub.hub import Hub
from livesrv.hub.states import State
from livesrv.hub.stream import Stream
from livesrv.media.packet import MediaPacket
from livesrv.servers.hls.service import HlsService
from tests.conftest import server_config
from tests.hub.fakes import KEY, PER_MESSAGE, FakePublisher, make_viewer, video
from tests.helpers import wait_until
from tests.remux.test_hls_segmenter import av_stream


class Recording:
    """An output that records what the hub told it; ``fail_on`` makes one of its calls raise."""

    def __init__(self, name: str, fail_on: str = "", end_delay: float = 0.0, linger: float | None = None) -> None:
        self.name = name
        self.linger = linger
        self.disposed = 0
        self.fail_on = fail_on
        self.end_delay = end_delay
        self.calls: list[tuple[str, object]] = []
        self.packets = 0
        self.ended = asyncio.Event()

    def start(self, stream: Stream) -> None:
        self.calls.append(("start", stream.generation))
        if self.fail_on == "start":
            raise RuntimeError("start failed")

    def on_packet(self, pkt: MediaPacket) -> None:
        self.packets += 1
        if self.fail_on == "packet" and self.packets == 3:
            raise RuntimeError("a bug in an output")

    async def end(self, stream: Stream, generation: int) -> None:
        self.calls.append(("end", generation))
        if self.end_delay:
            await asyncio.sleep(self.end_delay)
        self.ended.set()
        if self.fail_on == "end":
            raise RuntimeError("end failed")

    def dispose(self) -> None:
        self.disposed += 1


def publish(hub: Hub) -> FakePublisher:
    pub = FakePublisher()
    pub.token = hub.begin_publish(KEY, pub, PER_MESSAGE)
    assert pub.token.ready()
    return pub


async def test_an_output_that_raises_is_detached_and_everyone_else_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    hub = Hub()
    good, bad, bad_start = Recording("good"), Recording("bad", "packet"), Recording("bad-start", "start")
    hub.output_providers.append(lambda s: good)
    hub.output_providers.append(lambda s: bad)
    hub.output_providers.append(lambda s: bad_start)
    pub = publish(hub)
    stream = pub.token.stream  # type: ignore[union-attr]
    assert stream.outputs == [good, bad]  # the one whose start raised is detached at once
    v, _, transport = make_viewer(hub)
    hub.attach(KEY, v, PER_MESSAGE)
    hub.admit(v)
    for i in range(10):
        assert stream.ingest(pub.token.generation, video(i * 40, i == 0, b"x"))  # type: ignore[union-attr]
    assert stream.outputs == [good] and stream.live and not pub.kicked
    assert good.packets == 10 and bad.packets == 3
    assert transport.media_tags(), "the viewer still gets media"
    detached = [r.getMessage() for r in caplog.records if "output-detached" in r.getMessage()]
    assert len(detached) == 2 and any("output=bad " in m for m in detached), detached
    pub.token.release("left")  # type: ignore[union-attr]
    await wait_until(lambda: not hub.tasks, 5, "the drain")
    assert good.calls == [("start", 1), ("end", 1)] and bad.calls == [("start", 1)]


async def test_outputs_and_hooks_drain_concurrently_and_a_failing_end_still_drains() -> None:
    hub = Hub(drain_timeout=5)
    hook_started = asyncio.Event()
    release_hook = asyncio.Event()

    async def slow_on_unpublish(stream: Stream, generation: int, publisher: object) -> None:
        hook_started.set()
        await release_hook.wait()

    hub.drain_handlers.append(slow_on_unpublish)
    out, failing = Recording("out"), Recording("failing", "end")
    hub.output_providers += [lambda s: out, lambda s: failing]
    pub = publish(hub)
    stream = pub.token.stream  # type: ignore[union-attr]
    pub.token.release("left")  # type: ignore[union-attr]
    assert stream.state is State.DRAINING
    await asyncio.wait_for(asyncio.gather(out.ended.wait(), failing.ended.wait(), hook_started.wait()), 5)
    assert stream.state is State.DRAINING  # the hook is still running: the stream waits for it
    release_hook.set()
    await wait_until(lambda: hub.get(KEY) is None, 5, "the stream to be collected once every step returned")


async def test_an_output_lingers_after_its_period_and_a_new_period_cancels_the_wait() -> None:
    """The hub owns the wait before an output is disposed (HLS files: hls_dispose): a new publisher of the same
    key cancels it in its READY step, whether the Stream object was collected meanwhile or not."""
    hub = Hub()
    out = Recording("lingers", linger=0.2)
    hub.output_providers.append(lambda s: out)
    pub = publish(hub)
    pub.token.release("left")  # type: ignore[union-attr]
    await wait_until(lambda: hub.lingering(KEY) == [out], 5, "the wait to start")
    assert hub.get(KEY) is None  # the stream was collected; the output waits on its own
    wait = hub._lingering[KEY][out]
    pub2 = publish(hub)  # back in time: continued, not disposed
    assert hub.lingering(KEY) == [] and pub2.token.stream.outputs == [out]  # type: ignore[union-attr]
    assert wait.cancelled() and out.disposed == 0
    pub2.token.release("left")  # type: ignore[union-attr]
    await wait_until(lambda: out.disposed == 1, 5, "the dispose after the second period")
    assert hub.lingering(KEY) == [] and out.calls == [("start", 1), ("end", 1), ("start", 1), ("end", 1)]


async def test_a_slow_on_unpublish_does_not_delay_the_last_hls_segment(tmp_path: Path) -> None:
    """The drain's steps run at once: the last segment and the playlist are on disk while on_unpublish waits."""
    hls = tmp_path / "hls"
    config = server_config(vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 10; hls_path {hls}; }}")
    hub = Hub(drain_timeout=20)
    access = Access(lambda: config, default_identity("vid-t", "t"))
    svc = HlsService(hub, lambda: config, access)
    await svc.start()
    release_hook = asyncio.Event()

    async def slow_on_unpublish(stream: Stream, generation: int, publisher: object) -> None:
        await release_hook.wait()

    hub.drain_handlers.append(slow_on_unpublish)
    try:
        pub = publish(hub)
        token = pub.token
        assert token is not None
        for p in av_stream(2.5):  # real H.264 and AAC headers and frames, keyframes every second
            token.stream.ingest(token.generation, MediaPacket.from_payload(p.kind, p.timestamp, p.payload))
        state = svc.state(KEY)
        assert state is not None
        await wait_until(lambda: len(state.segmenter.segments) >= 2, 10, "two segments")
        before = len(state.segmenter.segments)
        token.release("left")
        # The period's last (partial) segment is cut and written while the hook still holds the drain.
        last = lambda: state.segmenter.segments[-1]  # noqa: E731
        await wait_until(lambda: len(state.segmenter.segments) > before and state.live_for is None
                         and state.playlist_body is not None and last().uri.encode() in state.playlist_body, 10,
                         f"the last segment on disk (segments {state.segmenter.segments}, playlist {state.playlist_body!r})")
        assert (hls / last().name).exists()
        assert token.stream.state is State.DRAINING
    finally:
        release_hook.set()
        await svc.stop()
        await hub.close()
        await access.aclose()


async def test_a_mirror_period_feeds_viewers_only() -> None:
    """``workers N``: a worker's pull of another worker's stream (a publisher with ``mirror``) gets no owner-only
    output (HLS, DVR, forward: the owner writes and pushes) and lets go of those of an earlier period here, while
    outputs that serve viewers (HTTP-TS, WebRTC) stay fed. A local publish after it gets them all again."""
    hub = Hub()
    files, viewers = Recording("files", linger=30), Recording("viewers")
    files.owner_only = True  # type: ignore[attr-defined]
    hub.output_providers.append(lambda s: files)
    pub = publish(hub)
    stream = pub.token.stream  # type: ignore[union-attr]
    stream.add_output(viewers)
    viewers.start(stream)
    v, _, _ = make_viewer(hub)  # (keeps the Stream through the republish grace: its outputs with it)
    hub.attach(KEY, v, PER_MESSAGE)
    hub.admit(v)
    pub.token.release("left")  # type: ignore[union-attr]
    await wait_until(lambda: not hub.tasks, 5, "the drain")
    assert hub.get(KEY) is stream and stream.outputs == [files, viewers]

    mirror = FakePublisher()
    mirror.mirror = True  # type: ignore[attr-defined]
    mirror.token = hub.begin_publish(KEY, mirror, PER_MESSAGE)
    assert mirror.token.ready()
    assert mirror.token.stream is stream
    assert stream.outputs == [viewers] and hub.lingering(KEY) == []  # (never disposed from here: not ours now)
    assert stream.ingest(mirror.token.generation, video(0, True, b"x"))
    assert files.packets == 0 and viewers.packets == 1
    mirror.token.release("left")
    await wait_until(lambda: not hub.tasks, 5, "the drain")
    assert files.calls == [("start", 1), ("end", 1)] and files.disposed == 0

    pub3 = publish(hub)
    assert files in pub3.token.stream.outputs and files.calls[-1] == ("start", pub3.token.generation)  # type: ignore[union-attr]
