"""Glass-to-glass latency over WebRTC (WHEP), with the browser harness's barcode method.

    .venv/bin/python bench/rtc_latency.py [--watch 30] [--warmup 5] [--proto whep,flv] [--json]

A real ffmpeg publishes 640x360 25 fps H.264 baseline (2 s GOP, ``-tune zerolatency``) + AAC over RTMP; each
picture carries its wall-clock time (10 ms units) as a 20-bit barcode in row 350, burned in as it is generated.
Headless Chromium plays the stream (WHEP: over WebRTC; flv: HTTP-FLV with mpegts.js, for comparison) and
every 500 ms reads the barcode of the frame on screen against the time that frame is displayed
(``requestVideoFrameCallback``'s ``expectedDisplayTime``): encoder, server, network, jitter buffer and decoder
are all in it, the display itself is not. Samples of the first ``--warmup`` seconds are left out; p50 and p90
of the rest are reported.

Everything runs in a private network namespace set up here (``lo`` and a veth pair with 10.250.0.1), as the
WebRTC browser tests do: Chromium never uses loopback for WebRTC, and the bench must not send to the machine's
own addresses. Needs root, ffmpeg, chromium, node and tests/browser/node_modules (``scripts/test`` installs them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import popen, spawn, stop_group  # noqa: E402
from bench.servers import start_livesrv  # noqa: E402
from tests.browser.netns import ADDRESS, enter_private_network  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PLAY_JS = REPO / "tests" / "browser" / "play.js"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def filter_script(workdir: Path) -> Path:
    """The harness's filter: pts := wall clock, a black strip with 20 white/black boxes (bit k of the time in
    10 ms units), a text clock, then back to a regular 25 fps timeline."""
    (workdir / "clock.txt").write_text("SRC %{pts:localtime:0:%H\\:%M\\:%S}.%{eif:mod(t*1000,1000):d:3}")
    parts = ["settb=AVTB", "setpts=RTCTIME", "drawbox=x=0:y=340:w=324:h=20:color=black:t=fill"]
    for k in range(20):
        parts.append(f"drawbox=x={2 + 16 * k}:y=342:w=16:h=16:color=white:t=fill:"
                     f"enable='eq(mod(floor(floor(t*100)/{2 ** k}),2),1)'")
    if FONT.exists():
        parts.append(f"drawtext=fontfile={FONT}:textfile={workdir / 'clock.txt'}:fontsize=36:fontcolor=white:"
                     "box=1:boxcolor=black@0.7:x=10:y=10")
    parts.append("setpts=N/(25*TB)")
    path = workdir / "vf.txt"
    path.write_text(",\n".join(parts))
    return path


def publisher(rtmp_url: str, workdir: Path) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin",
            "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-filter_script:v", str(filter_script(workdir)),
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
            "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
            "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k",
            "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2", "-f", "flv", rtmp_url]


def wait_live(api: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/streams", timeout=2) as resp:
                streams = json.load(resp)["streams"]
            if any(s["publish"]["active"] and s["video"] for s in streams):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the stream did not go live within {timeout:g}s")


def watch(proto: str, url: str, seconds: float, workdir: Path) -> dict:  # type: ignore[type-arg]
    mode = "whep" if proto.startswith("whep") else "flv"
    extra = ["--no-audio"] if proto == "whep-video" else []
    node = shutil.which("node") or "node"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    proc = popen([node, str(PLAY_JS), "--mode", mode, "--url", url, "--watch", str(seconds), "--barcode",
                  "--first-frame-timeout", "30", "--chromium", chromium, *extra],
                 stdout=subprocess.PIPE, stderr=open(workdir / f"play-{proto}.log", "wb"))
    try:
        out, _ = proc.communicate(timeout=seconds + 90)
    finally:
        stop_group(proc)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    result = next((x for x in lines if x.get("event") == "result"), None)
    if result is None or "latency" not in result:
        raise SystemExit(f"{proto}: the player reported no latency: {lines[-1:] or out[-2000:]}")
    return result


def summary(samples: list[int], warmup: float) -> dict[str, float]:
    kept = samples[int(warmup * 2):]  # one sample every 500 ms
    if not kept:
        raise SystemExit("no latency sample after the warm-up")
    q = statistics.quantiles(kept, n=10) if len(kept) > 1 else [kept[0]] * 9
    return {"samples": len(kept), "p50": statistics.median(kept), "p90": q[8], "min": min(kept), "max": max(kept)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watch", type=float, default=30, help="seconds of playback watched per protocol")
    ap.add_argument("--warmup", type=float, default=5, help="first seconds of samples left out")
    ap.add_argument("--proto", default="whep", help="comma list: whep, whep-video (a video-only offer), flv")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        enter_private_network()  # (this process stays in it: it is still single-threaded here)
    except OSError as exc:
        raise SystemExit(f"{exc}: run as root") from None
    workdir = Path(tempfile.mkdtemp(prefix="livesrv-rtc-bench-"))
    rtc = f"http_api {{ enabled on; listen 127.0.0.1:0; }}\nrtc_server {{ enabled on; candidate {ADDRESS}; }}"
    server = start_livesrv(workdir, vhost_extra="rtc { enabled on; rtmp_to_rtc on; }", global_extra=rtc)
    pub = None
    results: dict[str, dict] = {}  # type: ignore[type-arg]
    try:
        api = server.api_port
        if api is None:
            raise SystemExit("no api port in livesrv's ready line")
        pub = spawn(publisher(server.publish_url("live", "bench"), workdir), workdir / "ffmpeg.log", workdir)
        wait_live(api)
        for proto in [p.strip() for p in args.proto.split(",") if p.strip()]:
            url = (f"http://127.0.0.1:{api}/rtc/v1/whep/?app=live&stream=bench" if proto.startswith("whep")
                   else server.play_url("flv", "live", "bench"))
            res = watch(proto, url, args.watch, workdir)
            results[proto] = summary(res["latency"], args.warmup) | {"ok": res["ok"]}
    finally:
        if pub is not None:
            stop_group(pub)
        server.stop()
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"{'proto':10} {'samples':>7} {'p50 ms':>7} {'p90 ms':>7} {'min':>5} {'max':>5}  playback ok")
        for proto, r in results.items():
            print(f"{proto:10} {r['samples']:7d} {r['p50']:7.0f} {r['p90']:7.0f} {r['min']:5.0f} {r['max']:5.0f}  {r['ok']}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
