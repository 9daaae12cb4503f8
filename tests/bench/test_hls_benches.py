"""bench/hlsmux.py and bench/hlswrite.py in their shortest modes: they run and report sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import hlsmux, hlswrite
from tests.helpers import require_tool


def test_hlsmux_small_source(bench_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("ffmpeg")
    args = ["--source", "small", "--streams", "2", "--seconds", "3", "--reps", "1", "--cache-dir", str(bench_cache),
            "--json"]
    assert hlsmux.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    median = report["median"]
    assert median["us_per_video_frame"] > 0 and median["us_per_audio_frame"] > 0 and median["us_per_media_s"] > 0


def test_hlswrite_short_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert hlswrite.main(["--streams", "3", "--seconds", "0.5", "--fragment", "0.2", "--append-kib", "16",
                          "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["errors"] == 0 and row["streams"] == 3 and row["cpu_percent"] >= 0
