"""Quitting with SRS's signals, on a real server process: SIGQUIT is graceful (listeners close after
``grace_start_wait``, the publisher finishes, the process exits after it), SIGTERM is fast (unless
``force_grace_quit``); both leave finished DVR files, and the hooks of everything that ends (on_unpublish,
on_stop, on_dvr per file) reach a real hook server before the process exits."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.test_dvr import plays
from tests.helpers import FlvViewer, Procs, can_connect, ffmpeg_publish_args, require_tool, wait_until
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


HOOKS_CONF = """
listen 127.0.0.1:{port};
srs_log_tank console;
grace_start_wait 500;
grace_final_wait 200;
http_server {{ enabled on; listen 127.0.0.1:{http}; }}
vhost __defaultVhost__ {{
    dvr {{ enabled on; dvr_plan segment; dvr_duration 2; dvr_path ./rec/[stream].[timestamp].flv; }}
    http_remux {{ enabled on; }}
    http_hooks {{
        enabled on;
        on_publish {hooks}/on_publish; on_unpublish {hooks}/on_unpublish;
        on_play {hooks}/on_play; on_stop {hooks}/on_stop; on_dvr {hooks}/on_dvr;
    }}
}}
"""


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGTERM], ids=["SIGQUIT", "SIGTERM"])
async def test_quit_mid_recording_sends_every_hook_to_a_real_hook_server(  # type: ignore[no-untyped-def]
    procs, sample_flv, tmp_path, hook_server, sig: signal.Signals
) -> None:
    """A real livesrv process records (segment plan) a publisher with an HTTP-FLV viewer and gets the signal in
    the middle: on_unpublish (the publisher), on_stop (the viewer) and on_dvr once per file, naming the file
    finished on disk, all reach the hook server before the process exits."""
    port, http = unused_port(), unused_port()
    conf = tmp_path / "hooks.conf"
    conf.write_text(HOOKS_CONF.format(port=port, http=http, hooks=f"http://127.0.0.1:{hook_server.port}"))
    with open(tmp_path / "server.log", "wb") as log:
        server = await procs.start(sys.executable, "-m", "livesrv", "-c", str(conf), stderr=log.fileno())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (await can_connect(port) and await can_connect(http)):
        assert loop.time() < deadline and server.returncode is None, "the server did not start"
        await asyncio.sleep(0.05)
    # SIGQUIT: the publisher goes to its end (6 s), the server waits for it; SIGTERM: the server closes it.
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/g",
                                                 loop=sig == signal.SIGTERM))
    viewer = FlvViewer(f"http://127.0.0.1:{http}/live/g.flv").start()
    try:
        await wait_until(lambda: viewer.keyframes_after(0) >= 1, 20, "the viewer to play")
        await wait_until(lambda: any(p.suffix == ".flv" for p in Path("rec").glob("*"))
                         and any(p.stat().st_size > 20_000 for p in Path("rec").glob("*.tmp")), 20,
                         "a finished file and the next one half written")
        server.send_signal(sig)
        if sig == signal.SIGQUIT:
            assert await asyncio.wait_for(pub.wait(), 30) == 0  # published to its end
            await hook_server.wait_call("on_unpublish", timeout=10)
            assert server.returncode is None  # still waiting for the viewer
            await viewer.close()  # the last connection leaves: the server quits
        assert await asyncio.wait_for(server.wait(), 15) == 0, (tmp_path / "server.log").read_text()[-3000:]
        await asyncio.wait_for(viewer.ended.wait(), 10)
    finally:
        await viewer.close()

    (publish,) = hook_server.calls_for("on_publish")
    (unpublish,) = hook_server.calls_for("on_unpublish")
    assert unpublish.payload["client_id"] == publish.payload["client_id"]
    assert unpublish.payload["stream"] == "g" and unpublish.payload["app"] == "live"
    (play,) = hook_server.calls_for("on_play")
    (stop,) = hook_server.calls_for("on_stop")
    assert stop.payload["client_id"] == play.payload["client_id"] != publish.payload["client_id"]
    files = sorted(p for p in Path("rec").iterdir())
    assert files and all(p.suffix == ".flv" for p in files), files  # nothing left half written
    dvrs = hook_server.calls_for("on_dvr")
    named = [c.payload["file"] for c in dvrs]
    assert sorted(named) == [f"./rec/{p.name}" for p in files]  # once per file, each with its own name
    for c in dvrs:
        assert c.payload["action"] == "on_dvr" and c.payload["cwd"] == str(tmp_path)
        assert c.payload["client_id"] == publish.payload["client_id"] and c.payload["stream"] == "g"
    for path in files:
        await plays(procs, path)
