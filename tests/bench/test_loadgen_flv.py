"""The load generator's HTTP-FLV viewers against a stub server that writes merged batches like SRS.

The stub serves three streams at once: one in real time, one at 0.8x real time, one that loses a GOP. The
load generator must call the first keeping up and well-formed, and catch the other two.
"""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import Target, run_viewers, summarize
from bench.measure import Thresholds
from livesrv.codec import flv

BATCH = 0.35  # SRS's mw_latency


class Track:
    """30 fps video (1 s GOP, tiny payloads) and AAC-like audio every 23 ms, produced on demand."""

    def __init__(self, speed: float = 1.0, hole: tuple[int, int] | None = None) -> None:
        self.speed, self.hole = speed, hole
        self.frame = 0
        self.audio = 0

    def until(self, elapsed: float) -> bytes:
        media = elapsed * 1000 * self.speed
        tags = []
        while self.frame * 1000 // 30 <= media or self.audio * 23 <= media:
            vts, ats = self.frame * 1000 // 30, self.audio * 23
            if vts <= ats:
                if not (self.hole and self.hole[0] < vts < self.hole[1]):
                    tags.append(flv.encode_tag(9, vts, (b"\x17\x01" if self.frame % 30 == 0 else b"\x27\x01") + bytes(900)))
                self.frame += 1
            else:
                if not (self.hole and self.hole[0] < ats < self.hole[1]):
                    tags.append(flv.encode_tag(8, ats, b"\xaf\x01" + bytes(90)))
                self.audio += 1
        return b"".join(tags)


HEADERS = flv.file_header() + flv.encode_tag(9, 0, b"\x17\x00\x01\x64\x00") + flv.encode_tag(8, 0, b"\xaf\x00\x12\x10")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n" if data else b""


async def stub_server(tracks: dict[str, Track]) -> tuple[asyncio.AbstractServer, asyncio.Task[None]]:
    """One writer per stream path; each viewer gets the headers then every batch from when it joined."""
    viewers: dict[str, list[asyncio.StreamWriter]] = {path: [] for path in tracks}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        if path not in tracks:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunk(HEADERS))
        viewers[path].append(writer)

    async def pump() -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(BATCH)
            for path, track in tracks.items():
                data = chunk(track.until(time.monotonic() - t0))
                for w in viewers[path]:
                    if not w.is_closing():
                        w.write(data)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, asyncio.create_task(pump())


async def test_flv_viewers_measure_batched_slow_and_broken_streams() -> None:
    tracks = {"/live/ok.flv": Track(), "/live/slow.flv": Track(speed=0.8), "/live/hole.flv": Track(hole=(1500, 3000))}
    server, pump = await stub_server(tracks)
    port = server.sockets[0].getsockname()[1]
    try:
        start = time.monotonic()
        window = start + 0.7
        runs = [
            run_viewers(Target(f"http://127.0.0.1:{port}{path}"), 4, start, 100.0, window, 3.0, Thresholds())
            for path in [*tracks, "/live/missing.flv"]
        ]
        # The same stream read by paced viewers (at most one read per 100 ms once playing).
        runs.append(run_viewers(Target(f"http://127.0.0.1:{port}/live/ok.flv"), 4, start, 100.0, window, 3.0,
                                Thresholds(), read_interval=0.1))
        ok, slow, hole, missing, paced = [summarize(r["viewers"], 3.0) for r in await asyncio.gather(*runs)]
    finally:
        pump.cancel()
        server.close()
    assert (ok["keeping_up"], ok["malformed"], ok["errors"], ok["stalled"]) == (4, 0, 0, 0), ok
    assert ok["first_frame_p90_s"] < 1.5 and 0.9 < ok["rate_min"] < 1.1, ok
    assert ok["delivered_mbps"] > 4 * 0.2, ok
    assert (paced["keeping_up"], paced["malformed"], paced["stalled"]) == (4, 0, 0), paced
    assert slow["keeping_up"] == 0 and slow["malformed"] == 0 and slow["rate_p50"] < 0.9, slow
    assert hole["malformed"] == 4 and hole["timestamp_gaps"] >= 4, hole
    assert missing["errors"] == 4 and "HTTP 404" in missing["error_samples"], missing
