"""The fan-out: shared batches, catch-up, slow viewers, timestamps across a republish."""

from __future__ import annotations

from livesrv.hub.hub import Hub
from livesrv.hub.states import State
from livesrv.hub.stream import NEED_KEYFRAME, StreamSettings
from livesrv.media.packet import DATA, MediaPacket
from tests.hub.fakes import AAC_HEADER, AVC_HEADER, KEY, PER_MESSAGE, FakePublisher, audio, make_viewer, video
from livesrv.codec import flv
from livesrv.media.packet import AUDIO, VIDEO


class ManualTimers:
    """A schedule() whose timers fire only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object, "Handle"]] = []

    def __call__(self, delay: float, fn) -> "Handle":  # type: ignore[no-untyped-def]
        h = Handle()
        self.pending.append((delay, fn, h))
        return h

    def fire(self) -> None:
        pending, self.pending = self.pending, []
        for _, fn, h in pending:
            if not h.cancelled:
                fn()  # type: ignore[operator]


class Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def go_live(hub: Hub, settings: StreamSettings = PER_MESSAGE) -> tuple[FakePublisher, object]:
    pub = FakePublisher()
    pub.token = hub.begin_publish(KEY, pub, settings)
    assert pub.token.ready()
    stream = pub.token.stream
    g = pub.token.generation
    stream.set_metadata(g, {"width": 320}, MediaPacket(DATA, 0, b"\x02\x00\x0aonMetaData\x05"))
    stream.ingest(g, MediaPacket.from_payload(VIDEO, 0, AVC_HEADER))
    stream.ingest(g, MediaPacket.from_payload(AUDIO, 0, AAC_HEADER))
    return pub, stream


def send_gop(stream, gen: int, start_ts: int, frames: int = 5, tag: bytes = b"x") -> None:  # type: ignore[no-untyped-def]
    for i in range(frames):
        stream.ingest(gen, video(start_ts + i * 40, i == 0, tag))
        stream.ingest(gen, audio(start_ts + i * 40 + 5, tag))


def test_in_step_viewers_share_one_bytes_object_per_batch() -> None:
    timers = ManualTimers()
    hub = Hub(schedule=timers)
    settings = StreamSettings(flush_interval=0.35)
    pub, stream = go_live(hub, settings)
    viewers = []
    for _ in range(3):
        v, _, t = make_viewer(hub)
        t.keep_writes = True
        hub.attach(KEY, v, settings)
        hub.admit(v)
        viewers.append((v, t))
    send_gop(stream, pub.token.generation, 0)  # the first keyframe: viewers joined without a GOP wait for it
    timers.fire()
    send_gop(stream, pub.token.generation, 200)
    timers.fire()
    last = [t.writes[-1] for _, t in viewers]
    assert last[0] is last[1] is last[2]  # the very same object, serialized once
    assert all(v.cursor == stream.flushed_seq for v, _ in viewers)
    for _, t in viewers:
        tags = t.media_tags()
        assert flv.is_sequence_header(tags[0].payload) or flv.is_audio_sequence_header(tags[0].payload)
        assert any(flv.is_keyframe(x.payload) for x in tags if x.tag_type == flv.VIDEO)


def test_new_viewer_gets_gop_at_once_then_joins_the_shared_batches() -> None:
    timers = ManualTimers()
    hub = Hub(schedule=timers)
    settings = StreamSettings(flush_interval=0.35)
    pub, stream = go_live(hub, settings)
    send_gop(stream, pub.token.generation, 0, frames=3)  # pending, not flushed yet
    v, _, t = make_viewer(hub)
    hub.attach(KEY, v, settings)
    hub.admit(v)
    first = t.tags
    assert [x.tag_type for x in first[:3]] == [flv.SCRIPT, flv.VIDEO, flv.AUDIO]  # metadata + headers first
    assert flv.is_keyframe(first[3].payload) and len(first) == 3 + 6
    send_gop(stream, pub.token.generation, 120, frames=1)
    timers.fire()  # the batch holds packets it already has: it gets only the tail
    assert len(t.tags) == 9 + 2
    ts = [x.timestamp for x in t.media_tags() if x.tag_type == flv.VIDEO]
    assert ts == sorted(ts)
    assert v.cursor == stream.flushed_seq


def test_a_stream_nobody_watches_schedules_no_flush_and_a_later_viewer_misses_nothing() -> None:
    """Without viewers, ingest keeps the GOP cache and nothing else: no batch, no flush timer. A viewer that
    comes later starts from the GOP cache and then takes every batch, each packet once and in order."""
    timers = ManualTimers()
    hub = Hub(schedule=timers)
    settings = StreamSettings(flush_interval=0.35)
    pub, stream = go_live(hub, settings)
    gen = pub.token.generation
    send_gop(stream, gen, 0, frames=4)
    send_gop(stream, gen, 160, frames=3)
    assert timers.pending == [] and stream.pending == []
    v, _, t = make_viewer(hub)
    hub.attach(KEY, v, settings)
    hub.admit(v)
    assert len(t.media_tags()) == 2 + 6  # the sequence headers and the GOP that started at 160
    send_gop(stream, gen, 280, frames=2)
    assert len(timers.pending) == 1  # a viewer: batches again
    timers.fire()
    send_gop(stream, gen, 360, frames=1)
    hub.detach(v)  # it leaves a batch behind: flushed to nobody, and then nothing is scheduled
    timers.fire()
    send_gop(stream, gen, 400, frames=1)
    assert timers.pending == [] and stream.pending == []
    ts = [x.timestamp for x in t.media_tags()][2:]
    assert ts == [160, 165, 200, 205, 240, 245, 280, 285, 320, 325]


def test_blocked_viewer_skips_to_next_keyframe_and_others_go_on() -> None:
    hub = Hub()
    pub, stream = go_live(hub)
    slow, _, ts = make_viewer(hub)
    fast, _, tf = make_viewer(hub)
    for v in (slow, fast):
        hub.attach(KEY, v, PER_MESSAGE)
        hub.admit(v)
    gen = pub.token.generation
    send_gop(stream, gen, 0)
    slow.pause(0.0)  # its socket buffer is full
    send_gop(stream, gen, 200)  # 10 packets it cannot take
    n_slow = ts.nbytes
    assert slow.cursor == NEED_KEYFRAME and slow.dropped == 10
    slow.resume()
    stream.ingest(gen, video(400, False, b"p"))  # an inter frame: still waiting for a keyframe
    assert ts.nbytes == n_slow
    stream.ingest(gen, video(440, True, b"k"))  # rejoins here, with headers first
    new = ts.tags[-4:]
    assert [t.tag_type for t in new] == [flv.SCRIPT, flv.VIDEO, flv.AUDIO, flv.VIDEO]
    assert flv.is_sequence_header(new[1].payload) and flv.is_keyframe(new[3].payload)
    assert new[1].timestamp == new[3].timestamp == 440
    assert len(tf.media_tags()) == 2 + 10 + 10 + 2  # the fast viewer got everything


def test_timestamps_keep_increasing_across_a_republish_and_viewers_survive() -> None:
    hub = Hub()
    pub, stream = go_live(hub)
    v, owner, t = make_viewer(hub)
    hub.attach(KEY, v, PER_MESSAGE)
    hub.admit(v)
    send_gop(stream, pub.token.generation, 0, frames=50)  # up to ~2 s
    end_first = t.media_tags()[-1].timestamp
    pub.token.release("gone")
    assert stream.state is State.IDLE and KEY in hub.streams  # the viewer holds it
    assert owner.left == 1 and v.wait_deadline is not None
    pub2, stream2 = go_live(hub)  # the new publisher starts again at 0
    assert stream2 is stream and owner.arrived == 1 and v.wait_deadline is None
    send_gop(stream, pub2.token.generation, 0, tag=b"second")
    ts = [x.timestamp for x in t.media_tags()]
    assert ts == sorted(ts)
    assert t.media_tags()[-1].payload.endswith(b"second")
    firsts = [x for x in t.media_tags() if x.payload.endswith(b"second")]
    assert end_first < firsts[0].timestamp <= end_first + 100


def test_stale_publisher_media_never_reaches_viewers() -> None:
    hub = Hub()
    pub, stream = go_live(hub)
    v, _, t = make_viewer(hub)
    hub.attach(KEY, v, PER_MESSAGE)
    hub.admit(v)
    old_gen = pub.token.generation
    pub2 = FakePublisher()
    pub2.token = hub.begin_publish(KEY, pub2, PER_MESSAGE)  # takeover
    assert pub.kicked and not pub.token.current
    assert not stream.ingest(old_gen, video(0, True, b"stale"))
    assert pub2.token.ready()
    assert not stream.ingest(old_gen, video(40, True, b"stale"))
    assert stream.ingest(pub2.token.generation, video(0, True, b"new"))
    assert not any(x.payload.endswith(b"stale") for x in t.tags)


def test_refuse_policy_and_draining_stream_accepts_at_once() -> None:
    hub = Hub()
    refuse = StreamSettings(flush_interval=0, takeover=False)
    pub = FakePublisher()
    pub.token = hub.begin_publish(KEY, pub, refuse)
    pub.token.ready()
    import pytest

    from livesrv.hub.hub import StreamBusy

    with pytest.raises(StreamBusy, match="already published by client"):
        hub.begin_publish(KEY, FakePublisher(), refuse)
    assert pub.token.live


def test_grace_period_then_viewers_closed_and_stream_collected() -> None:
    now = [100.0]
    hub = Hub(clock=lambda: now[0])
    settings = StreamSettings(flush_interval=0, republish_grace=5, wait_timeout=7)
    waiting, wowner, _ = make_viewer(hub)
    hub.attach(KEY, waiting, settings)
    hub.admit(waiting)
    assert waiting.wait_deadline == 107
    pub, stream = go_live(hub, settings)
    v, owner, _ = make_viewer(hub)
    hub.attach(KEY, v, settings)
    hub.admit(v)
    pub.token.release()
    now[0] = 104.9
    hub.sweep()
    assert not owner.closed and not wowner.closed
    now[0] = 105.1
    hub.sweep()
    assert owner.closed and wowner.closed
    assert hub.streams == {}


def test_publisher_discontinuities_do_not_reach_viewers() -> None:
    """A negative timestamp sent as 2**32 - x, or a jump, becomes a small step (SRS time_jitter full)."""
    hub = Hub()
    pub, stream = go_live(hub)
    v, _, t = make_viewer(hub)
    hub.attach(KEY, v, PER_MESSAGE)
    hub.admit(v)
    g = pub.token.generation
    stream.ingest(g, video(0, True, b"a"))
    stream.ingest(g, audio(2**32 - 23, b"b"))  # -23 ms, as some muxers send AAC priming
    stream.ingest(g, video(40, False, b"c"))
    stream.ingest(g, video(9_000_000, False, b"d"))  # an encoder's clock jump
    stream.ingest(g, video(9_000_040, False, b"e"))
    ts = [x.timestamp for x in t.media_tags()]
    assert ts[-5:] == [0, 0, 40, 50, 90]
