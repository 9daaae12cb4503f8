"""HLS segment writing micro-benchmark: what handing K streams' segment bytes to the disk costs the server.

    .venv/bin/python bench/hlswrite.py                        # 50 streams, 8 s, 128 KiB appends
    .venv/bin/python bench/hlswrite.py --streams 50 --seconds 8 --append-kib 128,256 --json

Each of K simulated streams produces what the segmenter gives :class:`~livesrv.servers.hls.files.HlsWriter`
for a 2.15 Mbit/s stream (the ingest bench's): an append of ``--append-kib`` every time that much media was
produced, and every ``--fragment`` seconds a close and a playlist. The actions are submitted in real time
(streams staggered, as publishers are), so every hand-off to the writer's thread finds it idle, as it does in
the server; the result is the process's CPU time (``time.process_time``: all threads) over the run, as % of
one core, for the bytes written to a temporary directory (the page cache). Real time matters here: fed as
fast as possible, batches pile up and the hand-off cost disappears from the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "src"))  # measure this checkout's livesrv

from livesrv.remux.hls import AppendSegment, CloseSegment, HlsAction, WritePlaylist  # noqa: E402
from livesrv.servers.hls.files import HlsWriter  # noqa: E402

#: Bytes per second of one stream's segments (the ingest bench's 2.15 Mbit/s plus TS overhead).
STREAM_BYTES_PER_S = 284_000


async def _stream(writer: HlsWriter, index: int, streams: int, seconds: float, append: int, fragment: float,
                  t0: float) -> None:
    interval = append / STREAM_BYTES_PER_S
    start = t0 + interval * index / streams  # staggered
    data = bytes(append)
    seq = offset = 0
    seg_start = start
    n = 0
    while True:
        due = start + n * interval
        if due > t0 + seconds:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        name = f"s{index}/seg-{seq}.ts"
        acts: list[HlsAction] = [AppendSegment(name, data, offset)]
        offset += append
        if due - seg_start >= fragment:
            acts += [CloseSegment(name, offset), WritePlaylist(f"s{index}/index.m3u8", f"#EXTM3U\n#{seq}\n" * 8)]
            seq += 1
            offset = 0
            seg_start = due
        writer.submit(acts)
        n += 1
    await writer.flush()
    writer.close()
    await writer.task


async def run(streams: int, seconds: float, append: int, fragment: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hlswrite-") as root:
        writers = [HlsWriter(root, f"s{i}") for i in range(streams)]
        await asyncio.sleep(0.2)
        t0 = time.monotonic() + 0.1
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(_stream(w, i, streams, seconds, append, fragment, t0) for i, w in enumerate(writers)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        errors = sum(w.errors for w in writers)
    return {"streams": streams, "append_kib": append // 1024, "seconds": round(wall, 2),
            "cpu_percent": round(100 * cpu / wall, 2), "errors": errors,
            "mb_written": round(streams * seconds * STREAM_BYTES_PER_S / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--fragment", type=float, default=10.0)
    p.add_argument("--append-kib", default="128", help="comma list: append sizes to measure")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # (the server runs on uvloop; plain asyncio still gives a figure)
        runner = asyncio.run
    rows = []
    for _ in range(args.reps):
        for kib in (int(k) for k in args.append_kib.split(",")):
            rows.append(runner(run(args.streams, args.seconds, kib * 1024, args.fragment)))
            if not args.json:
                print(rows[-1], flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
