"""Quitting with SRS's signals, on a real server process: SIGQUIT is graceful (listeners close after
``grace_start_wait``, the publisher finishes, the process exits after it), SIGTERM is fast (unless
``force_grace_quit``); both leave finished DVR files."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.test_dvr import plays
from tests.helpers import Procs, can_connect, ffmpeg_publish_args, require_tool, wait_until
from tests.hooks.hook_server import unused_port

pytestmark = pytest.mark.e2e

CONF = """
listen 127.0.0.1:{port};
srs_log_tank console;
grace_start_wait 500;
grace_final_wait 200;
force_grace_quit {force};
vhost __defaultVhost__ {{ dvr {{ enabled on; dvr_path ./rec/[stream].flv; }} }}
"""



async def start_server(procs: Procs, tmp_path: Path, force: str = "off") -> tuple[asyncio.subprocess.Process, int]:
    port = unused_port()
    conf = tmp_path / "srv.conf"
    conf.write_text(CONF.format(port=port, force=force))
    server = await procs.start(sys.executable, "-m", "livesrv", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await can_connect(port):
        assert loop.time() < deadline and server.returncode is None, "the server did not start"
        await asyncio.sleep(0.05)
    return server, port


async def test_sigquit_waits_for_the_publisher(procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server, port = await start_server(procs, tmp_path)
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/q", loop=False))
    await wait_until(lambda: Path("rec/q.flv.tmp").exists(), 20, "the recording to start")
    server.send_signal(signal.SIGQUIT)
    await asyncio.sleep(0.2)
    assert await can_connect(port)  # grace_start_wait: still accepting
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await can_connect(port):
        assert loop.time() < deadline, "the listener did not close"
        await asyncio.sleep(0.05)
    assert server.returncode is None and pub.returncode is None  # the publisher goes on
    assert await asyncio.wait_for(pub.wait(), 30) == 0  # to its end
    assert await asyncio.wait_for(server.wait(), 10) == 0  # then the server quits
    code, out, _ = await procs.run(require_tool("ffprobe"), "-v", "error", "-show_entries", "format=duration",
                                   "-of", "csv=p=0", "rec/q.flv")
    assert abs(float(out) - 6.0) <= 0.5  # the whole publish was recorded
    await plays(procs, Path("rec/q.flv"))


@pytest.mark.parametrize("force", ["off", "on"])
async def test_sigterm_quits_at_once_and_finishes_files(procs, sample_flv, tmp_path, force: str) -> None:  # type: ignore[no-untyped-def]
    server, port = await start_server(procs, tmp_path, force)
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/t"))
    await wait_until(lambda: Path("rec/t.flv.tmp").exists() and Path("rec/t.flv.tmp").stat().st_size > 30_000, 20,
                     "the recording to run")
    server.send_signal(signal.SIGTERM)
    if force == "on":  # graceful: the looping publisher would keep it for ever; a second signal cuts it short
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await can_connect(port):
            assert loop.time() < deadline, "the listener did not close"
            await asyncio.sleep(0.05)
        assert server.returncode is None
        server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), 10) == 0
    assert Path("rec/t.flv").is_file() and not Path("rec/t.flv.tmp").exists()
    await plays(procs, Path("rec/t.flv"))
    await asyncio.wait_for(pub.wait(), 10)  # its connection was closed
