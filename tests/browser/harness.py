"""The Python side of the browser checks: the 640x360 sample, play.js as a subprocess, and what "plays" means."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from livesrv.app import App
from tests.helpers import FFMPEG, Procs, ffmpeg_publish_args, require_tool, wait_until

HERE = Path(__file__).resolve().parent
PLAY_JS = HERE / "play.js"
WATCH = 4.0  # seconds of playback watched per check
FPS = 25


def make_browser_sample(path: Path) -> Path:
    """8 s of 640x360 H.264 baseline (25 fps, 1 s GOP) + AAC-LC 44.1 kHz stereo in FLV: what chromium's MSE takes."""
    subprocess.run(
        [
            require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "8",
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
            "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-b:v", "600k",
            "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2", "-f", "flv", str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def harness_args() -> list[str]:
    """The node harness with its players installed; scripts/test installs them. Missing is a broken set-up."""
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/browser/node_modules is missing: run scripts/test, which runs npm ci there")
    return [require_tool("node"), str(PLAY_JS), "--chromium", require_tool("chromium")]


class Harness:
    """One play.js run: its JSON event lines on stdout, its stderr kept for failure messages."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self._stderr = asyncio.get_running_loop().create_task(proc.stderr.read())
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, procs: Procs, mode: str, url: str, *extra: str) -> Harness:
        proc = await procs.start(*harness_args(), "--mode", mode, "--url", url, "--watch", str(WATCH), *extra,
                                 stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next line whose event is ``name``; an earlier final result means the harness gave up."""
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise AssertionError(f"play.js: no {name!r} within {timeout}s; so far {self.seen}") from None
            if not line:
                raise AssertionError(f"play.js ended before {name!r}: {self.seen} stderr: {await self.stderr()}")
            ev = json.loads(line)
            self.seen.append(ev)
            if ev.get("event") == name:
                return ev
            if ev.get("event") == "result":
                raise AssertionError(f"play.js finished before {name!r}: {json.dumps(ev, indent=1)}")

    async def result(self, timeout: float) -> dict[str, Any]:
        res = await self.event("result", timeout)
        await asyncio.wait_for(self.proc.wait(), 15)  # the browser closes, the harness exits by itself
        return res

    async def stderr(self) -> str:
        try:
            return (await asyncio.wait_for(asyncio.shield(self._stderr), 5)).decode(errors="replace")[-3000:]
        except asyncio.TimeoutError:
            return "(stderr still open)"


def assert_watched(w: dict[str, Any], seconds: float, what: str, audio: bool = True) -> None:
    """A window of real playback: time and frames advanced at about the stream's rate, the picture moved."""
    assert w["advanced"] >= 0.6 * seconds, f"{what}: currentTime advanced only {w['advanced']:.2f}s: {w}"
    assert w["framesDecoded"] >= 0.5 * FPS * seconds, f"{what}: only {w['framesDecoded']} frames decoded: {w}"
    assert w["distinctPictures"] >= 3, f"{what}: the picture did not change: {w}"
    assert w["minLumaStd"] > 20, f"{what}: a blank or uniform picture: {w}"
    assert w["longestFreeze"] < 1.5, f"{what}: playback froze: {w}"
    assert (w["videoWidth"], w["videoHeight"]) == (640, 360), w
    assert w["readyState"] >= 3 and not w["paused"], w
    if audio:
        assert w["audioDecodedBytes"] > 0, f"{what}: no audio decoded: {w}"


def assert_heard(w: dict[str, Any], seconds: float, what: str) -> None:
    """A window of audio-only playback: time advanced, audio was decoded, no picture."""
    assert w["advanced"] >= 0.6 * seconds, f"{what}: currentTime advanced only {w['advanced']:.2f}s: {w}"
    assert w["audioDecodedBytes"] > 0, f"{what}: no audio decoded: {w}"
    assert w["longestFreeze"] < 1.5, f"{what}: playback froze: {w}"
    assert w["readyState"] >= 3 and not w["paused"], w
    assert w["framesDecoded"] == 0 and w["videoWidth"] == 0, f"{what}: a picture in an audio-only stream: {w}"


def assert_clean(res: dict[str, Any]) -> None:
    assert res["ok"], json.dumps(res, indent=1)
    assert res["fatalErrors"] == [] and res["mediaError"] is None, res
    assert res["pageErrors"] == [] and res["console"] == [], res


async def start_live(app: App, procs: Procs, sample: Path) -> tuple[asyncio.subprocess.Process, Any]:
    pub = await procs.start(*ffmpeg_publish_args(sample, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    return pub, next(iter(app.hub.streams.values()))


async def republish(app: App, procs: Procs, sample: Path, old: Any) -> asyncio.subprocess.Process:
    """A new ffmpeg publisher of the stream, once it is live in place of ``old`` (the publisher that vanished)."""
    pub = await procs.start(*ffmpeg_publish_args(sample, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.publisher not in (None, old) for s in app.hub.streams.values()), 20,
                     "the republish to go live")
    return pub


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
