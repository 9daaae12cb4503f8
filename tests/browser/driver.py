"""The Python side of driver.js: a headless chromium page a test drives step by step (goto, eval, wait,
click, screenshot). One command at a time; every call has a deadline; the process is one of the test's
``procs`` and so killed at teardown whatever happens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import HERE
from tests.helpers import Procs, require_tool

DRIVER_JS = HERE / "driver.js"


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0
        self.stderr = b""  # its last 8 KiB, read all along (a full pipe would stop chromium)
        self._drain = asyncio.get_running_loop().create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            self.stderr = (self.stderr + chunk)[-8192:]

    @classmethod
    async def start(cls, procs: Procs, width: int = 1280, height: int = 800) -> Browser:
        if not (HERE / "node_modules" / "playwright-core").is_dir():
            pytest.fail("tests/browser/node_modules is missing: run scripts/test, which runs npm ci there")
        proc = await procs.start(require_tool("node"), str(DRIVER_JS), "--chromium", require_tool("chromium"),
                                 "--width", str(width), "--height", str(height), stdout=asyncio.subprocess.PIPE,
                                 stdin=asyncio.subprocess.PIPE)
        return cls(proc)

    async def call(self, op: str, deadline: float = 40, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._next += 1
        cmd = {"id": self._next, "op": op, **args}
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), deadline)
        except asyncio.TimeoutError:
            raise BrowserError(f"driver.js: no answer to {cmd} within {deadline}s") from None
        if not line:
            await asyncio.wait([self._drain], timeout=5)
            raise BrowserError(f"driver.js ended at {cmd}: {self.stderr.decode(errors='replace')[-2000:]}")
        out = json.loads(line)
        assert out["id"] == cmd["id"], (out, cmd)
        if not out["ok"]:
            raise BrowserError(f"{op} {args}: {out['error']}")
        return out["value"]

    async def goto(self, url: str) -> str:
        return str(await self.call("goto", url=url))

    async def eval(self, expr: str) -> Any:
        return await self.call("eval", expr=expr)

    async def wait(self, expr: str, timeout: float = 20, what: str = "") -> Any:
        """Poll ``expr`` in the page until it is truthy; its value. A timeout says what was awaited."""
        try:
            return await self.call("wait", deadline=timeout + 10, expr=expr, timeout=timeout)
        except BrowserError as exc:
            raise BrowserError(f"waiting for {what or expr}: {exc}") from None

    async def click(self, selector: str) -> None:
        await self.call("click", selector=selector)

    async def fill(self, selector: str, value: str) -> None:
        await self.call("fill", selector=selector, value=value)

    async def add_script(self, path: Path) -> None:
        await self.call("addScript", path=str(path))

    async def screenshot(self, path: Path, full_page: bool = False) -> Path:
        await self.call("screenshot", path=str(path), fullPage=full_page)
        return path

    async def log(self) -> dict[str, list[str]]:
        return dict(await self.call("log"))

    async def close(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.write(b'{"op": "close"}\n')
            try:
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 15)
            except (asyncio.TimeoutError, ConnectionError):
                self.proc.kill()
        await asyncio.wait([self._drain], timeout=5)
