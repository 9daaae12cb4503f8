"""Shared fixtures: an in-process livesrv on OS-chosen ports, real client tools, a sample FLV file.

Every process a test starts is killed in teardown; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from livesrv.app import App
from livesrv.config import parse_text
from tests.helpers import FFMPEG, LogLines, Procs, require_tool

#: The recording hook server fixture (``hook_server``) for every test module.
pytest_plugins = ["tests.hooks.hook_server"]

def server_config(extra: str = "", vhost: str = "", max_connections: int = 100):  # -> Config
    text = f"""
    listen 127.0.0.1:0;
    max_connections {max_connections};
    srs_log_level trace;
    http_server {{ enabled on; listen 127.0.0.1:0; dir ./objs/nginx/html; }}
    http_api {{ enabled on; listen 127.0.0.1:0; }}
    {extra}
    vhost __defaultVhost__ {{
        {vhost}
        {"" if "http_remux" in vhost else "http_remux { enabled on; }"}
    }}
    """
    result = parse_text(text, "<test>")
    assert not result.warnings, result.warnings
    return result.config


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, as the server does in production."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., object]]:
    apps: list[App] = []

    async def start(extra: str = "", vhost: str = "", max_connections: int = 100) -> App:
        app = App(server_config(extra, vhost, max_connections))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def server(make_server) -> App:  # type: ignore[no-untyped-def]
    return await make_server()


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Everything livesrv logs during the test, at every level, through ``livesrv.log``'s own formatter."""
    from livesrv.log import FORMAT, LineFormatter

    lines = LogLines()
    handler = logging.StreamHandler(lines.buffer)
    handler.setFormatter(LineFormatter(FORMAT))
    root = logging.getLogger("livesrv")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    p = Procs()
    yield p
    await p.close()


def _make_sample(path: Path, vcodec: list[str], seconds: int = 6) -> None:
    subprocess.run(
        [
            require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds), *vcodec,
            "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "flv", str(path),
        ],
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def sample_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of H.264 (320x240, 25 fps, 1 s GOP) + AAC 44.1 kHz stereo in FLV, made once per test session."""
    path = tmp_path_factory.mktemp("media") / "sample.flv"
    _make_sample(path, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-b:v", "300k"])
    return path


@pytest.fixture(autouse=True)
def _objs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test in its own directory so relative paths (./objs/...) never touch the repo."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def restore_livesrv_logging() -> Iterator[None]:
    """log.setup() reconfigures the "livesrv" logger for the whole process: put it back afterwards."""
    import logging

    root = logging.getLogger("livesrv")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handlers, level, propagate = saved
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    root.propagate = propagate


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size)`` mounts a tmpfs of ``size`` bytes (a small disk to fill) and returns its directory; each
    one is unmounted at teardown, whatever the test did. Needs root, as the test machines and CI run."""
    mounts: list[Path] = []

    def mount(size: int) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        done = subprocess.run([require_tool("mount"), "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                               str(path)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs on {path} (root is needed): {done.stderr.strip()}")
        mounts.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounts):
            if subprocess.run([require_tool("umount"), str(path)], capture_output=True, timeout=30).returncode:
                subprocess.run([require_tool("umount"), "-l", str(path)], capture_output=True, timeout=30)  # (busy)
            os.rmdir(path)
