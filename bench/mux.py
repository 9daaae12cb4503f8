"""MPEG-TS muxing micro-benchmark: what turning FLV-level packets into TS costs, per second of media.

    .venv/bin/python bench/mux.py                      # 10 s of 720p30 2 Mbit/s H.264 + AAC 128k, all of them
    .venv/bin/python bench/mux.py --impl old,new --reps 15 --json

The same input goes through (a) ``old``: the muxer as it was before the fast packetizer, kept in the tests
as ``ReferenceTSMuxer`` (one transport packet at a time in a Python loop), (b) ``new``:
:class:`livesrv.codec.mpegts.TSMuxer`, and (c) ``pyav``: FFmpeg's MPEG-TS muxer in C through PyAV, with
streams made from the sequence headers (FFmpeg's FLV demuxer reads them from a two-tag FLV in memory) and one
``av.Packet`` built per FLV tag, which is part of what is timed; ``pyav-live`` is the same, draining the
output after every packet as a server must (see :func:`pyav_muxer`). ``old`` and ``new`` must give the same
bytes (checked); PyAV's output differs (its own PSI, PCR and PES layout) but is of the same size.

The input is made once with ffmpeg (bench.media, noise over testsrc2 so x264 reaches its bitrate) and cached
in bench/.cache/; its FLV tags become :class:`~livesrv.media.packet.MediaPacket` objects before timing.
Each implementation gets warm-up runs, then ``--reps`` timed runs of the whole input, round-robin between
implementations (a fresh muxer each run; for PyAV a fresh output container, but the stream templates are
probed once, outside the timing). The table gives the min and the median, the median in µs per second of
media and output MB/s, and the speedup over ``old``. Runs are a few milliseconds each: the whole bench takes
a second or two.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make ``bench`` and ``tests`` importable...
    sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "src"))  # ...and measure this checkout's livesrv, not another installed one

from bench.media import DEFAULT_CACHE, PROFILES, SourceProfile, source_file  # noqa: E402
from livesrv.codec import flv  # noqa: E402
from livesrv.codec.flv import FLVDecoder, FLVTag  # noqa: E402
from livesrv.codec.mpegts import TSMuxer  # noqa: E402
from livesrv.media.packet import MediaPacket  # noqa: E402

#: The issue's stream, 10 s of it: 1280x720 30 fps H.264 (2 s GOP, 2 Mbit/s) + AAC 128k.
SOURCES = {"720p10": SourceProfile("720p10", "1280x720", 30, 2, 2000, 128, 10), **PROFILES}

Muxer = Callable[[Sequence[MediaPacket]], bytes]


def load_packets(profile: SourceProfile, cache_dir: Path) -> list[MediaPacket]:
    path = source_file(profile, cache_dir)
    return [
        MediaPacket.from_payload(e.tag_type, e.timestamp, bytes(e.payload))
        for e in FLVDecoder().feed(path.read_bytes())
        if isinstance(e, FLVTag)
    ]


def media_seconds(pkts: Sequence[MediaPacket]) -> float:
    """Span of the audio/video timestamps (the last frame's own duration is not counted)."""
    stamps = [p.timestamp for p in pkts if p.kind in (flv.VIDEO, flv.AUDIO)]
    return (max(stamps) - min(stamps)) / 1000


# --------------------------------------------------------------------------- the implementations


def ts_muxer(cls: type[TSMuxer]) -> Muxer:
    """Every packet through ``cls().mux`` (what the HLS and HTTP-TS outputs do), then the audio flush."""

    def run(pkts: Sequence[MediaPacket]) -> bytes:
        m = cls()
        out = [m.mux(p) for p in pkts]
        out.append(m.flush())
        return b"".join(out)

    return run


def reference_muxer() -> Muxer:
    try:
        from tests.codec.test_mpegts import ReferenceTSMuxer
    except ImportError as exc:  # the tests need the test extras (pytest, hypothesis)
        raise SystemExit(f"bench/mux.py: the old muxer lives in the tests, which do not import: {exc}") from None
    return ts_muxer(ReferenceTSMuxer)


def pyav_muxer(pkts: Sequence[MediaPacket], live: bool = False) -> Muxer:
    """FFmpeg's mpegts muxer. Video goes in as AVCC (the muxer's automatic h264_mp4toannexb adds start codes
    and parameter sets), AAC raw (the muxer adds ADTS): the same work TSMuxer does in Python.

    ``live``: what a server needs, the bytes each packet produced right after muxing it (for an HTTP-TS
    viewer, or to cut an HLS segment): ``flush_packets`` makes FFmpeg write through its 32 KiB I/O buffer and
    the output is drained after every packet. (Even then ``mux_one`` interleaves: a packet's bytes come out
    only once the other stream has a later packet.) Otherwise everything is collected at the end.
    """
    import av

    vsh = next(p for p in pkts if p.kind == flv.VIDEO and p.sequence_header)
    ash = next(p for p in pkts if p.kind == flv.AUDIO and p.sequence_header)
    header = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    probe = av.open(io.BytesIO(header + flv.encode_tag(flv.VIDEO, 0, vsh.payload)
                               + flv.encode_tag(flv.AUDIO, 0, ash.payload)), format="flv")
    vtemplate, atemplate = probe.streams.video[0], probe.streams.audio[0]
    ms = Fraction(1, 1000)

    def run(pkts: Sequence[MediaPacket]) -> bytes:
        buf = io.BytesIO()
        out = av.open(buf, "w", format="mpegts", container_options={"flush_packets": "1"} if live else None)
        chunks: list[bytes] = []
        vs = out.add_stream_from_template(vtemplate, opaque=True)
        aus = out.add_stream_from_template(atemplate, opaque=True)
        vs.time_base = aus.time_base = ms
        mux = out.mux_one
        for p in pkts:
            payload = p.payload
            if p.kind == flv.VIDEO:
                if payload[1] != flv.PACKET_CODED_FRAMES:
                    continue  # sequence header (already in the template) or end of sequence
                pkt = av.Packet(memoryview(payload)[5:])
                pkt.stream = vs
                pkt.time_base = ms
                pkt.dts = p.timestamp
                pkt.pts = p.timestamp + int.from_bytes(payload[2:5], "big", signed=True)
                pkt.is_keyframe = p.keyframe
            elif p.kind == flv.AUDIO:
                if payload[1] != flv.AUDIO_PACKET_CODED_FRAMES:
                    continue
                pkt = av.Packet(memoryview(payload)[2:])
                pkt.stream = aus
                pkt.time_base = ms
                pkt.dts = pkt.pts = p.timestamp
            else:
                continue
            mux(pkt)
            if live and buf.tell():
                chunks.append(buf.getvalue())
                buf.seek(0)
                buf.truncate()
        out.close()
        chunks.append(buf.getvalue())
        return b"".join(chunks)

    return run


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    impl: str
    min_ms: float
    median_ms: float
    us_per_media_s: float  # median
    out_mb_per_s: float  # median
    out_bytes: int
    speedup: float | None = None  # old's median / this median


def measure(
    runs: dict[str, Muxer], pkts: Sequence[MediaPacket], seconds: float, warmup: int, reps: int
) -> tuple[list[Row], dict[str, bytes]]:
    """Time every implementation ``reps`` times, round-robin (a change in the machine's load hits them all
    alike). The output of a timed run is dropped at once, as a server's would be written out: keeping it
    alive until the next run made the next one fault in fresh pages, which penalised whoever made big
    buffers. The first warm-up run's output is kept for the checks."""
    outputs = {name: run(pkts) for name, run in runs.items()}
    for _ in range(warmup - 1):
        for run in runs.values():
            run(pkts)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(pkts)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        size = len(outputs[name])
        rows.append(Row(name, min(ts) * 1e3, med * 1e3, med / seconds * 1e6, size / med / 1e6, size))
    return rows, outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", default="old,new,pyav,pyav-live", help="comma list of old, new, pyav, pyav-live")
    ap.add_argument("--source", default="720p10", choices=sorted(SOURCES))
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)

    pkts = load_packets(SOURCES[args.source], args.cache_dir)
    seconds = media_seconds(pkts)
    in_bytes = sum(len(p.payload) for p in pkts)
    makers: dict[str, Callable[[], Muxer]] = {
        "old": reference_muxer,
        "new": lambda: ts_muxer(TSMuxer),
        "pyav": lambda: pyav_muxer(pkts),
        "pyav-live": lambda: pyav_muxer(pkts, live=True),
    }
    names = args.impl.split(",")
    for name in names:
        if name not in makers:
            ap.error(f"unknown implementation {name!r}")
    rows, outputs = measure({name: makers[name]() for name in names}, pkts, seconds, max(1, args.warmup), args.reps)
    if "old" in outputs and "new" in outputs and outputs["old"] != outputs["new"]:
        print("bench/mux.py: old and new muxers gave different bytes", file=sys.stderr)
        return 1
    base = next((r.median_ms for r in rows if r.impl == "old"), None)
    for r in rows:
        r.speedup = base / r.median_ms if base else None

    info: dict[str, Any] = {
        "source": args.source, "packets": len(pkts), "media_s": seconds, "in_bytes": in_bytes,
        "reps": args.reps, "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps({**info, "rows": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"{args.source}: {len(pkts)} FLV tags, {seconds:.2f} s of media, {in_bytes / 1e6:.2f} MB in; "
          f"{args.warmup} warm-up + {args.reps} timed runs each; Python {info['python']}")
    if "old" in outputs and "new" in outputs:
        print("old and new: identical output")
    print(f"{'impl':9} {'min ms':>8} {'median ms':>10} {'µs/media-s':>11} {'MB/s out':>9} {'out MB':>7} "
          f"{'speedup':>8}")
    for r in rows:
        speed = f"{r.speedup:.1f}x" if r.speedup else "-"
        print(f"{r.impl:9} {r.min_ms:8.2f} {r.median_ms:10.2f} {r.us_per_media_s:11.0f} {r.out_mb_per_s:9.0f} "
              f"{r.out_bytes / 1e6:7.2f} {speed:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
