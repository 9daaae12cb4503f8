"""Helpers shared by tests: real tools, processes killed at teardown, condition waits."""

from __future__ import annotations

import asyncio
import socket
import io
import re
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
                    stderr: int | None = asyncio.subprocess.PIPE,
                    stdin: int | None = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*args, stdin=stdin, stdout=stdout, stderr=stderr)
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


def free_port() -> int:
    """A loopback port the OS just gave out (bound, then closed): nothing listens there until someone does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def can_connect(port: int) -> bool:
    """Does a TCP connection to 127.0.0.1:``port`` open (is something listening)?"""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


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


# ------------------------------------------------------------------------------------------- log lines

#: One record as livesrv.log.FORMAT writes it.
LOG_LINE = re.compile(r"\[(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[(?P<level>[A-Z]+)\]"
                      r"\[(?P<logger>livesrv(?:\.\w+)*)\](?:\[(?P<process>master|w\d+)\])? (?P<message>.*)")
_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^ "=\\]*)'
#: ``event=x k=v k="v"``: bare values without separators, quoted ones with backslash escapes only.
EVENT = re.compile(rf"event=[a-z-]+(?: [A-Za-z_]\w*={_VALUE})*")
_FIELD = re.compile(rf"([A-Za-z_]\w*)=({_VALUE})")
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\\"nrt])")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _SIMPLE.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), text)


def parse_event(message: str) -> dict[str, str]:
    """The fields of an ``event=...`` message, values unquoted and unescaped; fails unless the message is
    exactly that grammar with each field once (a value that added a field or ended the line would not be)."""
    assert EVENT.fullmatch(message), f"not one well-formed event: {message!r}"
    fields: dict[str, str] = {}
    for m in _FIELD.finditer(message):
        name, value = m.group(1), m.group(2)
        assert name not in fields, f"field {name} twice in {message!r}"
        fields[name] = _unescape(value[1:-1]) if value.startswith('"') else value
    return fields


class LogLines:
    """What the server logs, formatted by livesrv.log's own formatter, as an operator's file would hold it."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def clear(self) -> None:
        self.buffer.seek(0)
        self.buffer.truncate()

    def lines(self) -> list[str]:
        """The lines, each checked to be one record: the log format's prefix, no other line break in it."""
        text = self.buffer.getvalue()
        assert not text or text.endswith("\n")
        out = text.split("\n")[:-1]
        for line in out:
            assert len(line.splitlines()) == 1, f"a line break inside a record: {line!r}"
            assert LOG_LINE.fullmatch(line), f"not a log record: {line!r}"
        return out

    def events(self, name: str | None = None) -> list[dict[str, str]]:
        """Every record parsed as an event (all must be), or those of event ``name``."""
        parsed = [parse_event(LOG_LINE.fullmatch(line)["message"]) for line in self.lines()]  # type: ignore[index]
        return [f for f in parsed if name is None or f["event"] == name]


# ------------------------------------------------------------------------------------------- raw HTTP


async def http_raw(port: int, target: str, method: str = "GET", headers: str = "",
                   timeout: float = 10) -> tuple[int, bytes]:
    """One request sent byte for byte (no client library re-encodes the target); status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)  # until the server closes: Connection: close
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


#: A script for PyAV's Python (its FFmpeg is >= 6.1): publishes ``argv[2]`` seconds of 320x240 25 fps HEVC
#: (1 s GOP) + AAC over Enhanced RTMP to the URL ``argv[1]``, as fast as it encodes.
HEVC_PUBLISHER = r"""
import sys, fractions, av
out = av.open(sys.argv[1], "w", format="flv")
v = out.add_stream("libx265", rate=25)
v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
v.options = {"x265-params": "keyint=25:min-keyint=25:log-level=error", "preset": "ultrafast"}
a = out.add_stream("aac", rate=44100)
a.layout = "stereo"
n = int(float(sys.argv[2]) * 25)
apts = 0
for i in range(n):
    frame = av.VideoFrame(320, 240, "yuv420p")
    for p in frame.planes:
        p.update(bytes([(i * 3) % 256]) * p.buffer_size)
    frame.pts = i
    frame.time_base = fractions.Fraction(1, 25)
    for pkt in v.encode(frame):
        out.mux(pkt)
    while apts < (i + 1) * 44100 // 25:
        af = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for p in af.planes:
            p.update(bytes(p.buffer_size))
        af.sample_rate = 44100
        af.pts = apts
        af.time_base = fractions.Fraction(1, 44100)
        apts += 1024
        for pkt in a.encode(af):
            out.mux(pkt)
for s in (v, a):
    for pkt in s.encode():
        out.mux(pkt)
out.close()
"""
