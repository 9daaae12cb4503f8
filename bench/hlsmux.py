"""The HLS path's per-frame cost, as the server pays it: K streams' frames through K segmenters, interleaved.

    .venv/bin/python bench/hlsmux.py                         # 50 streams, 12 s of the ingest bench's source
    .venv/bin/python bench/hlsmux.py --streams 50 --reps 3 --json

bench/mux.py times one muxer over one stream, which stays in the CPU's caches; a server with 50 publishers
goes from stream to stream, each with its own muxer, segmenter and freshly received frames, and pays about
twice as much per frame. Here every stream gets its own copy of the frames (so they are not shared in cache)
and its own :class:`~livesrv.remux.hls.HlsSegmenter` (livesrv's defaults: 10 s fragments, 128 KiB appends),
and frame i of every stream is fed before frame i+1 of any, as the hub does. The figure is CPU time
(``time.process_time``) per video frame, per audio frame, and per second of media of one stream (what 50
streams cost is 50 times that, in µs per second: 1000 µs is 0.1% of a core). The actions are dropped (the
writer is measured by bench/hlswrite.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "src"))  # measure this checkout's livesrv

from bench.media import DEFAULT_CACHE, PROFILES, source_file  # noqa: E402
from livesrv.codec import flv  # noqa: E402
from livesrv.codec.flv import FLVDecoder, FLVTag  # noqa: E402
from livesrv.config import HlsConfig  # noqa: E402
from livesrv.media.packet import MediaPacket  # noqa: E402
from livesrv.remux.hls import HlsSegmenter  # noqa: E402


def run_once(tags: list[tuple[int, int, bytes]], streams: int) -> dict[str, float]:
    """One pass: fresh segmenters and frame copies; CPU seconds spent on video and on audio frames."""
    copies = [[MediaPacket.from_payload(k, ts, bytes(bytearray(p))) for k, ts, p in tags] for _ in range(streams)]
    segs = [HlsSegmenter(HlsConfig(enabled=True), "v", "live", f"s{i}") for i in range(streams)]
    spent = {flv.VIDEO: 0.0, flv.AUDIO: 0.0}
    clock = time.process_time
    for i, (kind, _, _) in enumerate(tags):
        t = clock()
        for s in range(streams):
            segs[s].feed(copies[s][i])
        if kind in spent:
            spent[kind] += clock() - t
    return {"video_s": spent[flv.VIDEO], "audio_s": spent[flv.AUDIO]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--seconds", type=float, default=12.0, help="media per stream (from the 30 s source)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--source", default="720p", choices=sorted(PROFILES))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    path = source_file(PROFILES[args.source], args.cache_dir)
    tags = [(e.tag_type, e.timestamp, bytes(e.payload)) for e in FLVDecoder().feed(path.read_bytes())
            if isinstance(e, FLVTag) and e.timestamp < args.seconds * 1000]
    videos = sum(1 for t in tags if t[0] == flv.VIDEO) * args.streams
    audios = sum(1 for t in tags if t[0] == flv.AUDIO) * args.streams
    media_s = max(t[1] for t in tags) / 1000 * args.streams
    rows: list[dict[str, Any]] = []
    for _ in range(args.reps):
        r = run_once(tags, args.streams)
        rows.append({"us_per_video_frame": 1e6 * r["video_s"] / videos,
                     "us_per_audio_frame": 1e6 * r["audio_s"] / audios,
                     "us_per_media_s": 1e6 * (r["video_s"] + r["audio_s"]) / media_s})
    summary = {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}
    report = {"streams": args.streams, "seconds": args.seconds, "source": args.source, "median": summary,
              "rows": rows}
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print(f"{args.streams} streams, {args.seconds:g} s each, median of {args.reps}: "
              f"{summary['us_per_video_frame']:.2f} µs per video frame, {summary['us_per_audio_frame']:.2f} µs per "
              f"audio frame, {summary['us_per_media_s']:.0f} µs per media-second of one stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
