"""Load generator: many simulated viewers of one live stream, over RTMP or HTTP-FLV, in one or more processes.

    .venv/bin/python bench/loadgen.py rtmp://127.0.0.1:1935/live/bench --viewers 500 --duration 20
    .venv/bin/python bench/loadgen.py http://127.0.0.1:8080/live/bench.flv --viewers 1000 --procs 2

Each viewer is a bare asyncio Protocol: RTMP viewers drive livesrv's sans-IO client session (handshake,
connect, createStream, play) and read tag headers off the decoded messages; HTTP-FLV viewers read tag headers
off the raw response (:mod:`bench.flvscan`). Viewers attach at ``--connect-rate`` per second, settle, then
are measured over a window of ``--duration`` seconds (see :mod:`bench.measure`). With ``--procs N`` the viewers
are spread over N worker processes, each printing one JSON line, aggregated by the parent; timings are
absolute ``time.monotonic()`` values (system-wide on Linux), so every worker measures the same window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.flvscan import HTTPFLVReader, StreamEnd
from bench.measure import AUDIO, VIDEO, Thresholds, ViewerStats
from bench.procs import die_with_parent
from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp.client import ClientSession, CommandReply, HandshakeComplete, MediaEvent, StatusEvent

monotonic = time.monotonic


def raise_fd_limit() -> None:
    """Thousands of sockets per process need more than the usual soft limit of 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------------------------------- viewers


