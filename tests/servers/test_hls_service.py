"""The HLS service without sockets: its writer (order, atomicity, never blocking the loop), its lifecycle driven
through a real Hub (republish, takeover, stale dispose timers), HLS viewer sessions, path safety, and the
HTTP-TS fan-out (joiners, slow viewers). Real players are in tests/e2e/test_hls.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

from livesrv.access import Access, default_identity
from typing import Any

import pytest

from livesrv.codec.hls_playlist import parse_media_playlist
from livesrv.hub.clients import HookContext
from livesrv.hub.hub import Hub, PublishToken
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import StreamSettings
from livesrv.media.packet import MediaPacket
from livesrv.remux.hls import AppendSegment, CloseSegment, DeleteFile, WritePlaylist
from livesrv.servers.hls.files import DiskBatcher, HlsWriter, relative_path
from livesrv.servers.hls.service import HlsService
from livesrv.servers.hls.sessions import SESSION_TIMEOUT
from livesrv.servers.http import Request, Response
from tests.conftest import server_config
from tests.helpers import wait_until
from tests.remux.test_hls_segmenter import av_stream

KEY = StreamKey("__defaultVhost__", "live", "test")
SETTINGS = StreamSettings(flush_interval=0)


# ------------------------------------------------------------------------------------------- writer


async def test_writer_performs_actions_in_order_atomically_off_the_loop(tmp_path: Path) -> None:
    """A reader thread polling the playlist never sees a partial file; segments are written before the playlist
    that names them and deleted after; the event loop keeps ticking while megabytes are written."""
    versions = 40
    body = "#EXTINF:2.000,\n" + "x" * 200 + "\n"

    def playlist(n: int) -> str:
        return f"#EXTM3U\n#V:{n}\n" + body * (8000 + 37 * n) + f"#END:{n}\n"  # ~1.7 MB, a new length each time

    seen: list[int] = []
    bad: list[str] = []
    stop = threading.Event()
    path = tmp_path / "live" / "test.m3u8"

    def reader() -> None:
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            head = text[: text.index("\n", 8) + 1] if text.startswith("#EXTM3U\n#V:") else ""
            n = int(head[len("#EXTM3U\n#V:"):-1]) if head else -1
            if n < 0 or text != playlist(n):
                bad.append(text[:40] + "..." + text[-20:])
                return
            if not seen or seen[-1] != n:
                seen.append(n)

    order: list[str] = []

    def on_written(actions: Any, results: Any) -> None:
        assert all(r is None for r in results)
        order.extend(f"{type(act).__name__}:{act.name}" for act in actions)

    writer = HlsWriter(str(tmp_path), "test", on_written)
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.get_running_loop().create_task(ticker())
    expected: list[str] = []
    try:
        for n in range(versions):
            acts = [AppendSegment(f"live/s{n}.ts", bytes(188) * 50, 0), AppendSegment(f"live/s{n}.ts", bytes(188), 9400),
                    CloseSegment(f"live/s{n}.ts", 9588), WritePlaylist("live/test.m3u8", playlist(n))]
            if n >= 3:
                acts.append(DeleteFile(f"live/s{n - 3}.ts"))
            writer.submit(acts)
            expected += [f"{type(a).__name__}:{a.name}" for a in acts]
            if n % 8 == 0:
                await asyncio.sleep(0)  # let some batches go alone, others pile up
        await asyncio.wait_for(writer.flush(), 60)
    finally:
        stop.set()
        thread.join(10)
        tick.cancel()
        writer.close()
        await asyncio.wait_for(writer.task, 10)
    assert not bad, bad[:3]
    assert seen == sorted(seen) and len(seen) > 1, seen  # never an older version after a newer one
    assert path.read_text() == playlist(versions - 1)
    assert order == expected
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == sorted(
        ["test.m3u8"] + [f"s{n}.ts" for n in range(versions - 3, versions)]
    )  # no temp file left behind
    assert max(gaps) < 0.5, f"event loop blocked for {max(gaps):.3f}s"
    assert oct((tmp_path / "live/test.m3u8").stat().st_mode & 0o777) == oct(0o644)


async def test_writer_logs_a_run_of_failures_once(tmp_path: Path, log_lines: Any) -> None:
    """A directory that cannot be written (as a full disk) fails every action: one line for the run, one when a
    segment is complete again."""
    (tmp_path / "live").write_text("a file where the directory should be")
    writer = HlsWriter(str(tmp_path), "test")
    for n in range(5):
        writer.submit([AppendSegment(f"live/s{n}.ts", bytes(188), 0), CloseSegment(f"live/s{n}.ts", 188),
                       WritePlaylist("live/test.m3u8", f"#EXTM3U\n#{n}\n")])
        await asyncio.wait_for(writer.flush(), 10)
    assert writer.errors == 15 and writer.failing
    (errors,) = log_lines.events("hls-write-error")
    assert errors["file"] == "live/s0.ts" and errors["reason"].startswith(("ENOTDIR ", "EEXIST "))
    (tmp_path / "live").unlink()
    writer.submit([AppendSegment("live/s5.ts", bytes(188), 0), CloseSegment("live/s5.ts", 188)])
    writer.close()
    await asyncio.wait_for(writer.task, 10)
    (back,) = log_lines.events("hls-write-recovered")
    assert back["file"] == "live/s5.ts" and back["unlogged"] == "14" and not writer.failing
    assert len(log_lines.events("hls-write-error")) == 1


async def test_writers_share_thread_calls_and_keep_their_own_order(tmp_path: Path) -> None:
    """The writers of one loop hand their batches to the worker thread together (far fewer thread calls than
    batches), each writer's actions still run in order, and one writer's failing batch (a bug: not an
    OSError) is that writer's alone."""
    disk = DiskBatcher(window=0.01)
    done: dict[int, list[str]] = {}

    def recorder(i: int) -> Any:
        return lambda acts, res: done.setdefault(i, []).extend(
            f"{type(a).__name__}:{a.name}" for a, r in zip(acts, res) if r is None)

    writers = [HlsWriter(str(tmp_path), f"w{i}", recorder(i), disk=disk) for i in range(8)]
    broken = HlsWriter(str(tmp_path), "broken", disk=disk)

    def explode(actions: Any) -> Any:
        raise RuntimeError("a bug")

    broken.files.perform = explode  # type: ignore[method-assign]
    batches = 0
    for seg in range(3):
        for part in range(4):
            for i, w in enumerate(writers):
                w.submit([AppendSegment(f"s{i}/{seg}.ts", b"\x47" * 188, part * 188)])
                batches += 1
            broken.submit([AppendSegment("b.ts", b"x", 0)])
            await asyncio.sleep(0)
        for i, w in enumerate(writers):
            w.submit([CloseSegment(f"s{i}/{seg}.ts", 4 * 188), WritePlaylist(f"s{i}/p.m3u8", f"#{seg}\n")])
            batches += 1
    await asyncio.wait_for(asyncio.gather(*(w.flush() for w in [*writers, broken])), 10)
    for i, w in enumerate(writers):
        assert w.errors == 0
        assert done[i] == [a for seg in range(3) for a in [f"AppendSegment:s{i}/{seg}.ts"] * 4
                           + [f"CloseSegment:s{i}/{seg}.ts", f"WritePlaylist:s{i}/p.m3u8"]]
        assert sorted(p.name for p in (tmp_path / f"s{i}").iterdir()) == ["0.ts", "1.ts", "2.ts", "p.m3u8"]
        assert (tmp_path / f"s{i}/2.ts").stat().st_size == 4 * 188
    assert disk.calls < batches / 4, (disk.calls, batches)
    assert not broken.task.done()  # it logged the bug and goes on
    for w in [*writers, broken]:
        w.close()
    await asyncio.wait_for(asyncio.gather(*(w.task for w in [*writers, broken])), 10)


