"""The ingest scenario end to end, in a short mode: real livesrv writing HLS, three publishers, ffprobe checks."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import Procs, require_tool

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


async def test_ingest_short_mode_every_publisher_accepted_every_segment_right(procs: Procs, bench_cache: Path) -> None:
    require_tool("ffmpeg")
    require_tool("ffprobe")
    runner = await procs.start(
        sys.executable, str(REPO / "bench" / "run.py"), "--scenario", "ingest", "--server", "livesrv",
        "--hls", "on", "--publishers", "3", "--hls-fragment", "1", "--duration", "2.5", "--settle", "0.5",
        "--source", "small", "--cache-dir", str(bench_cache), "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(runner.communicate(), 60)
    finally:
        if runner.returncode is None:  # SIGTERM lets the runner stop the server and the publishers it started
            runner.terminate()
            await asyncio.wait_for(runner.wait(), 15)
    assert runner.returncode == 0, err.decode()[-3000:]
    (row,) = json.loads(out)["rows"]
    assert "error" not in row, row["error"]
    assert (row["server"], row["hls"], row["publishers"], row["ok"]) == ("livesrv", "on", 3, True)
    pub = row["pub"]
    assert (pub["accepted"], pub["refused"], pub["disconnected"], pub["behind"]) == (3, 0, 0, 0), pub
    # The small source is ~370 kbit/s: three publishers send about 1.1 Mbit/s between them.
    assert 0.7 < pub["sent_mbps"] < 1.6, pub
    assert 0 < row["cpu_percent"] < 100 and 10 < row["rss_mib"] < 1000, row
    assert 0 < row["pubgen_cpu_percent"] < 100, row
    seg = row["segments"]
    # 1 s fragments (1 s GOP), 3 streams, 2.5 s: about 7 segments finished in the window, all checked.
    assert seg["playlists"] == 3 and seg["streams_with_segments"] == 3, seg
    assert 4 <= seg["segments_in_window"] <= 10 and seg["segments_checked"] == seg["segments_in_window"], seg
    assert seg["segments_bad"] == 0, seg["bad_samples"]
    assert 0.9 <= seg["extinf_min"] <= seg["extinf_max"] <= 1.1, seg
    assert seg["video_frames_checked"] >= 25 * seg["segments_checked"] - 3, seg
    # the finished segments are at most a fragment (the open one) behind each publisher
    assert seg["streams_hls_behind"] == 0 and 0 <= seg["hls_lag_max_s"] < 1.5, seg