class ReadPacer:
    """Lets each playing viewer read at most about once per ``interval``, with one timer for all of them.

    A server that writes every message separately (nginx-rtmp, NMS: ~73 writes/s per viewer here) would
    otherwise cost the load generator one wake-up, one recv and one Python callback per message per viewer,
    more than the server itself spends. A paused viewer's bytes wait in its socket buffer, as they would for
    a player busy decoding; the server's writes still complete. Viewers are only paced once they have their
    first keyframe, so time to first frame is measured unpaced.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._paused: list[_Viewer] = []
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def pause(self, viewer: _Viewer) -> None:
        transport = viewer.transport
        if transport is not None and not viewer.closing:
            transport.pause_reading()
            self._paused.append(viewer)

    def _tick(self) -> None:
        paused, self._paused = self._paused, []
        for viewer in paused:
            if not viewer.closing and not viewer.stats.ended and viewer.transport is not None:
                viewer.transport.resume_reading()
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)


class _Viewer(asyncio.Protocol):
    __slots__ = ("stats", "transport", "closing", "pacer")

    def __init__(self, stats: ViewerStats, pacer: ReadPacer | None = None) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.pacer = pacer

    def fail(self, reason: str) -> None:
        if not self.stats.error:
            self.stats.error = reason
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.ended = True
        if not self.closing and not self.stats.error and monotonic() <= self.stats.window_end:
            self.stats.error = "closed by server" if exc is None else f"connection lost: {exc}"


class FLVViewer(_Viewer):
    __slots__ = ("request", "reader")

    def __init__(self, stats: ViewerStats, request: bytes, pacer: ReadPacer | None = None) -> None:
        super().__init__(stats, pacer)
        self.request = request
        self.reader = HTTPFLVReader(stats)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = monotonic()
        stats = self.stats
        before = stats.media
        try:
            self.reader.feed(data, now)
        except StreamEnd as exc:
            self.fail(str(exc))
        stats.account(len(data), before, now)
        if self.pacer is not None and stats.first_key_at is not None:
            self.pacer.pause(self)


class RTMPViewer(_Viewer):
    __slots__ = ("session", "app", "tc_url", "name", "_connect_txn", "_create_txn")

    def __init__(self, stats: ViewerStats, app: str, tc_url: str, name: str,
                 pacer: ReadPacer | None = None) -> None:
        super().__init__(stats, pacer)
        self.session = ClientSession()
        self.app, self.tc_url, self.name = app, tc_url, name
        self._connect_txn = -1.0
        self._create_txn = -1.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.session.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = monotonic()
        stats = self.stats
        before = stats.media
        session = self.session
        try:
            events = session.receive_data(data)
        except ProtocolError as exc:
            stats.bad_framing(f"RTMP: {exc}")
            self.fail(f"protocol error: {exc}")
            stats.account(len(data), before, now)
            return
        tag = stats.tag
        for ev in events:
            if type(ev) is MediaEvent:
                msg = ev.message
                t = msg.type_id
                if t == VIDEO or t == AUDIO:
                    p = msg.payload
                    n = len(p)
                    tag(t, msg.timestamp, p[0] if n else -1, p[1] if n > 1 else -1, now)
            elif type(ev) is CommandReply:
                self._reply(ev)
            elif type(ev) is StatusEvent:
                if ev.level == "error" or ev.code in ("NetStream.Play.StreamNotFound", "NetStream.Play.Failed"):
                    self.fail(f"{ev.code}: {ev.description}")
            elif type(ev) is HandshakeComplete:
                self._connect_txn = session.connect(self.app, self.tc_url)
        out = session.data_to_send()
        if out and not self.closing and self.transport is not None:
            self.transport.write(out)
        stats.account(len(data), before, now)
        if self.pacer is not None and stats.first_key_at is not None:
            self.pacer.pause(self)

    def _reply(self, ev: CommandReply) -> None:
        if ev.name == "_error":
            self.fail(f"command {ev.transaction_id:g} refused: {ev.values!r}"[:200])
        elif ev.transaction_id == self._connect_txn:
            self._create_txn = self.session.create_stream()
        elif ev.transaction_id == self._create_txn:
            stream_id = ev.values[1] if len(ev.values) > 1 else None
            if not isinstance(stream_id, float):
                self.fail(f"createStream answered {ev.values!r}"[:200])
                return
            self.session.play(int(stream_id), self.name)


# --------------------------------------------------------------------------------------------- target


class Target:
    """Where viewers connect and what they send, from the play URL. ``rtmps://`` and ``https://`` are the same
    over TLS (any certificate is taken, as ``ffmpeg -tls_verify 0`` does: the bench's server is self-signed)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme not in ("rtmp", "http", "rtmps", "https"):
            raise ValueError(f"unsupported URL scheme in {url!r}: want rtmp://, http://, rtmps:// or https://")
        if not u.hostname:
            raise ValueError(f"no host in {url!r}")
        self.url = url
        self.proto = "rtmp" if u.scheme.startswith("rtmp") else "flv"
        self.host = u.hostname
        self.port = u.port or {"rtmp": 1935, "http": 80, "rtmps": 443, "https": 443}[u.scheme]
        self.ssl: ssl.SSLContext | None = None
        if u.scheme in ("rtmps", "https"):
            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        path = u.path.lstrip("/")
        if self.proto == "rtmp":
            app, _, name = path.rpartition("/")
            if not app or not name:
                raise ValueError(f"want rtmp://host[:port]/app/stream, got {url!r}")
            self.app = app
            self.name = name + (f"?{u.query}" if u.query else "")
            self.tc_url = f"{u.scheme}://{u.netloc}/{app}"
        else:
            target = "/" + path + (f"?{u.query}" if u.query else "")
            self.request = (
                f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUser-Agent: livesrv-bench/1\r\n"
                "Accept: */*\r\n\r\n"
            ).encode()

    def viewer(self, stats: ViewerStats, pacer: ReadPacer | None = None) -> _Viewer:
        if self.proto == "rtmp":
            return RTMPViewer(stats, self.app, self.tc_url, self.name, pacer)
        return FLVViewer(stats, self.request, pacer)


async def attach(target: Target, stats: ViewerStats, timeout: float = 10.0,
                 pacer: ReadPacer | None = None) -> _Viewer | None:
    loop = asyncio.get_running_loop()
    viewer = target.viewer(stats, pacer)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: viewer, target.host, target.port, ssl=target.ssl),
                               timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        stats.error = f"connect: {exc!r}"[:200]
        return None
    return viewer