def test_the_writers_of_one_loop_share_one_batcher() -> None:
    async def two() -> tuple[DiskBatcher, DiskBatcher]:
        a, b = HlsWriter("/nonexistent", "a"), HlsWriter("/nonexistent", "b")
        a.close()
        b.close()
        await asyncio.gather(a.task, b.task)
        return a.disk, b.disk

    first = asyncio.run(two())
    second = asyncio.run(two())
    assert first[0] is first[1] and second[0] is second[1] and first[0] is not second[0]


async def test_writer_waits_for_the_previous_writer_of_its_key(tmp_path: Path) -> None:
    """A state disposed while its deletions are queued: the next state's writer must not overlap them."""
    gate = asyncio.get_running_loop().create_future()

    async def slow_previous() -> None:
        await gate
        (tmp_path / "a.ts").unlink()

    (tmp_path / "a.ts").write_bytes(b"old")
    previous = asyncio.get_running_loop().create_task(slow_previous())
    writer = HlsWriter(str(tmp_path), "next", after=previous)
    writer.submit([AppendSegment("a.ts", b"new", 0), CloseSegment("a.ts", 3)])
    await asyncio.sleep(0.05)
    assert (tmp_path / "a.ts").read_bytes() == b"old"
    gate.set_result(None)
    await asyncio.wait_for(writer.flush(), 10)
    assert (tmp_path / "a.ts").read_bytes() == b"new"
    writer.close()
    await writer.task


