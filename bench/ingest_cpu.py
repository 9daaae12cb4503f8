"""Offline CPU benchmark of the ingest path: K publishers' bytes replayed through livesrv's RTMP connections.

    PYTHONPATH=src .venv/bin/python bench/ingest_cpu.py --publishers 50 --seconds 30

Why offline: on the shared 2-core machines the live ``--scenario ingest`` figures move by 20% from run to run,
which hides a change of that size. Here nothing else runs in the measured process: each publisher's byte
stream is made once by the same shared serialization as ``bench/pubgen.py`` (its :class:`~bench.pubgen.Source`),
cut into the reads the server sees with merged read on (everything the publisher sent in ``--read-ms``), and
fed to a real :class:`~livesrv.servers.rtmp.RTMPConnection` of a real (unstarted) :class:`~livesrv.app.App`
with the bench's config (HLS off, no viewers): session, chunk decoder, hub ingest, GOP cache, the per-read
timers. Only the socket is missing (a fake transport), so the figure is the Python cost of ingest without
the kernel's reads. Publishers are fed round-robin, one read each, as the event loop would.

Prints CPU seconds (``time.process_time``) per second of media per publisher, as % of one core for
``--publishers`` in real time, for the best of ``--repeat`` runs (the least disturbed by the other work on the
machine), and the same for the chunk decoder alone over the same reads.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.media import DEFAULT_CACHE, PROFILES, source_file
from bench.pubgen import STYLES, Source
from livesrv.app import App
from livesrv.codec.rtmp.chunk import ChunkDecoder
from livesrv.codec.rtmp.client import ClientSession, CommandReply, HandshakeComplete, StatusEvent
from livesrv.config.loader import parse_text
from livesrv.servers.rtmp import RTMPConnection

CONFIG = """
listen 127.0.0.1:0;
max_connections 100000;
srs_log_level warn;
vhost __defaultVhost__ { http_remux { enabled on; mount [vhost]/[app]/[stream].flv; } }
"""


class FakeTransport:
    """What RTMPConnection needs of a transport; the server's output is kept for the client side."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def take(t: FakeTransport) -> bytes:
    data = b"".join(t.out)
    t.out.clear()
    return data


def open_publisher(app: App, name: str, chunk_size: int) -> tuple[RTMPConnection, FakeTransport, int]:
    """Handshake, connect, createStream and publish through a sans-IO client; returns the message stream id."""
    conn = RTMPConnection(app.rtmp)
    t = FakeTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    client = ClientSession(out_chunk_size=chunk_size)
    sid = 0
    connect_txn = create_txn = -1.0
    for _ in range(50):
        out = client.data_to_send()
        if out:
            conn.data_received(out)
        back = take(t)
        if not back:
            if sid and conn.pub_token is not None:
                return conn, t, sid
            continue
        for ev in client.receive_data(back):
            if isinstance(ev, HandshakeComplete):
                connect_txn = client.connect("live", "rtmp://127.0.0.1/live")
            elif isinstance(ev, CommandReply) and ev.transaction_id == connect_txn:
                client.call("releaseStream", name)
                client.call("FCPublish", name)
                create_txn = client.create_stream()
            elif isinstance(ev, CommandReply) and ev.transaction_id == create_txn:
                sid = int(ev.values[1])
                client.publish(sid, name)
            elif isinstance(ev, StatusEvent) and sid and ev.stream_id == sid and ev.code == "NetStream.Publish.Start":
                return conn, t, sid
    raise RuntimeError(f"{name}: publish did not complete")


def reads_for(source: Source, chunk_size: int, sid: int, seconds: float, read_ms: float, split: bool) -> list[bytes]:
    """The publisher's bytes over ``seconds`` of media, cut where ``read_ms`` of media time ends."""
    reads: list[bytes] = []
    cur = [source.head_bytes(chunk_size, sid)]
    next_cut = read_ms
    n = 0
    end_ms = seconds * 1000
    while True:
        p = source.pass_bytes(chunk_size, sid, n, split)
        base = n * source.loop_ms
        for k, ts in enumerate(source.ts):
            t = base + ts
            if t >= end_ms:
                reads.append(b"".join(cur))
                return reads
            if t >= next_cut:
                reads.append(b"".join(cur))
                cur = []
                next_cut += read_ms
            cur.append(bytes(p.span(k, k + 1)))
        n += 1


async def replay(source: Source, args: argparse.Namespace) -> tuple[float, float]:
    style = STYLES[args.style]
    app = App(parse_text(CONFIG, "<ingest_cpu>").config)
    pubs = [open_publisher(app, f"bench{i:03d}", style.chunk_size) for i in range(args.publishers)]
    per_pub = [reads_for(source, style.chunk_size, sid, args.seconds, args.read_ms, style.split)
               for _, _, sid in pubs]
    rounds = max(len(r) for r in per_pub)
    gc.collect()
    t0 = time.process_time()
    for i in range(rounds):
        for (conn, _, _), reads in zip(pubs, per_pub):
            if i < len(reads):
                conn.data_received(reads[i])
        await asyncio.sleep(0)
    server = time.process_time() - t0
    frames = sum(s.stats.video_frames for s in app.hub.streams.values())
    expect = args.publishers * int(args.seconds * 30) * 0.95
    if frames < expect:
        raise RuntimeError(f"only {frames} video frames reached the hub (expected about {expect:.0f})")
    for conn, _, _ in pubs:
        conn.close("done")
    # The decoder alone over the same reads.
    decoders = [ChunkDecoder() for _ in pubs]
    for d in decoders:  # the publishers' Set Chunk Size, as the session saw it
        d.feed(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00" + style.chunk_size.to_bytes(4, "big"))
    gc.collect()
    t0 = time.process_time()
    for i in range(rounds):
        for d, reads in zip(decoders, per_pub):
            if i < len(reads):
                d.feed(reads[i])
    decoder = time.process_time() - t0
    return server, decoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--publishers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0, help="media seconds per publisher")
    p.add_argument("--read-ms", type=float, default=350.0, help="media per read (merged read: mr_latency)")
    p.add_argument("--style", choices=sorted(STYLES), default="message")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--source", choices=sorted(PROFILES), default="720p")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args()
    source = Source(source_file(PROFILES[args.source], args.cache_dir))
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    best_s = best_d = float("inf")
    for _ in range(args.repeat):
        s, d = runner(replay(source, args))
        best_s, best_d = min(best_s, s), min(best_d, d)
    media = args.publishers * args.seconds
    print(f"publishers={args.publishers} media={args.seconds:g}s style={args.style} read_ms={args.read_ms:g} "
          f"best of {args.repeat}")
    print(f"ingest  : {best_s:.3f} s CPU = {100 * best_s / args.seconds:.2f}% of a core "
          f"({1e6 * best_s / media:.0f} us per publisher-second)")
    print(f"decoder : {best_d:.3f} s CPU = {100 * best_d / args.seconds:.2f}% of a core "
          f"({1e6 * best_d / media:.0f} us per publisher-second)")


if __name__ == "__main__":
    main()