# --------------------------------------------------------------------------------------------- worker


async def _sleep_until(t: float) -> None:
    delay = t - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_viewers(target: Target, n: int, start_at: float, rate: float, window_start: float,
                      duration: float, th: Thresholds, read_interval: float = 0.0) -> dict[str, Any]:
    """Attach ``n`` viewers from ``start_at`` at ``rate`` per second, measure, close; one JSON-able result."""
    window_end = window_start + duration
    stats_list: list[ViewerStats] = []
    tasks: list[asyncio.Task[_Viewer | None]] = []
    pacer = ReadPacer(read_interval) if read_interval > 0 else None
    if pacer is not None:
        pacer.start()
    for i in range(n):
        await _sleep_until(start_at + i / rate)
        stats = ViewerStats(th, window_start, window_end, monotonic())
        stats_list.append(stats)
        tasks.append(asyncio.ensure_future(attach(target, stats, pacer=pacer)))
    await _sleep_until(window_start)
    cpu0 = _cpu_seconds()
    await _sleep_until(window_end)
    cpu1 = _cpu_seconds()
    if pacer is not None:
        pacer.stop()
    for task in tasks:
        if task.done():
            viewer = task.result()
            if viewer is not None:
                viewer.close()
        else:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # let connection_lost callbacks run
    for stats in stats_list:
        if not stats.error and stats.first_key_at is None and not stats.bytes:
            stats.error = "no data"
    return {"viewers": [s.result() for s in stats_list], "cpu_s": cpu1 - cpu0, "duration": duration}


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _probe(target: Target, timeout: float) -> ViewerStats:
    now = monotonic()
    stats = ViewerStats(Thresholds(), now, now + timeout, now)
    viewer = await attach(target, stats, timeout)
    deadline = now + timeout
    while viewer is not None and stats.first_key_at is None and not stats.error and not stats.ended:
        if monotonic() > deadline:
            stats.error = f"no keyframe within {timeout:g}s"
            break
        await asyncio.sleep(0.02)
    if viewer is not None:
        viewer.close()
    return stats


def probe(url: str, timeout: float = 10.0) -> str:
    """Play ``url`` until the first keyframe arrives; '' on success, else why not (used to wait until live)."""
    stats: ViewerStats = _run_loop(_probe(Target(url), timeout))
    if stats.first_key_at is not None:
        return ""
    return stats.error or "no keyframe"


# ------------------------------------------------------------------------------------------ aggregate


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(q / 100.0 * len(s)) - 1)
    return s[k]


def summarize(viewers: list[dict[str, Any]], duration: float, client_cpu_s: float = 0.0) -> dict[str, Any]:
    n = len(viewers)
    first = [v["first_frame"] for v in viewers if v["first_frame"] is not None]
    rates = [v["rate"] for v in viewers if v["rate"] is not None]
    errors = Counter(v["error"] for v in viewers if v["error"])
    problems = Counter(v["problem"] for v in viewers if v["malformed"])
    keeping = sum(1 for v in viewers if v["keeping_up"])
    return {
        "viewers": n,
        "errors": sum(errors.values()),
        "error_samples": dict(errors.most_common(5)),
        "keeping_up": keeping,
        "keeping_up_share": keeping / n if n else 0.0,
        "stalled": sum(1 for v in viewers if v["stalls"]),
        "max_stall_s": max((v["max_stall"] for v in viewers), default=0.0),
        "first_frame_p50_s": percentile(first, 50),
        "first_frame_p90_s": percentile(first, 90),
        "first_frame_max_s": max(first, default=None),
        "no_first_frame": n - len(first),
        "started_without_keyframe": sum(1 for v in viewers if v["frames_before_key"]),
        "malformed": sum(1 for v in viewers if v["malformed"]),
        "framing_errors": sum(v["framing"] for v in viewers),
        "backwards_timestamps": sum(v["backwards"] for v in viewers),
        "timestamp_gaps": sum(v["ts_gaps"] for v in viewers),
        "problem_samples": dict(problems.most_common(5)),
        "rate_min": min(rates, default=None),
        "rate_p50": percentile(rates, 50),
        "delivered_mbps": sum(v["win_bytes"] for v in viewers) * 8 / duration / 1e6 if duration else 0.0,
        "client_cpu_percent": 100.0 * client_cpu_s / duration if duration else 0.0,
        "duration_s": duration,
    }