# ------------------------------------------------------------------------------------------- lifecycle


class Pub:
    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.ip = "127.0.0.1"
        self.kicked: str | None = None
        self.context = HookContext(cid, self.ip, KEY.vhost, KEY.app, KEY.stream)

    def kick(self, reason: str) -> None:
        self.kicked = reason


def media(seconds: float, start_ms: int = 0) -> list[MediaPacket]:
    return [MediaPacket.from_payload(p.kind, p.timestamp, p.payload) for p in av_stream(seconds, start_ms=start_ms)]


@pytest.fixture
async def service(tmp_path: Path) -> Any:
    hls_path = tmp_path / "hls"
    config = server_config(vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {hls_path}; "
                                 f"hls_dispose 0.3; }}")
    svc = HlsService(Hub(), lambda: config, Access(lambda: config, default_identity("vid-t", "t")))
    await svc.start()
    svc.hls_path = hls_path  # type: ignore[attr-defined]
    yield svc
    await svc.stop()
    await svc.hub.close()
    await svc.access.aclose()


def publish(svc: HlsService, cid: str) -> PublishToken:
    token = svc.hub.begin_publish(KEY, Pub(cid), SETTINGS)
    assert token.ready()
    return token


def feed(token: PublishToken, seconds: float) -> None:
    stream = token.stream
    start = stream.last_ts + 40 if stream.last_ts >= 0 else 0
    for pkt in media(seconds, start):
        assert stream.ingest(token.generation, pkt)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_republish_continues_the_playlist_and_a_stale_dispose_timer_deletes_nothing(service: Any) -> None:
    svc: HlsService = service
    root: Path = svc.hls_path  # type: ignore[attr-defined]
    token = publish(svc, "pub1")
    state = svc.state(KEY)
    assert state is not None and state.output in token.stream.outputs
    feed(token, 3.5)
    await wait_until(lambda: state.playlist_body is not None and len(state.segmenter.segments) >= 3, 10, "segments")
    token.release("left")
    hub = svc.hub
    await wait_until(lambda: hub.lingering(KEY) == [state.output], 10, "the drain to finish and the wait to start")
    old_wait = hub._lingering[KEY][state.output]
    assert state.live_for is None
    written = files(root)
    assert "live/test.m3u8" in written and len(written) >= 4

    token2 = publish(svc, "pub2")  # back before hls_dispose: same state, the wait cancelled in the READY step
    assert svc.state(KEY) is state and hub.lingering(KEY) == [] and old_wait.cancelled()
    hub._dispose(KEY, state.output)  # the old period's timer firing late anyway: nothing happens
    assert svc.state(KEY) is state and files(root) == written and token2.stream.outputs == [state.output]
    feed(token2, 3.5)
    await wait_until(lambda: b"#EXT-X-DISCONTINUITY" in (state.playlist_body or b""), 10, "the discontinuity")
    pl = parse_media_playlist(state.playlist_body.decode())  # type: ignore[union-attr]
    assert pl.media_sequence > 0 and sum(s.discontinuity for s in pl.segments) == 1
    # The stream was collected in between, so the new Stream's clock restarted at 0; the playlist's did not.
    assert token2.stream is not token.stream
    starts = [s.start_ms for s in state.segmenter.segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), starts
    assert all(f"live/{s.uri}" in files(root) for s in pl.segments)

    token2.release("left")
    await wait_until(lambda: svc.state(KEY) is None, 10, "hls_dispose")
    await wait_until(lambda: not files(root), 10, "every file deleted")
    assert svc._playlists == {} and svc._segment_files == {}
    # A new publish after the dispose starts a new playlist (at sequence 0, no discontinuity).
    token3 = publish(svc, "pub3")
    feed(token3, 2.5)
    state3 = svc.state(KEY)
    assert state3 is not None and state3 is not state
    await wait_until(lambda: state3.playlist_body is not None, 10, "the new playlist")
    pl = parse_media_playlist(state3.playlist_body.decode())  # type: ignore[union-attr]
    assert pl.media_sequence == 0 and not any(s.discontinuity for s in pl.segments)
    token3.release("left")


