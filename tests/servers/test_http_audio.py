"""Audio-only HTTP streams (``.mp3``, ``.aac``) from a real ffmpeg publisher, read and decoded by ffprobe/ffmpeg."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from livesrv.codec.aac import parse_adts_header
from tests.helpers import FFMPEG, Procs, require_tool, wait_until

pytestmark = pytest.mark.e2e


async def read_body(port: int, path: str, size: int, timeout: float = 20) -> tuple[bytes, bytes]:
    """GET ``path`` and read its head and up to ``size`` bytes of its body (less if the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(body) < size and loop.time() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - loop.time()))
            if not chunk:
                break
            body += chunk
        return head, bytes(body)
    finally:
        writer.close()


def unchunk(body: bytes) -> bytes:
    """The payload of a chunked body (possibly cut in the middle of a chunk)."""
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        n = int(body[pos:end].split(b";")[0], 16)
        if n == 0:
            break
        out += body[end + 2:end + 2 + n]
        pos = end + 2 + n + 2
        if pos > len(body):
            break
    return bytes(out)


async def publish(procs: Procs, src: Path, url: str, audio: list[str]) -> None:
    await procs.start(require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                      "-i", str(src), "-c:v", "copy", *audio, "-f", "flv", url)


async def probe(procs: Procs, path: Path, fmt: str) -> dict[str, object]:
    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-f", fmt, "-show_entries",
                                     "stream=codec_name,sample_rate,channels", "-of", "json", str(path))
    assert code == 0, err.decode()
    (stream,) = json.loads(out)["streams"]
    return stream  # type: ignore[no-any-return]


async def decodes(procs: Procs, path: Path, fmt: str) -> None:
    code, _, err = await procs.run(require_tool(FFMPEG), "-hide_banner", "-v", "error", "-f", fmt, "-i", str(path),
                                   "-f", "null", "-")
    assert code == 0 and not err.strip(), err.decode()[-2000:]


async def test_aac_stream_is_adts(server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await publish(procs, sample_flv, f"rtmp://127.0.0.1:{server.port('rtmp')}/live/radio", ["-c:a", "copy"])
    await wait_until(lambda: any(s.live and s.gop.gop for s in server.hub.streams.values()), 20, "live")
    head, body = await read_body(server.port("http"), "/live/radio.aac", 30_000)
    assert b" 200 " in head.split(b"\r\n")[0] and b"audio/aac" in head.lower()
    data = unchunk(body) if b"chunked" in head.lower() else body
    pos = 0
    frames = 0
    while pos + 7 <= len(data):  # ADTS frames back to back from the first byte
        h = parse_adts_header(data[pos:])
        pos += h.frame_length
        frames += 1
    assert frames > 20
    path = tmp_path / "radio.aac"
    path.write_bytes(data[:pos])
    info = await probe(procs, path, "aac")
    assert (info["codec_name"], info["sample_rate"], info["channels"]) == ("aac", "44100", 2)
    await decodes(procs, path, "aac")


async def test_mp3_stream(server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await publish(procs, sample_flv, f"rtmp://127.0.0.1:{server.port('rtmp')}/live/mp3",
                  ["-c:a", "libmp3lame", "-ar", "44100", "-b:a", "64k"])
    await wait_until(lambda: any(s.live and s.gop.gop for s in server.hub.streams.values()), 20, "live")
    head, body = await read_body(server.port("http"), "/live/mp3.mp3", 20_000)
    assert b"audio/mpeg" in head.lower()
    data = unchunk(body) if b"chunked" in head.lower() else body
    assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # starts on an MP3 frame
    path = tmp_path / "radio.mp3"
    path.write_bytes(data)
    info = await probe(procs, path, "mp3")
    assert (info["codec_name"], info["sample_rate"]) == ("mp3", "44100")


async def test_mp3_of_an_aac_stream_is_refused_with_the_reason(server, procs, sample_flv, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv")
    await publish(procs, sample_flv, f"rtmp://127.0.0.1:{server.port('rtmp')}/live/a", ["-c:a", "copy"])
    await wait_until(lambda: any(s.live and s.gop.gop for s in server.hub.streams.values()), 20, "live")
    head, body = await read_body(server.port("http"), "/live/a.mp3", 10_000, timeout=10)
    assert unchunk(body) == b""
    await wait_until(lambda: "not mp3" in caplog.text, 10, "the reason logged")


async def test_a_music_file_is_still_served(server) -> None:  # type: ignore[no-untyped-def]
    root = Path(server.config.http_server.dir)
    (root / "music").mkdir(parents=True)
    (root / "music" / "song.mp3").write_bytes(b"\xff\xfbfile")
    head, body = await read_body(server.port("http"), "/music/song.mp3", 6, timeout=5)
    assert b" 200 " in head and body == b"\xff\xfbfile"
