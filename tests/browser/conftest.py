"""Fixtures of the browser checks."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.browser.harness")  # its asserts explain themselves in failures too

from tests.browser.harness import make_browser_sample  # noqa: E402


@pytest.fixture(scope="session")
def browser_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 640x360 H.264 baseline (25 fps, 1 s GOP) + AAC-LC 44.1 kHz stereo in FLV, made once per session."""
    return make_browser_sample(tmp_path_factory.mktemp("browser-media") / "sample640.flv")