async def test_takeover_drain_never_finishes_the_new_publishers_output(service: Any) -> None:
    svc: HlsService = service
    hub = svc.hub
    token = publish(svc, "pub1")
    feed(token, 2.5)
    state = svc.state(KEY)
    assert state is not None
    token2 = publish(svc, "pub2")  # takes over: the drain of generation 1 runs after generation 2 is live
    assert token.publisher.kicked  # type: ignore[attr-defined]
    await wait_until(lambda: not hub.tasks, 10, "the old generation's drain")
    assert state.live_for == (token2.stream, token2.generation)
    assert token2.stream.outputs == [state.output]
    assert hub.lingering(KEY) == []
    n = len(state.segmenter.segments)
    feed(token2, 2.5)
    await wait_until(lambda: len(state.segmenter.segments) > n, 10, "segments of the new publisher")
    token2.release("left")


# ------------------------------------------------------------------------------------------- serving


def request(target: str, method: str = "GET", ua: str = "player/1", ip: str = "10.0.0.1") -> Request:
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(target)
    return Request(method, target, unquote(parts.path), dict(parse_qsl(parts.query)), {"user-agent": ua}, ip)


async def get(svc: HlsService, target: str, **kw: Any) -> Response:
    resp = await svc.handle(request(target, **kw), None)  # type: ignore[arg-type]
    assert isinstance(resp, Response), resp
    return resp


def header(resp: Response, name: str) -> str | None:
    return next((v for k, v in resp.headers if k.lower() == name.lower()), None)


async def test_hls_viewer_sessions(service: Any) -> None:
    svc: HlsService = service
    token = publish(svc, "pub1")
    assert (await get(svc, "/live/test.m3u8")).status == 404  # no segment cut yet: nothing to count either
    feed(token, 2.5)
    state = svc.state(KEY)
    assert state is not None
    await wait_until(lambda: state.playlist_body is not None, 10, "a playlist")

    resp = await get(svc, "/live/test.m3u8?token=abc")
    assert resp.status == 302
    location = header(resp, "location")
    assert location is not None and location.startswith("/live/test.m3u8?token=abc&hls_ctx=")
    assert svc.viewers(KEY) == []  # counted when it follows the redirect
    resp = await get(svc, location)
    assert resp.status == 200 and resp.body == state.playlist_body and resp.content_type == "application/vnd.apple.mpegurl"
    sid = location.rsplit("=", 1)[1]
    assert [v.id for v in svc.viewers(KEY)] == [sid] and svc.viewers(KEY)[0].ip == "10.0.0.1"
    assert svc.hub.clients[sid] is svc.viewers(KEY)[0]  # a client in the hub's registry
    assert svc.viewers(KEY)[0].context.param == "?token=abc"  # the player's query, without hls_ctx
    # ffmpeg reloads the original URL: the same client is sent back to its session, not counted twice.
    again = await get(svc, "/live/test.m3u8")
    assert again.status == 302 and header(again, "location") == f"/live/test.m3u8?hls_ctx={sid}"
    other = await get(svc, "/live/test.m3u8", ua="player/2")
    other_id = header(other, "location").rsplit("=", 1)[1]  # type: ignore[union-attr]
    assert other_id != sid
    assert (await get(svc, f"/live/test.m3u8?hls_ctx={other_id}", ua="player/2")).status == 200
    assert sorted(v.id for v in svc.viewers(KEY)) == sorted([sid, other_id])
    # HEAD is not a viewer; a bad session id is refused.
    assert (await get(svc, "/live/test.m3u8", method="HEAD")).status == 200
    assert (await get(svc, "/live/test.m3u8?hls_ctx=../x")).status == 400
    # The security rules (and on_play) can refuse a new viewer: nothing is registered for it.
    access = svc.sessions.access
    deny = server_config(vhost="security { enabled on; deny play 10.0.0.9; allow play all; }")
    svc.sessions.access = Access(lambda: deny, default_identity("vid-t", "t"))
    assert (await get(svc, "/live/test.m3u8?hls_ctx=newone", ip="10.0.0.9")).status == 403
    assert "newone" not in svc.hub.clients
    await svc.sessions.access.aclose()
    svc.sessions.access = access
    # Sessions end when their player stops polling, and leave the registry.
    svc.sessions.expire(time.monotonic() + SESSION_TIMEOUT + 1)
    assert svc.viewers(KEY) == [] and sid not in svc.hub.clients and other_id not in svc.hub.clients
    token.release("left")


