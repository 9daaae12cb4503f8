"""The ingest scenario: K publishers at once, HLS on or off; the server's CPU and memory, the HLS it wrote.

    .venv/bin/python bench/run.py --scenario ingest --publishers 50 --hls on,off --server livesrv,nginx-rtmp
    .venv/bin/python bench/run.py --scenario ingest --publishers 200 --hls on --srs-binary ~/srs/objs/srs

For every (server, HLS, K) row: a fresh server (HLS written into the row's directory, the server's default
fragment and window unless ``--hls-fragment`` is given), the publisher load generator (:mod:`bench.pubgen`, one
process for all K publishers) started ``--publish-rate`` publishers per second, ``--settle`` seconds, then a
window of ``--duration`` seconds over which the server's CPU (utime+stime, all its threads), its RSS, the load
generator's CPU and the machine's are sampled, and the playlists are read every second
(:class:`~bench.hlscheck.PlaylistWatch`: the segments listed during the window are the ones written in it).
The publishers stream on for a second after the window, so no unpublish lands in it. Then the server is stopped
and the window's segments are checked (:func:`~bench.hlscheck.check_segments`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import hlscheck, pubgen
from bench.media import publish_args
from bench.procs import machine_times, popen, proc_sample, proc_times, sleep_until, spawn, stop_group
from bench.servers import HLS_SERVERS, HlsSpec, ServerUnavailable, start_server

APP = "live"
PREFIX = "bench"
#: Seconds the publishers go on after the window, so that unpublishing (which closes a partial segment) and
#: the load generator's shutdown stay out of it.
LINGER = 0.5


class IngestError(RuntimeError):
    pass


class PubgenLoad:
    """The K publishers in one process (:mod:`bench.pubgen`)."""

    def __init__(self, url: str, src: Path, publishers: int, args: argparse.Namespace, start_at: float,
                 window_start: float, workdir: Path, started: list[subprocess.Popen[bytes]]) -> None:
        self.log = workdir / "pubgen.log"
        cmd = [
            sys.executable, str(Path(pubgen.__file__).resolve()), url,
            "--source", str(src), "--publishers", str(publishers), "--prefix", PREFIX,
            "--duration", str(args.duration), "--connect-rate", str(args.publish_rate),
            "--client", args.pub_client, "--style", args.pub_style, "--tick", str(args.pub_tick),
            "--linger", str(LINGER), "--start-at", repr(start_at), "--window-start", repr(window_start),
            "--per-publisher",
        ]
        with open(self.log, "ab") as err:
            self.proc = popen(cmd, stdout=subprocess.PIPE, stderr=err)
        started.append(self.proc)

    def check(self, when: str) -> None:
        if self.proc.poll() is not None:
            raise IngestError(f"publisher load generator exited with {self.proc.returncode} {when}:\n"
                              f"{_tail(self.log)}")

    def cpu_seconds(self) -> float:
        return proc_sample(self.proc.pid)[0]

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=LINGER + 60)
        if self.proc.returncode != 0:
            raise IngestError(f"publisher load generator exited with {self.proc.returncode}:\n{_tail(self.log)}")
        return json.loads(out)


class FfmpegLoad:
    """Calibration only (``--pub-client ffmpeg``): K ``ffmpeg -re -stream_loop -1 -c copy`` processes, as the
    measurements before this bench were taken. It costs the machine ~1% of a core per publisher, and knows less:
    a publisher counts as accepted when its ffmpeg is still running at the window's end."""

    def __init__(self, url: str, src: Path, publishers: int, args: argparse.Namespace, start_at: float,
                 window_start: float, workdir: Path, started: list[subprocess.Popen[bytes]]) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workdir = workdir
        self.publishers = publishers
        self.duration = args.duration
        width = max(3, len(str(publishers - 1)))
        for i in range(publishers):
            sleep_until(start_at + i / args.publish_rate)
            proc = spawn(publish_args(src, f"{url}/{PREFIX}{i:0{width}d}"), workdir / f"ffmpeg{i}.log", workdir)
            self.procs.append(proc)
            started.append(proc)

    def check(self, when: str) -> None:
        pass  # an ffmpeg that exits is counted as not accepted

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                total += proc_sample(proc.pid)[0]
            except OSError:
                pass
        return total

    def result(self) -> dict[str, Any]:
        alive = sum(1 for proc in self.procs if proc.poll() is None)
        errors = {}
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None and len(errors) < 5:
                errors[f"ffmpeg {i}"] = _tail(self.workdir / f"ffmpeg{i}.log", 2)
        return {"publishers": self.publishers, "accepted": alive, "refused": self.publishers - alive,
                "disconnected": 0, "publishing_at_end": alive, "error_samples": errors, "behind": 0,
                "max_lag_ms": None, "sent_mbps": None, "cpu_percent": None, "duration_s": self.duration,
                "client": "ffmpeg processes"}


