"""Real-browser playback: headless Debian chromium plays livesrv's live output as a web page would.

mpegts.js plays HTTP-FLV and WebSocket-FLV from a page on another origin (so CORS is exercised too). A real
ffmpeg publishes H.264 baseline + AAC over RTMP. The node harness (play.js) reports whether the picture
really plays: currentTime advancing, frames decoded, the picture changing, no player error. Byte-level checks
elsewhere cannot see what only a browser's demuxer and MSE reject.
"""

from __future__ import annotations

import logging
import signal

import pytest

from tests.browser.harness import (WATCH, Harness, assert_clean, assert_heard, assert_watched, no_errors_logged,
                                   republish, start_live)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("scheme,protocol", [("http", "flv"), ("ws", "ws-flv")])
async def test_mpegts_js_plays_flv(make_server, procs, browser_sample, caplog,  # type: ignore[no-untyped-def]
                                   scheme: str, protocol: str) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server()
    _, stream = await start_live(app, procs, browser_sample)
    player = await Harness.start(procs, "flv", f"{scheme}://127.0.0.1:{app.port('http')}/live/test.flv")
    await player.event("playing", 40)
    assert [v.protocol for v in stream.viewers.values()] == [protocol]
    res = await player.result(WATCH + 20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, f"{protocol} playback")
    no_errors_logged(caplog)


async def test_http_flv_playback_resumes_after_republish(make_server, procs, browser_sample,  # type: ignore[no-untyped-def]
                                                         caplog) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server()
    pub, stream = await start_live(app, procs, browser_sample)
    player = await Harness.start(procs, "flv", f"http://127.0.0.1:{app.port('http')}/live/test.flv", "--republish",
                                 "--after", "2")
    await player.event("watched", WATCH + 40)
    (viewer,) = stream.viewers.values()
    old = stream.publisher
    pub.kill()  # SIGKILL: the publisher vanishes without unpublishing
    await republish(app, procs, browser_sample, old)
    player.proc.send_signal(signal.SIGUSR2)  # tells the harness: media from now on is the new publisher's
    await player.event("resumed", 40)
    assert list(stream.viewers.values()) == [viewer], "the browser's connection did not survive the republish"
    res = await player.result(20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, "before the republish")
    rep = res["republish"]
    assert rep["resumed"], f"playback did not pass what was buffered before the republish: {rep}"
    assert_watched(rep["after"], 2, "after the republish")
    no_errors_logged(caplog)


@pytest.mark.parametrize("before", [False, True], ids=["after-publisher", "before-publisher"])
async def test_mpegts_js_plays_a_video_only_stream(make_server, procs, browser_video_only, caplog,  # type: ignore[no-untyped-def]
                                                   before: bool) -> None:
    """An IP camera without audio: the FLV header says video only, so mpegts.js does not wait for audio."""
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server()
    url = f"http://127.0.0.1:{app.port('http')}/live/test.flv"
    if before:  # the page is open before the camera connects: the header goes out with the first media
        player = await Harness.start(procs, "flv", url, "--first-frame-timeout", "40")
        await wait_until(lambda: any(s.viewers for s in app.hub.streams.values()), 30, "the page's viewer")
        await start_live(app, procs, browser_video_only)
    else:
        await start_live(app, procs, browser_video_only)
        player = await Harness.start(procs, "flv", url)
    await player.event("playing", 60)
    res = await player.result(WATCH + 20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, "video-only playback", audio=False)
    no_errors_logged(caplog)


async def test_mpegts_js_plays_an_audio_only_stream(make_server, procs, browser_audio_only, caplog) -> None:  # type: ignore[no-untyped-def]
    """A radio stream without video: the FLV header says audio only; the browser decodes audio, time advances."""
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server()
    await start_live(app, procs, browser_audio_only)
    player = await Harness.start(procs, "flv", f"http://127.0.0.1:{app.port('http')}/live/test.flv", "--audio-only")
    await player.event("playing", 40)
    res = await player.result(WATCH + 20)
    assert_clean(res)
    assert_heard(res["watch"], WATCH, "audio-only playback")
    no_errors_logged(caplog)
