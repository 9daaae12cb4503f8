"""Helpers shared by tests: real tools, processes killed at teardown, condition waits."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FFMPEG = "ffmpeg"


def require_tool(name: str) -> str:
    """Tests need the real clients; scripts/test installs them. Missing means a broken set-up: fail loudly."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/test, which installs the test tools")
    return path


class Procs:
    """Processes started by a test; all killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, *args: str, stdout: int | None = asyncio.subprocess.DEVNULL,
                    stderr: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        self.procs.append(proc)
        return proc

    async def run(self, *args: str, timeout: float = 60) -> tuple[int, bytes, bytes]:
        proc = await self.start(*args, stdout=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out, err

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                pass


async def wait_until(cond: Callable[[], object], timeout: float = 15, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def ffmpeg_publish_args(src: Path, url: str, loop: bool = True) -> list[str]:
    return [
        require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-re",
        *(["-stream_loop", "-1"] if loop else []),
        "-i", str(src), "-c", "copy", "-f", "flv", url,
    ]
