"""Real-browser HLS playback: hls.js in headless chromium plays livesrv's HLS output (issue 5).

A real ffmpeg publishes H.264 baseline + AAC over RTMP; livesrv segments it (2 s fragments); hls.js plays the
playlist from a page on another origin, so the playlist and segments must carry CORS headers.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tests.browser.harness import WATCH, Harness, assert_clean, assert_watched, no_errors_logged, start_live

pytestmark = pytest.mark.e2e


async def wait_for_playlist(url: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as resp:
                body = await resp.text()
                if resp.status == 200 and "#EXTINF" in body:
                    return
            if loop.time() > deadline:
                raise AssertionError(f"no HLS playlist with a segment at {url} within {timeout}s: "
                                     f"{resp.status} {body[:500]}")
            await asyncio.sleep(0.1)


async def test_hls_js_plays_hls(make_server, procs, browser_sample, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv")
    hls_dir = tmp_path / "hls"
    app = await make_server(vhost=f"hls {{ enabled on; hls_fragment 2; hls_window 10; hls_path {hls_dir}; }}")
    await start_live(app, procs, browser_sample)
    url = f"http://127.0.0.1:{app.port('http')}/live/test.m3u8"
    # The playlist exists once the first fragment is cut (as in SRS); before that it is a 404, which hls.js
    # takes as fatal, so the page opens when the playlist is there, as a viewer's would after a refresh.
    await wait_for_playlist(url, 20)
    player = await Harness.start(procs, "hls", url)
    await player.event("playing", 40)
    res = await player.result(WATCH + 20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, "HLS playback")
    no_errors_logged(caplog)