async def test_paths_outside_hls_path_are_refused(service: Any) -> None:
    svc: HlsService = service
    for path in ["/../x.m3u8", "/live/../../x.ts", "/live/%2e%2e/%2e%2e/etc/x.m3u8", "/..", "/a\\..\\b.ts"]:
        assert relative_path(request(path).path) is None, path
        assert (await get(svc, path)).status == 404, path
    assert relative_path("/live/../live/test.m3u8") == "live/test.m3u8"
    # Not ours (no such stream): the static file server decides.
    assert await svc.handle(request("/vod/movie.m3u8"), None) is NotImplemented  # type: ignore[arg-type]
    # A name shaped like a segment of a stream that does not exist is not an HTTP-TS viewer.
    assert await svc.handle(request("/live/other-12.ts"), None) is NotImplemented  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- HTTP-TS fan-out


def test_write_atomic_creates_directories_and_leaves_no_temp_file(tmp_path: Path) -> None:
    from livesrv.servers.hls.files import write_atomic

    write_atomic(str(tmp_path / "d" / "f.ts"), b"x")
    assert (tmp_path / "d" / "f.ts").read_bytes() == b"x"
    assert os.listdir(tmp_path / "d") == ["f.ts"]


# ------------------------------------------------------------------------------------------- incremental segments


def parts(root: Path) -> list[str]:
    """Hidden files: parts of open segments (and temp names of playlists being written)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.is_file()) if root.exists() else []


_DOOMED = """
import asyncio, sys
from livesrv.config import HlsConfig
from livesrv.remux.hls import HlsSegmenter
from livesrv.servers.hls.files import HlsWriter
from tests.remux.test_hls_segmenter import av_stream

async def main() -> None:
    seg = HlsSegmenter(HlsConfig(enabled=True, hls_fragment=60), "__defaultVhost__", "live", "test",
                       start_sequence=7, buffer_bytes=4096)
    writer = HlsWriter(sys.argv[1], "doomed")
    for p in av_stream(5):
        writer.submit(seg.feed(p))
    await writer.flush()
    print(sum(len(a.data) for a in []) or "mid-segment", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_writer_leaves_no_half_segment_and_the_next_output_deletes_its_part(service: Any) -> None:
    """The process is killed (SIGKILL) between two appends of a segment: only its hidden part is on disk, never
    a file under the segment's name. The next output of that stream deletes the part, and only its own."""
    svc: HlsService = service
    root: Path = svc.hls_path  # type: ignore[attr-defined]
    (root / "live").mkdir(parents=True)
    others = ["live/.other-3.ts.tmp", "live/.test-x.ts.tmp", "live/.test-3.ts.abc.tmp", "live/.test-3.tsx.tmp"]
    for name in others:
        (root / name).write_bytes(b"not ours")
    repo = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED, str(root), stdout=asyncio.subprocess.PIPE, cwd=repo,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])},
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
        assert line.strip() == b"mid-segment"
    finally:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
    part = root / "live/.test-7.ts.tmp"
    assert part.stat().st_size > 5 * 4096  # 5 s went to disk in appends...
    assert files(root) == sorted(["live/.test-7.ts.tmp", *others])  # ... and nothing under a final name
    assert read_ts_packets(part.read_bytes()) > 0

    token = publish(svc, "pub1")  # the stream's next output
    state = svc.state(KEY)
    assert state is not None
    await asyncio.wait_for(state.writer.flush(), 10)
    assert not part.exists() and files(root) == sorted(others)
    token.release("left")


def read_ts_packets(data: bytes) -> int:
    """Whole 188-byte transport packets at the start of ``data`` (the part is a valid TS prefix)."""
    n = 0
    while (n + 1) * 188 <= len(data) and data[n * 188] == 0x47:
        n += 1
    return n