def run_ingest_row(server_name: str, hls: bool, publishers: int, args: argparse.Namespace, src: Path,
                   gop: float = 2.0) -> dict[str, Any]:
    """One row; ``gop`` is the source's GOP in seconds (how late a segment may be: see hlscheck.hls_lag)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{server_name}-"))
    started: list[subprocess.Popen[bytes]] = []
    row: dict[str, Any] = {"server": server_name, "hls": "on" if hls else "off", "publishers": publishers}
    spec = HlsSpec(workdir / "hls", args.hls_fragment) if hls else None
    if spec is not None:
        row["hls_fragment_s"] = spec.effective_fragment
    watch = (hlscheck.PlaylistWatch(workdir / "hls", workdir / "kept", spec.effective_fragment)
             if spec is not None else None)
    try:
        if hls and server_name not in HLS_SERVERS:
            raise ServerUnavailable(f"{server_name}: no HLS here")
        server = start_server(server_name, workdir, args.cache_dir, args.vhost_extra, hls=spec,
                              srs_binary=args.srs_binary, connections=max(1024, 4 * publishers))
        started.append(server.proc)
        start_at = time.monotonic() + 0.7  # time for the load generator to start and read the source
        window_start = start_at + publishers / args.publish_rate + args.settle
        window_end = window_start + args.duration
        url = f"rtmp://127.0.0.1:{server.rtmp_port}/{APP}"
        kind = FfmpegLoad if args.pub_client == "ffmpeg" else PubgenLoad
        load = kind(url, src, publishers, args, start_at, window_start, workdir, started)

        sleep_until(window_start)
        load.check("before the window")
        if watch is not None:
            watch.poll(in_window=False)  # what was finished before the window
        user0, sys0, rss = proc_times(server.pid)
        busy0, soft0 = machine_times()
        gen0 = load.cpu_seconds()
        rss_max = rss
        t0 = time.monotonic()
        next_poll = t0 + 1.0
        while time.monotonic() < window_end:
            sleep_until(min(window_end, time.monotonic() + 0.5))
            if not server.alive():
                raise IngestError(f"{server_name} died during the run:\n{server.log_tail()}")
            load.check("during the window")
            _, _, rss = proc_times(server.pid)
            rss_max = max(rss_max, rss)
            if watch is not None and time.monotonic() >= next_poll and time.monotonic() < window_end:
                watch.poll(in_window=True)
                next_poll += 1.0
        user1, sys1, rss = proc_times(server.pid)
        busy1, soft1 = machine_times()
        gen1 = load.cpu_seconds()
        elapsed = time.monotonic() - t0
        if watch is not None:
            watch.poll(in_window=True)  # the window's last segments, before any publisher leaves
        polled_at = time.monotonic()
        rss_max = max(rss_max, rss)
        pub = load.result()
        for proc in started:
            stop_group(proc)  # the checks below do not share the machine with them
        row.update({
            "cpu_percent": 100.0 * (user1 - user0 + sys1 - sys0) / elapsed,
            "cpu_user_percent": 100.0 * (user1 - user0) / elapsed,
            "cpu_sys_percent": 100.0 * (sys1 - sys0) / elapsed,
            "machine_cpu_percent": 100.0 * (busy1 - busy0) / elapsed,
            "machine_softirq_percent": 100.0 * (soft1 - soft0) / elapsed,
            "pubgen_cpu_percent": 100.0 * (gen1 - gen0) / elapsed,
            "rss_mib": rss_max / 2**20,
            "rss_end_mib": rss / 2**20,
            "pub": pub,
        })
        if pub.get("cpu_percent") is None:
            pub["cpu_percent"] = row["pubgen_cpu_percent"]
        per_publisher = pub.pop("per_publisher", None) or []
        if watch is not None and spec is not None:
            row["segments"] = hlscheck.check_segments(watch, spec.effective_fragment, args.check_streams)
            row["segments"]["expected_in_window"] = round(publishers * args.duration / spec.effective_fragment)
            media_zero = {p["name"]: p["started_at"] for p in per_publisher if p.get("started_at") is not None}
            if media_zero:
                row["segments"].update(hlscheck.hls_lag(watch, media_zero, polled_at, gop))
        row["ok"] = _row_ok(row)
        return row
    except (ServerUnavailable, IngestError, subprocess.TimeoutExpired, ValueError) as exc:
        row["error"] = str(exc)
        row["ok"] = False
        return row
    finally:
        for proc in reversed(started):
            stop_group(proc)
        if args.keep_workdir:
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _row_ok(row: dict[str, Any]) -> bool:
    """Every publisher accepted, none disconnected or behind, and (HLS on) segments written, every one right."""
    pub = row["pub"]
    if pub["accepted"] != row["publishers"] or pub["disconnected"] or pub["behind"]:
        return False
    seg = row.get("segments")
    if seg is not None and (seg["segments_in_window"] == 0 or seg["segments_bad"] or seg.get("streams_hls_behind")):
        return False
    return True


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------- output

COLUMNS = ("server", "HLS", "K", "accepted", "CPU %", "RSS MiB", "load gen CPU %", "segments in window",
           "checked / bad", "EXTINF s", "HLS lag max s", "behind")


def table_row(row: dict[str, Any]) -> list[str]:
    head = [row["server"], row["hls"], str(row["publishers"])]
    if "error" in row:
        return head + ["error (below)"] + [""] * (len(COLUMNS) - 4)
    pub = row["pub"]
    seg = row.get("segments")
    if seg is None:
        segs = ["-", "-", "-", "-"]
    else:
        ext = "-" if seg["extinf_min"] is None else (
            f"{seg['extinf_min']:.2f}" if seg["extinf_min"] == seg["extinf_max"]
            else f"{seg['extinf_min']:.2f}-{seg['extinf_max']:.2f}")
        lag = seg.get("hls_lag_max_s")
        segs = [f"{seg['segments_in_window']} (~{seg['expected_in_window']})",
                f"{seg['segments_checked']} / {seg['segments_bad']}", ext,
                "-" if lag is None else f"{lag:.1f}" + (f" ({seg['streams_hls_behind']} late)"
                                                        if seg.get("streams_hls_behind") else "")]
    return head + [
        str(pub["accepted"]) + (f" ({pub['disconnected']} cut)" if pub["disconnected"] else ""),
        f"{row['cpu_percent']:.1f}",
        f"{row['rss_mib']:.0f}",
        f"{row['pubgen_cpu_percent']:.1f}",
        *segs,
        str(pub["behind"]),
    ]


def _grid(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    cells = [list(columns)] + rows
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(columns))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def ratios(rows: list[dict[str, Any]], peer: str = "nginx-rtmp") -> list[dict[str, Any]]:
    """Each server's CPU, RSS and segments over the peer's, for the same HLS setting and K, same run."""
    good = {(r["server"], r["hls"], r["publishers"]): r for r in rows if "error" not in r}
    out = []
    for (server, hls, k), r in good.items():
        base = good.get((peer, hls, k))
        if server == peer or base is None:
            continue
        item: dict[str, Any] = {"server": server, "peer": peer, "hls": hls, "publishers": k,
                                "cpu": r["cpu_percent"] / base["cpu_percent"] if base["cpu_percent"] else None,
                                "rss": r["rss_mib"] / base["rss_mib"] if base["rss_mib"] else None}
        if "segments" in r and "segments" in base and base["segments"]["segments_in_window"]:
            item["segments"] = r["segments"]["segments_in_window"] / base["segments"]["segments_in_window"]
        out.append(item)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = _grid(COLUMNS, [table_row(r) for r in rows])
    rat = ratios(rows)
    if rat:
        lines.append("")
        lines += _grid(["server / nginx-rtmp", "HLS", "K", "CPU", "RSS", "segments"], [[
            r["server"], r["hls"], str(r["publishers"]),
            "-" if r["cpu"] is None else f"{r['cpu']:.2f}x",
            "-" if r["rss"] is None else f"{r['rss']:.2f}x",
            f"{r['segments']:.2f}x" if "segments" in r else "-",
        ] for r in rat])
    notes = []
    for r in rows:
        tag = f"{r['server']}/hls {r['hls']}/{r['publishers']}"
        if "error" in r:
            notes.append(f"{tag}: {r['error']}")
            continue
        pub = r["pub"]
        if pub["error_samples"]:
            notes.append(f"{tag}: publishers refused or cut: {pub['error_samples']}")
        seg = r.get("segments")
        if seg is not None and seg["bad_samples"]:
            notes.append(f"{tag}: bad segments: {seg['bad_samples']}")
    return "\n".join(lines + notes)


def run_all(args: argparse.Namespace, src: Path, rows: list[dict[str, Any]], gop: float = 2.0) -> None:
    servers = list(args.server)
    if args.srs_binary is not None and "srs" not in servers:
        servers.append("srs")
    for server in servers:
        for hls in args.hls:
            for k in args.publishers:
                print(f"bench: ingest {server} hls {hls} {k} publishers, {args.duration:g} s ...",
                      file=sys.stderr, flush=True)
                rows.append(run_ingest_row(server, hls == "on", k, args, src, gop))
