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


class FlvViewer:
    """An HTTP-FLV or WebSocket-FLV viewer that keeps every byte and parses the tags as they come."""

    def __init__(self, url: str, ws: bool = False) -> None:
        from livesrv.codec import flv

        self.url = url
        self.ws = ws
        self.raw = bytearray()
        self.decoder = flv.FLVDecoder()
        self.tags: list[flv.FLVTag] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> FlvViewer:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def _feed(self, data: bytes) -> None:
        from livesrv.codec import flv

        self.raw += data
        for ev in self.decoder.feed(data):
            if isinstance(ev, flv.FLVTag):
                self.tags.append(ev)

    async def _run(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as session:
                if self.ws:
                    async with session.ws_connect(self.url.replace("http://", "ws://")) as ws:
                        self.status = 101
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.BINARY:
                                self._feed(msg.data)
                            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                                break
                else:
                    async with session.get(self.url) as resp:
                        self.status = resp.status
                        self.headers = dict(resp.headers)
                        async for chunk in resp.content.iter_any():
                            self._feed(chunk)
        except Exception as exc:  # noqa: BLE001 - kept for the test to inspect
            self.error = exc
        finally:
            self.ended.set()

    def keyframes_after(self, n_tags: int) -> int:
        from livesrv.codec import flv

        return sum(1 for t in self.tags[n_tags:] if t.tag_type == flv.VIDEO and flv.is_keyframe(t.payload)
                   and not flv.is_sequence_header(t.payload))

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
