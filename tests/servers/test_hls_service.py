"""The HLS service without sockets: its writer (order, atomicity, never blocking the loop), its lifecycle driven
through a real Hub (republish, takeover, stale dispose timers), HLS viewer sessions, path safety, and the
HTTP-TS fan-out (joiners, slow viewers). Real players are in tests/e2e/test_hls.py.
"""

from __future__ import annotations

import asyncio
import os
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
from livesrv.servers.hls.files import HlsWriter, relative_path
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
    await wait_until(lambda: state.dispose_handle is not None, 10, "the drain to finish and arm the dispose timer")
    old_epoch = state.epoch
    assert state.live_for is None
    written = files(root)
    assert "live/test.m3u8" in written and len(written) >= 4

    token2 = publish(svc, "pub2")  # back before hls_dispose: same state, timer cancelled
    assert svc.state(KEY) is state and state.dispose_handle is None and state.epoch > old_epoch
    svc._dispose(state, old_epoch)  # a timer of the old period firing late anyway
    assert svc.state(KEY) is state and files(root) == written
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
    assert state.dispose_handle is None
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