def long_segment_actions(seconds: float = 3, sequence: int = 0) -> tuple[Any, list[Any]]:
    """Actions of a segment still open after ``seconds`` (hls_fragment 60), handed out in 4 KiB appends."""
    from livesrv.config import HlsConfig
    from livesrv.remux.hls import HlsSegmenter

    seg = HlsSegmenter(HlsConfig(enabled=True, hls_fragment=60), KEY.vhost, KEY.app, KEY.stream,
                       start_sequence=sequence, buffer_bytes=4096)
    acts: list[Any] = []
    for p in av_stream(seconds):
        acts += seg.feed(p)
    assert acts and all(isinstance(a, AppendSegment) for a in acts)
    return seg, acts


@pytest.mark.parametrize("how", ["close", "cancel", "dispose"])
async def test_a_writer_that_ends_mid_segment_deletes_its_part(tmp_path: Path, how: str) -> None:
    """Stopped (close), cancelled (a stop that timed out), or the stream disposed without a finish: the open
    segment's part is deleted and nothing reaches the segment's name."""
    seg, acts = long_segment_actions()
    writer = HlsWriter(str(tmp_path), "test")
    writer.submit(acts)
    await asyncio.wait_for(writer.flush(), 10)
    part = tmp_path / "live/.test-0.ts.tmp"
    assert part.stat().st_size == sum(len(a.data) for a in acts) and writer.files.open_segments == ["live/test-0.ts"]
    if how == "close":
        writer.close()
    elif how == "cancel":
        writer.task.cancel()
    else:
        writer.submit(seg.dispose())
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.files.open_segments == [] and files(tmp_path) == []
        writer.close()
    await asyncio.wait_for(asyncio.gather(writer.task, return_exceptions=True), 10)
    assert files(tmp_path) == [] and writer.files.open_segments == []


async def test_a_writer_cancelled_during_a_batch_deletes_its_part_once_the_batch_ends(tmp_path: Path) -> None:
    """The task is cancelled while its thread is still appending: the part is deleted when the thread is done
    with it, never under it, and the rest of the batch is not performed."""
    _, acts = long_segment_actions()
    writer = HlsWriter(str(tmp_path), "test")
    entered, release = threading.Event(), threading.Event()
    perform = writer.files._perform

    def slow_perform(act: Any) -> None:
        if act is acts[2]:
            entered.set()
            assert release.wait(10)
        perform(act)

    writer.files._perform = slow_perform  # type: ignore[method-assign]
    writer.submit(acts)
    assert await asyncio.to_thread(entered.wait, 10)
    writer.task.cancel()
    await asyncio.wait_for(asyncio.gather(writer.task, return_exceptions=True), 10)
    part = tmp_path / "live/.test-0.ts.tmp"
    assert part.exists()  # the thread is still in the batch: its file is left alone
    release.set()
    await wait_until(lambda: not part.exists(), 10, "the part to be deleted after the batch")
    assert files(tmp_path) == [] and writer.files.open_segments == []


async def test_a_lost_append_never_puts_a_segment_with_a_hole_in_place(tmp_path: Path) -> None:
    """An append that does not start where the part ends (one failed or was lost): the part is deleted, later
    appends and the close fail (counted), the segment's name is never written; the next segment is fine."""
    results: list[Any] = []
    writer = HlsWriter(str(tmp_path), "test", lambda acts, res: results.extend(zip(acts, res)))
    writer.submit([AppendSegment("live/a.ts", b"\x47" * 188, 0), AppendSegment("live/a.ts", b"\x47" * 188, 376),
                   AppendSegment("live/a.ts", b"\x47" * 188, 564), CloseSegment("live/a.ts", 752),
                   AppendSegment("live/b.ts", b"\x47" * 188, 0), CloseSegment("live/b.ts", 188),
                   AppendSegment("live/c.ts", b"\x47" * 188, 0), CloseSegment("live/c.ts", 376)])
    await asyncio.wait_for(writer.flush(), 10)
    assert [err is None for _, err in results] == [True, False, False, False, True, True, True, False]
    assert writer.errors == 4
    assert files(tmp_path) == ["live/b.ts"]  # a: a hole; c: short of its size
    writer.close()
    await writer.task


