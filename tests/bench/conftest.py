"""Fixtures of the bench's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small source is made once for the session, never in the repository's own cache."""
    return tmp_path_factory.mktemp("bench-cache")
