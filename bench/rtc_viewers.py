"""What WebRTC viewers cost the server: N WHEP viewers of one stream, livesrv's CPU and memory.

    .venv/bin/python bench/rtc_viewers.py [--viewers 1,10,25] [--duration 20]

A real ffmpeg publishes 640x360 25 fps H.264 baseline (2 s GOP, 800 kbit/s) + AAC 64 kbit/s over RTMP. One
load process opens N WHEP sessions with aiortc on loopback (the server offers 127.0.0.1 only) and takes the
encoded frames from each receiver without decoding them (what a player's network stack does; decoding is the
player's cost, not the server's). Over ``--duration`` seconds the server's CPU (user+system, % of one core)
and RSS are read from /proc, with the frames each viewer got. One row per viewer count, each on a fresh server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import popen, proc_sample, spawn, stop_group  # noqa: E402
from bench.servers import start_livesrv  # noqa: E402


def publisher(url: str) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin",
            "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
            "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
            "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k",
            "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2", "-f", "flv", url]


# ------------------------------------------------------------------------------------------- load process


class _Count(queue.Queue):  # type: ignore[type-arg]
    """Stands in for an aiortc receiver's decoder queue: counts encoded frames, decodes nothing."""

    def __init__(self, counts: dict[str, int], kind: str) -> None:
        super().__init__()
        self.counts, self.kind = counts, kind

    def put(self, item, block=True, timeout=None):  # type: ignore[no-untyped-def]
        if item is None:
            super().put(None)
        else:
            self.counts[self.kind] += 1


async def load(api: int, n: int, ready_s: float, duration: float) -> dict:  # type: ignore[type-arg]
    import aiohttp
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only
    peers, counts = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            c = {"video": 0, "audio": 0}
            for kind in ("video", "audio"):
                pc.addTransceiver(kind, direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"http://127.0.0.1:{api}/rtc/v1/whep/?app=live&stream=bench",
                                 data=pc.localDescription.sdp) as resp:
                if resp.status != 201:
                    raise SystemExit(f"WHEP answered {resp.status}: {await resp.text()}")
                answer = await resp.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            for t in pc.getTransceivers():
                setattr(t.receiver, "_RTCRtpReceiver__decoder_queue", _Count(c, t.kind))
            peers.append(pc)
            counts.append(c)
        deadline = time.monotonic() + 30
        while not all(c["video"] for c in counts):
            if time.monotonic() > deadline:
                raise SystemExit("not every viewer got video within 30 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(ready_s)  # (settle: every sender is in step)
        start = [dict(c) for c in counts]
        print(json.dumps({"event": "measuring"}), flush=True)
        await asyncio.sleep(duration)
        got = [{k: c[k] - s[k] for k in c} for c, s in zip(counts, start)]
        for pc in peers:
            await pc.close()
    return {"video_frames": [g["video"] for g in got], "audio_frames": [g["audio"] for g in got]}


# ------------------------------------------------------------------------------------------- runner


def wait_live(api: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/streams", timeout=2) as resp:
                if any(s["publish"]["active"] and s["video"] for s in json.load(resp)["streams"]):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the stream did not go live")


def row(n: int, duration: float) -> dict:  # type: ignore[type-arg]
    workdir = Path(tempfile.mkdtemp(prefix="livesrv-rtc-viewers-"))
    rtc = "http_api { enabled on; listen 127.0.0.1:0; }\nrtc_server { enabled on; candidate 127.0.0.1; }"
    server = start_livesrv(workdir, vhost_extra="rtc { enabled on; rtmp_to_rtc on; }", global_extra=rtc)
    pub = gen = None
    try:
        api = server.api_port
        if api is None:
            raise SystemExit("no api port in livesrv's ready line")
        pub = spawn(publisher(server.publish_url("live", "bench")), workdir / "ffmpeg.log", workdir)
        wait_live(api)
        gen = popen([sys.executable, __file__, "--load", str(api), str(n), str(duration)], stdout=subprocess.PIPE)
        assert gen.stdout is not None
        line = gen.stdout.readline()
        if b"measuring" not in line:
            raise SystemExit(f"load process: {line!r}")
        cpu0, _ = proc_sample(server.pid)
        gcpu0, _ = proc_sample(gen.pid)
        t0 = time.monotonic()
        rss_max = 0
        while time.monotonic() - t0 < duration:
            time.sleep(0.5)
            rss_max = max(rss_max, proc_sample(server.pid)[1])
        cpu1, _ = proc_sample(server.pid)
        gcpu1, _ = proc_sample(gen.pid)
        elapsed = time.monotonic() - t0
        out, _ = gen.communicate(timeout=60)
        result = json.loads(out.decode().strip().splitlines()[-1])
        v = result["video_frames"] or [0]
        a = result["audio_frames"] or [0]
        return {"viewers": n, "server_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
                "server_rss_mib": round(rss_max / 2**20, 1), "load_cpu_pct": round(100 * (gcpu1 - gcpu0) / elapsed, 1),
                "video_fps_min": round(min(v) / duration, 1), "video_fps_max": round(max(v) / duration, 1),
                "audio_fps_min": round(min(a) / duration, 1)}
    finally:
        for p in (gen, pub):
            if p is not None:
                stop_group(p)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        api, n, duration = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(asyncio.run(load(api, n, 2.0, duration))), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="1,10,25", help="comma list of viewer counts, one row each")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [row(int(n), args.duration) for n in args.viewers.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'viewers':>7} {'server CPU %':>12} {'server RSS MiB':>14} {'load CPU %':>10} {'video fps':>11} {'audio fps':>9}")
    for r in rows:
        print(f"{r['viewers']:7d} {r['server_cpu_pct']:12.1f} {r['server_rss_mib']:14.1f} {r['load_cpu_pct']:10.1f} "
              f"{r['video_fps_min']:5.1f}-{r['video_fps_max']:<5.1f} {r['audio_fps_min']:9.1f}")


if __name__ == "__main__":
    main()
