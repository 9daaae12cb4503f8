"""Benchmark runner. Fan-out (default): one server, one published stream, N viewers; the server's CPU and memory.

    .venv/bin/python bench/run.py --viewers 1000 --proto flv --duration 20
    .venv/bin/python bench/run.py --server livesrv,nginx-rtmp,nms --proto rtmp,flv --viewers 1000,2000 --json

livesrv with ``workers N`` (``--livesrv-workers 1,2``: a row for each): the CPU and memory are the master's and
its workers' summed; the viewers spread over the workers (SO_REUSEPORT), each worker but the owner pulling the
stream once:

    .venv/bin/python bench/run.py --viewers 400 --proto flv --livesrv-workers 1,2

Ingest (``--scenario ingest``, :mod:`bench.ingest`): K publishers at once, HLS on and off, no viewers:

    .venv/bin/python bench/run.py --scenario ingest --publishers 50 --hls on,off --server livesrv,nginx-rtmp

For every (server, protocol, viewers) row it starts a fresh server, publishes the cached source file with
``ffmpeg -re -stream_loop -1 -c copy``, waits until a probe viewer gets a keyframe, runs the load generator
(:mod:`bench.loadgen`) and, over the load generator's measuring window, samples the server process's CPU
seconds (utime+stime from /proc/<pid>/stat) and RSS. Everything it starts runs in its own process group and
is killed on every way out (normal end, error, Ctrl-C, SIGTERM). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ingest, loadgen
from bench.media import DEFAULT_CACHE, PROFILES, publish_args, source_file
from bench.procs import machine_times, popen, proc_sample, proc_times, sleep_until, spawn, stop_group
from bench.servers import SERVER_PROTOS, SERVERS, TLS_PROTOS, Server, ServerUnavailable, start_server

APP, STREAM = "live", "bench"


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ one row


def wait_live(server: Server, publisher: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    """Until a probe viewer of ``url`` receives a keyframe (the server knows the stream and its codecs)."""
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        if publisher.poll() is not None:
            raise BenchError(f"publisher ffmpeg exited with {publisher.returncode}")
        if not server.alive():
            raise BenchError(f"{server.name} exited:\n{server.log_tail()}")
        why = loadgen.probe(url, min(5.0, max(0.5, deadline - time.monotonic())))
        if not why:
            return
        time.sleep(0.3)
    raise BenchError(f"stream never went live at {url}: {why}\n{server.log_tail()}")


def _times(pids: list[int]) -> tuple[float, float, int]:
    """(user, system CPU seconds, RSS bytes) of the server's processes, summed."""
    user = system = rss = 0
    for pid in pids:
        u, s, r = proc_times(pid)
        user, system, rss = user + u, system + s, rss + r
    return user, system, rss


