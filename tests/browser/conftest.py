"""Fixtures of the browser checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.browser.harness")  # its asserts explain themselves in failures too

from tests.browser.harness import make_browser_sample  # noqa: E402
from tests.helpers import FFMPEG, require_tool  # noqa: E402


@pytest.fixture(scope="session")
def browser_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 640x360 H.264 baseline (25 fps, 1 s GOP) + AAC-LC 44.1 kHz stereo in FLV, made once per session."""
    return make_browser_sample(tmp_path_factory.mktemp("browser-media") / "sample640.flv")


def _strip(src: Path, drop: str) -> Path:
    dst = src.with_name(f"{src.stem}{drop}.flv")
    subprocess.run([require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy",
                    drop, "-f", "flv", str(dst)], check=True, timeout=60)
    return dst


@pytest.fixture(scope="session")
def browser_video_only(browser_sample: Path) -> Path:
    """The browser sample without its audio (an IP camera)."""
    return _strip(browser_sample, "-an")


@pytest.fixture(scope="session")
def browser_audio_only(browser_sample: Path) -> Path:
    """The browser sample without its video (a radio stream)."""
    return _strip(browser_sample, "-vn")
