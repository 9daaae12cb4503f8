"""bench/mux.py in its shortest mode: it runs, the old and new muxers agree, and PyAV's output is comparable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import mux
from tests.helpers import require_tool


def test_mux_bench_small_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("ffmpeg")
    args = ["--source", "small", "--reps", "1", "--warmup", "1", "--cache-dir", str(tmp_path), "--json"]
    assert mux.main(args) == 0  # (it returns 1 if old and new gave different bytes)
    report = json.loads(capsys.readouterr().out)
    rows = {r["impl"]: r for r in report["rows"]}
    assert list(rows) == ["old", "new", "pyav", "pyav-live"]
    assert 5.5 < report["media_s"] < 6.5
    assert rows["old"]["out_bytes"] == rows["new"]["out_bytes"]
    assert rows["old"]["speedup"] == 1.0
    for r in rows.values():
        assert r["us_per_media_s"] > 0 and r["out_mb_per_s"] > 0
        assert 0.8 < r["out_bytes"] / rows["new"]["out_bytes"] < 1.25  # same order of output size