def run_row(server_name: str, proto: str, viewers: int, args: argparse.Namespace, src: Path,
            workers: int = 1) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{server_name}-"))
    started: list[subprocess.Popen[bytes]] = []
    row: dict[str, Any] = {"server": server_name, "proto": proto, "viewers": viewers}
    if workers > 1:
        row["workers"] = workers
    try:
        server = start_server(server_name, workdir, args.cache_dir, args.vhost_extra, srs_binary=args.srs_binary,
                              tls=proto in TLS_PROTOS, workers=workers)
        started.append(server.proc)
        url = server.play_url(proto, APP, STREAM)
        publisher = spawn(publish_args(src, server.publish_url(APP, STREAM)), workdir / "publisher.log", workdir)
        started.append(publisher)
        wait_live(server, publisher, url, args.live_timeout)

        start_at = time.monotonic() + 1.0  # time for the load generator's processes to start
        window_start = start_at + viewers / args.connect_rate + args.settle
        window_end = window_start + args.duration
        gen: subprocess.Popen[bytes] | None = None
        if viewers > 0:  # 0: the publisher alone (what ingest costs)
            cmd = [
                sys.executable, str(Path(loadgen.__file__).resolve()), url,
                "--viewers", str(viewers), "--duration", str(args.duration), "--procs", str(args.procs),
                "--connect-rate", str(args.connect_rate), "--stall", str(args.stall), "--max-gap", str(args.max_gap),
                "--read-interval", str(args.read_interval),
                "--start-at", repr(start_at), "--window-start", repr(window_start),
            ]
            with open(workdir / "loadgen.log", "ab") as err:
                gen = popen(cmd, stdout=subprocess.PIPE, stderr=err)
            started.append(gen)

        sleep_until(window_start)
        pids = server.pids()
        if len(pids) != workers + (workers > 1):
            raise BenchError(f"{len(pids)} server processes for workers {workers}: {pids}")
        user0, sys0, rss = _times(pids)
        busy0, soft0 = machine_times()
        pub0, _ = proc_sample(publisher.pid)
        rss_max = rss
        t0 = time.monotonic()
        while time.monotonic() < window_end:
            sleep_until(min(window_end, time.monotonic() + 0.5))
            if not server.alive():
                raise BenchError(f"{server_name} died during the run:\n{server.log_tail()}")
            if server.pids() != pids:
                raise BenchError(f"a worker was restarted during the run:\n{server.log_tail()}")
            _, _, rss = _times(pids)
            rss_max = max(rss_max, rss)
        user1, sys1, rss = _times(pids)
        busy1, soft1 = machine_times()
        pub1, _ = proc_sample(publisher.pid)
        elapsed = time.monotonic() - t0
        if publisher.poll() is not None:
            raise BenchError(f"publisher ffmpeg exited with {publisher.returncode} during the run")

        load: dict[str, Any] | None = None
        if gen is not None:
            out, _ = gen.communicate(timeout=args.duration + viewers / args.connect_rate + 120)
            if gen.returncode != 0:
                tail = (workdir / "loadgen.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"load generator exited with {gen.returncode}:\n{tail}")
            load = json.loads(out)
        row.update({
            "cpu_percent": 100.0 * (user1 - user0 + sys1 - sys0) / elapsed,
            "cpu_user_percent": 100.0 * (user1 - user0) / elapsed,
            "cpu_sys_percent": 100.0 * (sys1 - sys0) / elapsed,
            "machine_cpu_percent": 100.0 * (busy1 - busy0) / elapsed,  # all cores, % of one core
            "machine_softirq_percent": 100.0 * (soft1 - soft0) / elapsed,
            "publisher_cpu_percent": 100.0 * (pub1 - pub0) / elapsed,
            "rss_mib": rss_max / 2**20,
            "rss_end_mib": rss / 2**20,
            "load": load,
        })
        return row
    except (ServerUnavailable, BenchError) as exc:
        row["error"] = str(exc)
        return row
    finally:
        for proc in reversed(started):
            stop_group(proc)
        if args.keep_workdir:
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------- output


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


COLUMNS = ("server", "proto", "viewers", "CPU %", "RSS MiB", "Mbit/s", "keeping up", "stalled",
           "first frame p50", "p90", "malformed")


def table_row(row: dict[str, Any]) -> list[str]:
    name = row["server"] + (f" workers {row['workers']}" if row.get("workers", 1) > 1 else "")
    head = [name, row["proto"], str(row["viewers"])]
    if "skipped" in row:
        return head + ["not supported"] + [""] * (len(COLUMNS) - 4)
    if "error" in row:
        return head + ["error (below)"] + [""] * (len(COLUMNS) - 4)
    load = row["load"]
    cpu = [f"{row['cpu_percent']:.1f}", f"{row['rss_mib']:.0f}"]
    if load is None:  # no viewers: the publisher alone
        return head + cpu + ["-"] * (len(COLUMNS) - 5)
    return head + cpu + [
        f"{load['delivered_mbps']:.0f}",
        f"{100.0 * load['keeping_up_share']:.1f}%",
        str(load["stalled"]),
        _ms(load["first_frame_p50_s"]),
        _ms(load["first_frame_p90_s"]),
        str(load["malformed"]),
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [table_row(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = []
    for r in rows:
        if "error" in r:
            notes.append(f"{r['server']}/{r['proto']}/{r['viewers']}: {r['error']}")
        load = r.get("load")
        if load is not None and (load["errors"] or load["malformed"]):
            notes.append(f"{r['server']}/{r['proto']}/{r['viewers']}: errors {load['error_samples']} "
                         f"problems {load['problem_samples']}")
    return "\n".join(lines + notes)


# ---------------------------------------------------------------------------------------------- CLI


def _csv(kind: type, choices: tuple[str, ...] | None = None):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{bad}: choose from {', '.join(choices)}")
        return values
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Measure a server's fan-out of one live stream to N viewers "
                                            "(--scenario fanout), or its ingest of K streams (--scenario ingest).")
    p.add_argument("--scenario", choices=("fanout", "ingest"), default="fanout")
    p.add_argument("--server", type=_csv(str, SERVERS), default=["livesrv"],
                   help="comma list of livesrv, nginx-rtmp, nms, srs (the peers only where installed; srs needs "
                        "--srs-binary)")
    p.add_argument("--proto", type=_csv(str, ("rtmp", "flv", "rtmps", "https-flv")), default=["flv"],
                   help="comma list: rtmp, flv, rtmps, https-flv (the last two: livesrv over TLS)")
    p.add_argument("--viewers", type=_csv(int), default=[1000],
                   help="comma list of viewer counts (0: no viewers, what the publisher alone costs)")
    p.add_argument("--duration", type=float, default=20.0, help="measuring window, seconds")
    g = p.add_argument_group("ingest scenario")
    g.add_argument("--publishers", type=_csv(int), default=[50], help="comma list of publisher counts K")
    g.add_argument("--hls", type=_csv(str, ("on", "off")), default=["on", "off"], help="comma list: on, off")
    g.add_argument("--hls-fragment", type=float, default=None,
                   help="seconds per HLS segment (default: each server's default, 10 s)")
    g.add_argument("--srs-binary", type=Path, default=None,
                   help="an SRS binary to measure as well (never built by the bench)")
    g.add_argument("--publish-rate", type=float, default=50.0, help="publishers started per second")
    g.add_argument("--pub-client", choices=("lean", "package", "ffmpeg"), default="lean",
                   help="the publisher load generator's client (see bench/pubgen.py); ffmpeg: K ffmpeg processes "
                        "instead, for calibration only")
    g.add_argument("--pub-style", choices=("message", "ffmpeg"), default="message",
                   help="what the publishers' writes look like (see bench/pubgen.py)")
    g.add_argument("--pub-tick", type=float, default=0.0,
                   help="a publisher writes at most this often, seconds (0: each message when due)")
    g.add_argument("--check-streams", type=int, default=0,
                   help="check the window's segments of this many streams (0: every stream)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds after the last viewer attached (ingest: after the last publisher started)")
    p.add_argument("--connect-rate", type=float, default=500.0, help="viewers attached per second")
    p.add_argument("--procs", type=int, default=0, help="load generator processes (0: one per 500 viewers)")
    p.add_argument("--stall", type=float, default=1.0, help="seconds without media that count as a stall")
    p.add_argument("--max-gap", type=int, default=1000, help="ms between frames of a track that count as a gap")
    p.add_argument("--read-interval", type=float, default=0.1,
                   help="a playing viewer reads at most this often, seconds (0: on every arrival)")
    p.add_argument("--source", choices=sorted(PROFILES), default="720p", help="source stream profile")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the source file is kept")
    p.add_argument("--livesrv-workers", type=_csv(int), default=[1],
                   help="comma list of livesrv's workers N, a row for each (CPU and RSS: all its processes summed)")
    p.add_argument("--vhost-extra", default="", help="livesrv only: directives added to the vhost block, "
                                                      "e.g. 'play { mw_latency 100; }'")
    p.add_argument("--live-timeout", type=float, default=30.0, help="seconds to wait for the stream to go live")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs of each row")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    return p


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so every ``finally`` runs and kills what was started


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if "srs" in args.server and args.srs_binary is None:
        raise SystemExit("bench: --server srs needs --srs-binary PATH (the bench never builds SRS)")
    signal.signal(signal.SIGTERM, _terminate)
    loadgen.raise_fd_limit()  # the server inherits it
    src = source_file(PROFILES[args.source], args.cache_dir)
    rows: list[dict[str, Any]] = []
    try:
        if args.scenario == "ingest":
            ingest.run_all(args, src, rows, PROFILES[args.source].gop_s)
        else:
            _run_all(args, src, rows)
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    if args.scenario == "ingest":
        if args.json:
            json.dump({"scenario": "ingest", "source": PROFILES[args.source].filename, "duration_s": args.duration,
                       "rows": rows, "ratios": ingest.ratios(rows)}, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print(ingest.format_table(rows))
        return 0 if all(r.get("ok") for r in rows) else 1
    if args.json:
        json.dump({"source": PROFILES[args.source].filename, "duration_s": args.duration, "rows": rows},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(rows))
    return 1 if any("error" in r for r in rows) else 0


def _run_all(args: argparse.Namespace, src: Path, rows: list[dict[str, Any]]) -> None:
    for server in args.server:
        for proto in args.proto:
            for n in args.viewers:
                if proto not in SERVER_PROTOS[server]:
                    rows.append({"server": server, "proto": proto, "viewers": n, "skipped": f"{server} has no {proto}"})
                    continue
                for workers in (args.livesrv_workers if server == "livesrv" else [1]):
                    more = f", workers {workers}" if workers > 1 else ""
                    print(f"bench: {server} {proto} {n} viewers{more}, {args.duration:g} s ...", file=sys.stderr,
                          flush=True)
                    rows.append(run_row(server, proto, n, args, src, workers))


if __name__ == "__main__":
    sys.exit(main())
