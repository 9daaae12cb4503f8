"""Glass-to-glass latency of livesrv's player page (/player.html) in headless Chromium.

    .venv/bin/python bench/latency.py                       # HTTP-FLV, 3 runs of 30 s after 5 s of start-up
    .venv/bin/python bench/latency.py --mode ws --runs 1 --duration 60
    .venv/bin/python bench/latency.py -c conf/livesrv.conf  # another server config (default: none, the embedded defaults)
    .venv/bin/python bench/latency.py --env SRS_VHOST_PLAY_MW_LATENCY=100   # the defaults with one directive changed

livesrv runs as ``livesrv`` with its embedded defaults (or ``-c FILE``), on OS-chosen loopback ports (``SRS_*``
environment variables, which change nothing else) and with its HLS files in a temporary directory. ffmpeg
publishes a live 640x360 H.264 picture that carries the wall clock as a barcode (:mod:`bench.glass`); the
player page plays it in Chromium as a visitor's browser would, and the page reads the clock back from every
frame it presents. Each run is a fresh page: after ``--warmup`` seconds (the player catches up from the
cached GOP) the latency of every frame presented over ``--duration`` seconds is kept; p50, p90 and the
spread are reported per run and over all runs.

Needs the test tools (``scripts/test`` installs them): ffmpeg, chromium, and tests/browser's driver with its
npm packages; and the players in src/livesrv/web/vendor (``scripts/serve`` or ``scripts/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import glass
from bench.procs import spawn, stop_group
from bench.servers import livesrv_command

_READY = re.compile(r"event=ready (.*)")


def start_server(work: Path, conf: str | None, extra_env: dict[str, str] | None = None) -> tuple[Any, dict[str, int]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "SRS_LISTEN": "127.0.0.1:0",
           "SRS_HTTP_SERVER_LISTEN": "127.0.0.1:0", "SRS_HTTP_API_LISTEN": "127.0.0.1:0", **(extra_env or {})}
    log = work / "livesrv.log"
    proc = spawn([*livesrv_command(), *(["-c", conf] if conf else [])], log, work, env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = _READY.search(log.read_text(errors="replace"))
        if m:
            return proc, {k: int(v.split(",")[0].rsplit(":", 1)[1]) for k, v in (kv.split("=", 1) for kv in m.group(1).split())}
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_group(proc)
    raise SystemExit(f"livesrv did not start:\n{log.read_text(errors='replace')[-2000:]}")


async def one_run(ports: dict[str, int], mode: str, warmup: float, duration: float) -> dict[str, Any]:
    from tests.browser.driver import Browser
    from tests.helpers import Procs

    procs = Procs()
    try:
        browser = await Browser.start(procs)
        await browser.add_script(glass.JS)
        await browser.goto(f"http://127.0.0.1:{ports['http']}/player.html?app=live&stream=glass&mode={mode}")
        await browser.wait("window.livesrvPlayer && livesrvPlayer.state === 'playing'", 60, "the player to play")
        await browser.eval("glass.start(document.getElementById('video'))")
        await asyncio.sleep(warmup)
        since = await browser.eval("Date.now()")
        await asyncio.sleep(duration)
        samples = [s["latency"] for s in await browser.eval("glass.samples()") if s["at"] >= since]
        state = await browser.eval("({restarts: livesrvPlayer.restarts, errors: livesrvPlayer.errors, "
                                   "dropped: livesrvPlayer.video.getVideoPlaybackQuality().droppedVideoFrames, "
                                   "frames: livesrvPlayer.video.getVideoPlaybackQuality().totalVideoFrames})")
        await browser.close()
    finally:
        await procs.close()
    return {"samples": samples, **state}


def summary(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    q = statistics.quantiles(xs, n=10) if len(xs) > 1 else [xs[0]] * 9
    return {"n": len(xs), "p50_ms": statistics.median(xs), "p10_ms": q[0], "p90_ms": q[8], "min_ms": min(xs),
            "max_ms": max(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="flv", choices=["flv", "ws", "hls", "native"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("-c", "--conf", help="livesrv config file (default: the embedded defaults)")
    ap.add_argument("--env", action="append", default=[], metavar="SRS_X=V",
                    help="an SRS_* variable for the server (a directive over the defaults or the file)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is missing: scripts/test installs it")
    work = Path(tempfile.mkdtemp(prefix="livesrv-latency-"))
    server, ports = start_server(work, args.conf, dict(kv.split("=", 1) for kv in args.env))
    pub = None
    try:
        pub = spawn(glass.publisher_args(ffmpeg, f"rtmp://127.0.0.1:{ports['rtmp']}/live/glass", work),
                    work / "ffmpeg.log", work)
        time.sleep(2)
        runs = [asyncio.run(one_run(ports, args.mode, args.warmup, args.duration)) for _ in range(args.runs)]
    finally:
        if pub is not None:
            stop_group(pub)
        stop_group(server)
        shutil.rmtree(work, ignore_errors=True)
    every = [x for r in runs for x in r["samples"]]
    conf = " ".join([args.conf or "(embedded defaults)", *args.env])
    result = {"mode": args.mode, "conf": conf, "warmup_s": args.warmup,
              "duration_s": args.duration, "all": summary(every),
              "runs": [{**summary(r["samples"]), "restarts": r["restarts"], "dropped": r["dropped"],
                        "frames": r["frames"]} for r in runs]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for i, r in enumerate(result["runs"], 1):
            print(f"run {i}: p50 {r.get('p50_ms', 0):.0f} ms  p10 {r.get('p10_ms', 0):.0f}  p90 {r.get('p90_ms', 0):.0f}"
                  f"  (n={r['n']}, dropped {r['dropped']}/{r['frames']}, reconnects {r['restarts']})")
        a = result["all"]
        print(f"all:   p50 {a.get('p50_ms', 0):.0f} ms  p10 {a.get('p10_ms', 0):.0f}  p90 {a.get('p90_ms', 0):.0f}"
              f"  (n={a['n']}, {args.mode}, {result['conf']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
