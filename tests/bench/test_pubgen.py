"""The publisher load generator: the shared serialization, the pacing, and K publishers against a real livesrv."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from bench import pubgen
from bench.pubgen import STYLES, Pacer, Source, run_publishers, summarize
from livesrv.clients.rtmp import RtmpClient
from livesrv.hub.keys import StreamKey
from livesrv.codec import amf0, flv
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.chunk import ChunkDecoder, encode_message
from livesrv.codec.rtmp.session import ConnectRequest, PublishRequest, ServerSession
from tests.helpers import wait_until

AVC_SH = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04\x67\x64\x00\x1f\x01\x00\x04\x68\xee\x3c\xb0"
AAC_SH = b"\xaf\x00\x12\x10"


def make_flv(path: Path, seconds: float = 1.0, big_every: int = 0) -> Path:
    """Metadata, sequence headers, 30 fps video with a keyframe a second, audio every 23 ms, an end of sequence.

    ``big_every``: every that many video frames is 70 000 bytes, more than one chunk even at FFmpeg's 60 000."""
    tags = [flv.encode_tag(flv.SCRIPT, 0, amf0.encode("onMetaData", amf0.ECMAArray({"width": 320.0}))),
            flv.encode_tag(flv.VIDEO, 0, AVC_SH), flv.encode_tag(flv.AUDIO, 0, AAC_SH)]
    frames = []
    for i in range(int(seconds * 30)):
        size = 70_000 if big_every and i % big_every == big_every - 1 else 300 + i
        head = b"\x17\x01" if i % 30 == 0 else b"\x27\x01"
        frames.append((i * 1000 // 30, flv.VIDEO, head + b"\0\0\0" + bytes(size)))
    for i in range(int(seconds * 1000 / 23)):
        frames.append((i * 23, flv.AUDIO, b"\xaf\x01" + bytes(20 + i % 7)))
    frames.sort(key=lambda f: (f[0], -f[1]))
    tags += [flv.encode_tag(kind, ts, payload) for ts, kind, payload in frames]
    tags.append(flv.encode_tag(flv.VIDEO, frames[-1][0], b"\x17\x02\x00\x00\x00"))
    path.write_bytes(flv.file_header() + b"".join(tags))
    return path


def decode(data: bytes, chunk_size: int) -> list[m.Message]:
    dec = ChunkDecoder()
    msgs = dec.feed(encode_message(m.set_chunk_size(chunk_size), m.CSID_CONTROL, 128))
    return [msg for msg in msgs + dec.feed(data) if msg.type_id != m.SET_CHUNK_SIZE]


def test_source_splits_head_from_frames_and_loops_one_frame_after_the_end(tmp_path: Path) -> None:
    src = Source(make_flv(tmp_path / "a.flv"))
    assert [t for t, _, _ in src.head] == [flv.VIDEO, flv.AUDIO] and src.head[0][2] == AVC_SH
    assert src.metadata_dict == {"width": 320.0}
    assert all(not flv.is_sequence_header(p) and p[1] != 2 for t, _, p in src.frames if t == flv.VIDEO)
    assert len(src.frames) == 30 + 43
    # video ends at 966 + 33 (its frame interval), audio at 966 + 23: the longer one wins
    assert src.loop_ms == 999
    assert src.ts == sorted(src.ts)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_a_pass_decodes_to_the_frames_shifted_by_whole_loops(tmp_path: Path, style: str) -> None:
    st = STYLES[style]
    src = Source(make_flv(tmp_path / "a.flv", big_every=10))
    for n in (0, 3):
        pas = src.pass_bytes(st.chunk_size, 1, n, st.split)
        got = decode(pas.data, st.chunk_size)
        assert [(g.type_id, g.timestamp, g.payload, g.stream_id) for g in got] == [
            (t, ts + n * src.loop_ms, p, 1) for t, ts, p in src.frames]
        assert pas.first[-1] == len(pas.cuts) and pas.cuts[-1] == len(pas.data)
        assert b"".join(pas.pieces(0, len(src.frames))) == pas.data
        assert bytes(pas.span(2, 7)) == b"".join(pas.pieces(2, 7))
    assert src.pass_bytes(st.chunk_size, 1, 3, st.split) is pas  # cached: shared by every publisher


def test_ffmpeg_style_writes_each_chunk_header_and_chunk_separately(tmp_path: Path) -> None:
    src = Source(make_flv(tmp_path / "a.flv", big_every=10))
    pas = src.pass_bytes(60000, 1, 0, split=True)
    k = next(i for i, (_, _, p) in enumerate(src.frames) if len(p) > 60000)
    pieces = [len(p) for p in pas.pieces(k, k + 1)]
    size = len(src.frames[k][2])
    assert pieces == [12, 60000, 1, size - 60000]  # fmt 0 header, chunk, fmt 3 header, chunk
    assert [len(p) for p in pas.pieces(0, 1)] == [12, len(src.frames[0][2])]
    whole = src.pass_bytes(4096, 1, 0, split=False)
    assert len(whole.pieces(0, 5)) == 5  # one write per message


def test_pacer_sends_what_is_due_and_carries_on_into_the_next_pass(tmp_path: Path) -> None:
    src = Source(make_flv(tmp_path / "a.flv"))
    pacer = Pacer(src, 4096, 1)
    pacer.t0 = 100.0
    first = pacer.due(100.0)
    assert [(i, j) for _, i, j in first] == [(0, 2)]  # the keyframe and the audio frame at 0
    assert pacer.next_due() == pytest.approx(100.0 + 0.023)
    assert pacer.due(100.0) == []
    later = pacer.due(100.0 + 1.010)  # past the end of the file (999 ms): the second pass has begun
    assert [(i, j) for _, i, j in later] == [(2, len(src.frames)), (0, 2)]  # 2nd pass: both frames at 0
    assert pacer.n == 1
    got = decode(b"".join(bytes(p.span(i, j)) for p, i, j in first + later), 4096)
    for kind in (flv.VIDEO, flv.AUDIO):
        ts = [g.timestamp for g in got if g.type_id == kind]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert pacer.lag_ms(100.0 + 1.010) == 0.0
    assert pacer.lag_ms(100.0 + 3.0) > 1900  # what a publisher that could not write would show


def test_summarize_counts_refused_cut_and_behind_publishers() -> None:
    base = {"error": "", "step": "publishing", "publish_time": 0.01, "max_lag_ms": 0.0, "lag_at_end_ms": 0.0,
            "win_bytes": 1_000_000, "bytes": 2_000_000, "write_paused": 0}
    pubs = [dict(base, name=f"p{i}", accepted=True) for i in range(4)]
    pubs[1].update(error="closed by the server (publishing)", lag_at_end_ms=None)
    pubs[2].update(lag_at_end_ms=2500.0, max_lag_ms=2500.0)
    pubs.append(dict(base, name="p4", accepted=False, error="publish refused", step="publish", publish_time=None))
    s = summarize(pubs, 2.0, 0.5)
    assert (s["publishers"], s["accepted"], s["refused"], s["disconnected"], s["behind"]) == (5, 4, 1, 1, 1)
    assert s["publishing_at_end"] == 3 and s["max_lag_ms"] == 2500.0
    assert s["sent_mbps"] == pytest.approx(5 * 8 / 2)
    assert s["cpu_percent"] == pytest.approx(25.0)
    assert "publish: publish refused" in s["error_samples"]


@pytest.mark.parametrize(("client", "style"), [("lean", "message"), ("lean", "ffmpeg"), ("package", "message")])
async def test_publishers_against_livesrv_all_accepted_and_playable(
        make_server, tmp_path: Path, client: str, style: str) -> None:  # type: ignore[no-untyped-def]
    app = await make_server()
    port = app.port("rtmp")
    src = Source(make_flv(tmp_path / "a.flv", seconds=1.0))
    start = time.monotonic()
    task = asyncio.ensure_future(run_publishers(
        f"rtmp://127.0.0.1:{port}/live", "p", 3, src, start_at=start, rate=50.0, window_start=start + 0.3,
        duration=1.5, client=client, style=style))
    try:
        # A viewer of one of them gets the sequence headers then frames with increasing timestamps, across
        # the file's loop point (999 ms).
        key = StreamKey("__defaultVhost__", "live", "p001")
        await wait_until(lambda: (st := app.hub.get(key)) is not None and st.live, 10, "p001 to go live")
        viewer = await RtmpClient.connect(f"rtmp://127.0.0.1:{port}/live/p001", timeout=5)
        try:
            await viewer.play(timeout=5)
            got: list[m.Message] = []

            async def collect() -> None:
                async for msg in viewer.messages():
                    got.append(msg)
                    if msg.type_id == flv.VIDEO and msg.timestamp > 1200:
                        return

            await asyncio.wait_for(collect(), 5)
        finally:
            await viewer.close()
        result = await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
    video = [g for g in got if g.type_id == flv.VIDEO]
    assert flv.is_sequence_header(video[0].payload)
    ts = [g.timestamp for g in video[1:]]
    assert ts == sorted(ts) and ts[-1] > src.loop_ms
    summary = summarize(result["publishers"], 1.5, result["cpu_s"])
    assert (summary["accepted"], summary["refused"], summary["disconnected"], summary["behind"]) == (3, 0, 0, 0), \
        summary
    # ~3 x the file's bitrate: 30 frames of ~315 bytes + 43 of ~25 a second, plus chunk headers
    assert 0.15 < summary["sent_mbps"] < 0.4, summary
    assert pubgen.BEHIND_MS == 1000


class StubServer(asyncio.Protocol):
    """Accepts every connect and publish; refuses ``refuse``, stops reading ``stall`` once it publishes."""

    def __init__(self, refuse: str, stall: str) -> None:
        self.session = ServerSession()
        self.refuse, self.stall = refuse, stall
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        stall = False
        for ev in self.session.receive_data(data):
            if isinstance(ev, ConnectRequest):
                self.session.accept_connect(ev)
            elif isinstance(ev, PublishRequest):
                if ev.name == self.refuse:
                    self.session.reject_publish(ev, "no")
                else:
                    self.session.accept_publish(ev)
                    stall = ev.name == self.stall
        self.transport.write(self.session.data_to_send())
        if stall:
            self.transport.pause_reading()


async def test_refused_and_held_back_publishers_are_reported(tmp_path: Path) -> None:
    """p000 is refused; the server stops reading p001, which falls behind; p002 keeps up."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets: fills fast
    sock.bind(("127.0.0.1", 0))
    server = await loop.create_server(lambda: StubServer("p000", "p001"), sock=sock)
    port = sock.getsockname()[1]
    src = Source(make_flv(tmp_path / "a.flv", big_every=1))  # ~17 Mbit/s
    start = time.monotonic()
    try:
        result = await asyncio.wait_for(run_publishers(
            f"rtmp://127.0.0.1:{port}/live", "p", 3, src, start_at=start, rate=50.0, window_start=start + 0.2,
            duration=3.0, write_limit=64 * 1024), 10)
    finally:
        server.close()
    by_name = {p["name"]: p for p in result["publishers"]}
    assert not by_name["p000"]["accepted"] and "BadName" in by_name["p000"]["error"]
    assert by_name["p001"]["accepted"] and by_name["p001"]["lag_at_end_ms"] > 1000
    assert by_name["p001"]["write_paused"] >= 1
    assert by_name["p002"]["accepted"] and by_name["p002"]["lag_at_end_ms"] < 100
    s = summarize(result["publishers"], 3.0, result["cpu_s"])
    assert (s["accepted"], s["refused"], s["behind"], s["disconnected"]) == (2, 1, 1, 0), s