# ------------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Attach many viewers to a live stream and measure each of them.")
    p.add_argument("url", help="rtmp[s]://host:port/app/stream or http[s]://host:port/app/stream.flv")
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--duration", type=float, default=20.0, help="measuring window, seconds")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the last attach and the window")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new viewers per second, all processes")
    p.add_argument("--procs", type=int, default=0, help="worker processes (0: one per 500 viewers, at most the cores)")
    p.add_argument("--stall", type=float, default=1.0, help="seconds without media advance that count as a stall")
    p.add_argument("--max-gap", type=int, default=1000, help="ms between frames of a track that count as a gap")
    p.add_argument("--read-interval", type=float, default=0.1,
                   help="once playing, a viewer reads at most this often, seconds (0: on every arrival)")
    p.add_argument("--start-at", type=float, help="time.monotonic() to start attaching (default: now)")
    p.add_argument("--window-start", type=float, help="time.monotonic() the window opens (default: after attach)")
    p.add_argument("--per-viewer", action="store_true", help="include every viewer's record in the JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def default_procs(viewers: int) -> int:
    return max(1, min(os.cpu_count() or 1, math.ceil(viewers / 500)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raise_fd_limit()
    target = Target(args.url)
    th = Thresholds(stall_s=args.stall, max_gap_ms=args.max_gap)
    start_at = args.start_at if args.start_at is not None else monotonic() + 0.5
    window_start = args.window_start
    if window_start is None:
        window_start = start_at + args.viewers / args.connect_rate + args.settle
    if args.worker:
        result = _run_loop(run_viewers(target, args.viewers, start_at, args.connect_rate, window_start,
                                       args.duration, th, args.read_interval))
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0

    procs = args.procs or default_procs(args.viewers)
    procs = max(1, min(procs, args.viewers))
    if procs == 1:
        results = [_run_loop(run_viewers(target, args.viewers, start_at, args.connect_rate, window_start,
                                         args.duration, th, args.read_interval))]
    else:
        results = _run_workers(args, procs, start_at, window_start)
    viewers = [v for r in results for v in r["viewers"]]
    summary = summarize(viewers, args.duration, sum(r["cpu_s"] for r in results))
    summary["url"] = args.url
    summary["procs"] = procs
    if args.per_viewer:
        summary["per_viewer"] = viewers
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _run_workers(args: argparse.Namespace, procs: int, start_at: float, window_start: float) -> list[dict[str, Any]]:
    """Start ``procs`` workers with their share of the viewers; collect one JSON result from each."""
    shares = [args.viewers // procs + (1 if i < args.viewers % procs else 0) for i in range(procs)]
    common = [
        args.url, "--duration", str(args.duration), "--connect-rate", str(args.connect_rate / procs),
        "--stall", str(args.stall), "--max-gap", str(args.max_gap), "--read-interval", str(args.read_interval),
        "--start-at", repr(start_at), "--window-start", repr(window_start), "--worker",
    ]
    children: list[subprocess.Popen[bytes]] = []
    try:
        for share in shares:
            children.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *common, "--viewers", str(share)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
            ))
        results = []
        for child in children:
            out, _ = child.communicate(timeout=window_start - monotonic() + args.duration + 60)
            if child.returncode != 0:
                raise RuntimeError(f"load generator worker exited with {child.returncode}")
            results.append(json.loads(out))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


if __name__ == "__main__":
    sys.exit(main())