async def test_segments_go_to_disk_while_open_and_are_served_once_complete(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the service (hls_fragment 60): the open segment grows on disk under its part name, the
    segmenter holds less than its buffer, nothing is served or announced before the close; then the file is
    in place (its part gone), served from disk, and on_hls fires once for it."""
    from livesrv.remux.hls import SEGMENT_BUFFER_BYTES

    hls_path = tmp_path / "hls"
    config = server_config(vhost=f"hls {{ enabled on; hls_fragment 60; hls_path {hls_path}; hls_dispose 0; }}")
    svc = HlsService(Hub(), lambda: config, Access(lambda: config, default_identity("vid-t", "t")))
    announced: list[str] = []
    svc._segment_written = lambda state, info: announced.append(info.name)  # type: ignore[method-assign]
    await svc.start()
    try:
        monkeypatch.setattr("livesrv.remux.hls.SEGMENT_BUFFER_BYTES", 8192)  # (a 12 kB/s stream: several appends)
        token = publish(svc, "pub1")
        state = svc.state(KEY)
        assert state is not None
        feed(token, 5)
        await asyncio.wait_for(state.writer.flush(), 10)
        part = hls_path / "live/.test-0.ts.tmp"
        assert part.stat().st_size > 4 * 8192 and state.segmenter.buffered < 8192 < SEGMENT_BUFFER_BYTES
        assert files(hls_path) == ["live/.test-0.ts.tmp"] and announced == [] and state.playlist_body is None
        assert await svc.handle(request("/live/test-0.ts"), None) is NotImplemented  # type: ignore[arg-type]

        token.release("left")
        await wait_until(lambda: state.playlist_body is not None, 10, "the last segment")
        assert files(hls_path) == ["live/test-0.ts", "live/test.m3u8"] and announced == ["live/test-0.ts"]
        data = (hls_path / "live/test-0.ts").read_bytes()
        assert len(data) == state.segmenter.segments[0].size and data[0] == 0x47
        resp = await get(svc, "/live/test-0.ts")
        assert resp.status == 200 and resp.body == data
        assert os.path.join(state.root, "live/test-0.ts") in svc.cache
    finally:
        await svc.stop()
        await svc.hub.close()
        await svc.access.aclose()


async def test_segment_cache_is_bounded_shares_reads_and_forgets_replaced_files(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from livesrv.servers.hls import files as files_mod
    from livesrv.servers.hls.files import SegmentCache

    reads: list[str] = []
    gate = threading.Event()
    real = files_mod.read_file

    def counting_read(path: str) -> bytes | None:
        reads.append(path)
        assert gate.wait(10)
        return real(path)

    monkeypatch.setattr(files_mod, "read_file", counting_read)
    for n in range(6):
        (tmp_path / f"{n}.ts").write_bytes(bytes([n]) * 1000)
    cache = SegmentCache(4000)
    path = str(tmp_path / "0.ts")
    # Concurrent misses share one read; a requester that goes away does not spoil it for the others.
    waiters = [asyncio.ensure_future(cache.get(path)) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    gate.set()
    got = await asyncio.gather(*waiters[1:])
    assert got == [bytes([0]) * 1000] * 4 and reads == [path]
    assert await cache.get(path) == bytes([0]) * 1000 and reads == [path]  # from memory now
    # Bounded: the least recently used go first.
    for n in range(1, 6):
        await cache.get(str(tmp_path / f"{n}.ts"))
    assert cache.size <= 4000 and len(cache) == 4 and path not in cache
    # A file replaced while it is being read: the old bytes are served to whoever asked, not kept.
    gate.clear()
    p5 = str(tmp_path / "5.ts")
    cache.discard(p5)
    pending = asyncio.ensure_future(cache.get(p5))
    await wait_until(lambda: reads[-1] == p5 and len(reads) == 7, 10, "the read to start")
    cache.discard(p5)
    gate.set()
    assert await pending == bytes([5]) * 1000 and p5 not in cache
    assert await cache.get(str(tmp_path / "missing.ts")) is None


# ------------------------------------------------------------------------------------------- workers


async def test_workers_share_hls_path_one_writer_serves_disk_and_a_new_owner_continues(tmp_path: Path) -> None:
    """``workers N`` (HlsService.shared), two services on one hls_path, as two workers: the one that does not
    write serves the owner's files from disk (never hidden names, never outside hls_path); the stream moving
    to the other one (forget on the old owner, a publish on the new one) continues the playlist, and the old
    owner's end and dispose touch nothing of the new owner's files."""
    hls_path = tmp_path / "hls"
    config = server_config(vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {hls_path}; "
                                 f"hls_dispose 0.3; }}")
    a, b = (HlsService(Hub(), lambda: config, Access(lambda: config, default_identity("vid-t", "t")))
            for _ in range(2))
    for svc in (a, b):
        svc.shared = True
        await svc.start()
    try:
        token = publish(a, "pub1")
        feed(token, 3.5)
        state = a.state(KEY)
        assert state is not None
        await wait_until(lambda: len(state.segmenter.segments) >= 3 and state.playlist_body is not None
                         and (hls_path / "live" / "test.m3u8").read_bytes() == state.playlist_body, 10,
                         "segments and the playlist on disk")
        resp = await get(b, "/live/test.m3u8")  # not b's: from disk
        assert resp.status == 200 and resp.body == state.playlist_body
        seg = parse_media_playlist(resp.body.decode()).segments[-1].uri
        assert (await get(b, f"/live/{seg}")).body == (hls_path / "live" / seg).read_bytes()
        (hls_path / "live" / ".hidden.ts").write_bytes(b"x")
        (tmp_path / "secret.ts").write_bytes(b"x")
        os.symlink(tmp_path / "secret.ts", hls_path / "live" / "link.ts")
        for name in ("/live/.hidden.ts", "/live/link.ts", "/live/../../secret.ts"):
            assert (await b.handle(request(name), None)) is NotImplemented or (await get(b, name)).status == 404, name

        # The stream moves to b: a is told first (the claim's message), then b's publisher goes live.
        a.forget(KEY, "w1")
        before = parse_media_playlist((hls_path / "live" / "test.m3u8").read_text())
        token.release("left")  # (a's publisher kicked as stale: its end writes nothing now)
        token_b = publish(b, "pub2")
        feed(token_b, 3.5)
        state_b = b.state(KEY)
        assert state_b is not None
        await wait_until(lambda: b"#EXT-X-DISCONTINUITY" in (state_b.playlist_body or b""), 10, "b's playlist")
        after = parse_media_playlist(state_b.playlist_body.decode())  # type: ignore[union-attr]
        assert after.media_sequence >= before.media_sequence
        assert after.media_sequence + len(after.segments) > before.media_sequence + len(before.segments)
        await wait_until(lambda: a.state(KEY) is None, 10, "a letting go (its dispose: nothing deleted)")
        on_disk = (hls_path / "live" / "test.m3u8").read_bytes()
        assert on_disk == state_b.playlist_body
        assert all((hls_path / "live" / s.uri).exists() for s in after.segments)
        token_b.release("left")
    finally:
        for svc in (a, b):
            await svc.stop()
            await svc.hub.close()
            await svc.access.aclose()


def test_pieces_are_written_whole_past_iov_max_and_after_short_writes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An append's pieces go out with writev, IOV_MAX at a time; a short write (a filling disk, a signal) goes
    on with what is left, so the part holds exactly the bytes, in order."""
    from livesrv.servers.hls import files as files_mod

    pieces = [bytes([i % 251]) * (i % 13 + 1) for i in range(2 * files_mod._IOV_MAX + 77)]
    want = b"".join(pieces)
    real_writev = os.writev
    calls: list[int] = []

    def short_writev(fd: int, buffers: Any) -> int:
        calls.append(len(buffers))
        assert len(buffers) <= files_mod._IOV_MAX
        if len(calls) % 2:  # every other call writes only part of what it was given
            head = b"".join(buffers)
            return os.write(fd, head[: len(head) // 3])
        return real_writev(fd, buffers)

    monkeypatch.setattr(files_mod.os, "writev", short_writev)
    results = files_mod.perform_actions(str(tmp_path), [
        AppendSegment("live/a.ts", tuple(pieces), 0), AppendSegment("live/a.ts", b"tail", len(want)),
        CloseSegment("live/a.ts", len(want) + 4)])
    assert results == [None, None, None]
    assert (tmp_path / "live/a.ts").read_bytes() == want + b"tail"
    assert len(calls) == 4  # three for the first append (1024 + 1024 + 77 pieces), one for the second
