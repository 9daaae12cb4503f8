"""The bench runner end to end, in a short mode: real livesrv, real ffmpeg publisher, RTMP and HTTP-FLV viewers."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import Procs, require_tool

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("proto,workers", [("rtmp", 1), ("flv", 1), ("rtmps", 1), ("https-flv", 1), ("flv", 2)])
async def test_runner_short_mode_all_viewers_keep_up(proto: str, workers: int, procs: Procs, bench_cache: Path) -> None:
    require_tool("ffmpeg")
    runner = await procs.start(
        sys.executable, str(REPO / "bench" / "run.py"), "--server", "livesrv", "--proto", proto,
        "--viewers", "5", "--duration", "3" if workers == 1 else "6", "--settle", "1", "--source", "small",
        "--cache-dir", str(bench_cache), "--json", "--livesrv-workers", str(workers),
        # (workers 2: a viewer of the worker that pulls gets the owner's batches batched again, up to two
        # batches late at times: a longer window with shorter batches, so that keeping up means the same)
        *(["--vhost-extra", "play { mw_latency 100; }"] if workers > 1 else []),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(runner.communicate(), 60)
    finally:
        if runner.returncode is None:  # SIGTERM lets the runner stop the server and publisher it started
            runner.terminate()
            await asyncio.wait_for(runner.wait(), 15)
    assert runner.returncode == 0, err.decode()[-3000:]
    (row,) = json.loads(out)["rows"]
    assert "error" not in row, row["error"]
    load = row["load"]
    assert (row["server"], row["proto"], load["viewers"]) == ("livesrv", proto, 5)
    assert load["errors"] == 0, load["error_samples"]
    assert load["keeping_up"] == 5 and load["malformed"] == 0, load
    assert load["no_first_frame"] == 0 and load["first_frame_p90_s"] < 1.0, load
    # The small source is ~370 kbit/s: five viewers get about 1.8 Mbit/s between them.
    assert 1.0 < load["delivered_mbps"] < 3.0, load
    assert 0 <= row["cpu_percent"] < 100 and 10 < row["rss_mib"] < 1000, row
    assert row.get("workers", 1) == workers  # (workers 2: the master's and both workers' figures, summed)
