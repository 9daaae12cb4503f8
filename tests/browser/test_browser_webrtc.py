"""WebRTC in a real browser: headless Chromium plays over WHEP what ffmpeg publishes over RTMP, and publishes
its fake camera over WHIP for ffprobe to read over HTTP-FLV and RTMP; the player page (/player.html) plays over
its WebRTC choice and goes on when the publisher is killed and comes back.

These run in a private network namespace (see ``tests/browser/netns.py``): Chromium never uses loopback for
WebRTC, and no test may send to the machine's own addresses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from livesrv.app import App
from livesrv.hub.clients import VIEWER
from tests.browser.driver import Browser
from tests.browser.harness import WATCH, Harness, assert_clean, assert_watched, no_errors_logged, republish, start_live
from tests.browser.netns import private_network
from tests.helpers import require_tool, wait_until
from tests.browser.test_web import assert_plays, base, clean, snapshot, wait_playing
from tests.rtc.helpers import RTC_VHOST, ffprobe_streams

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


@pytest.fixture
def netns() -> Iterator[str]:
    with private_network() as address:
        yield address


@pytest.fixture
async def rtc_app(netns, make_server) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    # (make_server's apps stop before netns leaves the namespace: fixtures end in the reverse order)
    yield await make_server(f"rtc_server {{ enabled on; candidate {netns}; }}", RTC_VHOST)


def whep_url(app: App, stream: str = "test") -> str:
    return f"http://127.0.0.1:{app.port('api')}/rtc/v1/whep/?app=live&stream={stream}"


def assert_rtc_audio(w: dict, what: str) -> None:  # type: ignore[type-arg]
    """Opus decoded by the browser's WebRTC audio path: samples received and not concealed (made up by packet
    loss concealment), at least half the watch's worth at 48 kHz. (Its energy is not measured: headless
    Chromium plays out to no device.)"""
    assert w["audioDecodedBytes"] > 0.5 * 48000 * WATCH * 0.5, f"{what}: little audio decoded: {w}"


async def test_chromium_plays_whep(rtc_app, procs, browser_sample, caplog):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv")
    app = rtc_app
    _, stream = await start_live(app, procs, browser_sample)
    player = await Harness.start(procs, "whep", whep_url(app))
    await player.event("playing", 40)
    assert [v.protocol for v in stream.viewers.values()] == ["rtc"]
    (client,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    assert client.kind == "viewer"
    res = await player.result(WATCH + 20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, "WebRTC playback", audio=False)
    assert_rtc_audio(res["watch"], "WebRTC playback")
    no_errors_logged(caplog)


async def test_whep_plays_on_after_the_publisher_restarts(rtc_app, procs, browser_sample,  # type: ignore[no-untyped-def]
                                                          caplog) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    app = rtc_app
    pub, stream = await start_live(app, procs, browser_sample)
    player = await Harness.start(procs, "whep", whep_url(app), "--republish", "--after", "2")
    await player.event("watched", WATCH + 40)
    (viewer,) = stream.viewers.values()
    old = stream.publisher
    pub.kill()  # SIGKILL: the publisher vanishes without unpublishing
    await republish(app, procs, browser_sample, old)
    player.proc.send_signal(signal.SIGUSR2)
    await player.event("resumed", 40)
    assert list(stream.viewers.values()) == [viewer], "the WebRTC session did not survive the republish"
    res = await player.result(20)
    assert_clean(res)
    assert_watched(res["watch"], WATCH, "before the republish", audio=False)
    rep = res["republish"]
    assert rep["resumed"], rep
    assert_watched(rep["after"], 2, "after the republish", audio=False)
    no_errors_logged(caplog)


async def test_chromium_publishes_over_whip(rtc_app, procs, caplog):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv")
    app = rtc_app
    url = f"http://127.0.0.1:{app.port('api')}/rtc/v1/whip/?app=live&stream=cam"
    pub = await procs.start(require_tool("node"), str(HERE / "whip.js"), "--url", url, "--seconds", "60",
                            "--chromium", require_tool("chromium"), stdout=asyncio.subprocess.PIPE)
    assert pub.stdout is not None
    line = json.loads(await asyncio.wait_for(pub.stdout.readline(), 60) or b'{"event": "eof"}')
    assert line["event"] == "published", line
    assert line["codec"] == "video/H264", line
    await wait_until(lambda: any(s.live and s.gop.gop and s.gop.audio_header for s in app.hub.streams.values()),
                     20, "the WHIP stream to go live with video and audio")
    (client,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    assert client.kind == "publisher"
    flv = await ffprobe_streams(procs, f"http://127.0.0.1:{app.port('http')}/live/cam.flv")
    assert flv["video"]["codec_name"] == "h264" and (flv["video"]["width"], flv["video"]["height"]) == (640, 360)
    assert flv["audio"]["codec_name"] == "aac", flv
    rtmp = await ffprobe_streams(procs, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/cam")
    assert {k: v["codec_name"] for k, v in rtmp.items()} == {"video": "h264", "audio": "aac"}
    pub.send_signal(signal.SIGUSR2)  # the page DELETEs its session
    res = json.loads(await asyncio.wait_for(pub.stdout.readline(), 30))
    assert res["ok"], res
    await wait_until(lambda: not any(s.live for s in app.hub.streams.values()), 10, "the stream to unpublish")
    no_errors_logged(caplog)


@pytest.mark.parametrize("grace", ["within-grace", "after-grace"])
async def test_player_page_plays_over_webrtc_and_after_the_publisher_returns(netns, make_server, procs,  # type: ignore[no-untyped-def]
                                                                           browser_sample, caplog, grace: str) -> None:
    """The player page offers WebRTC when the server has it (the automatic choice stays HTTP-FLV) and plays
    over WHEP, muted. The publisher is killed and restarted: within ``republish_grace`` the same WebRTC
    session carries on; past it the server ends the session and the page starts a new one by itself. Leaving
    the page DELETEs the session."""
    caplog.set_level(logging.INFO, logger="livesrv")
    grace_conf = "play { republish_grace 1; }" if grace == "after-grace" else ""
    app = await make_server(f"rtc_server {{ enabled on; candidate {netns}; }}", RTC_VHOST + grace_conf)
    pub, stream = await start_live(app, procs, browser_sample)
    browser = await Browser.start(procs)
    try:
        await browser.goto(f"{base(app)}/player.html?app=live&stream=test")
        await wait_playing(browser)
        assert (await snapshot(browser))["mode"] == "flv"  # the automatic choice is unchanged
        await browser.eval("window.samePage = true")
        await browser.click("#modes [data-mode=webrtc]")
        await browser.wait("livesrvPlayer.mode === 'webrtc' && livesrvPlayer.state === 'playing' && "
                           "livesrvPlayer.video.videoWidth > 0", 40, "the page to play over WebRTC")
        await wait_until(lambda: [c.protocol for c in app.hub.clients.values() if c.kind == VIEWER] == ["rtc"], 10,
                         "the HTTP-FLV viewer to be replaced by a WebRTC one")
        await assert_plays(browser, "over WebRTC")
        assert await browser.eval("document.getElementById('video').muted")
        assert await browser.eval("new URLSearchParams(location.search).get('mode')") == "webrtc"
        stats = await browser.eval("document.getElementById('stats').textContent")
        assert stats.startswith("WebRTC · 640×360 · jitter buffer ") and " frames" in stats, stats
        whep = await browser.eval("document.querySelector('#urls [data-label=\"WebRTC (WHEP)\"] code').textContent")
        assert whep == f"http://127.0.0.1:{app.port('api')}/rtc/v1/whep/?app=live&stream=test", whep
        (session,) = app.rtc.sessions.values()
        deletes: list[str] = []  # the tokens of the DELETEs the server gets
        delete = app.rtc._delete
        app.rtc._delete = lambda req: deletes.append(req.query.get("token", "")) or delete(req)  # type: ignore[method-assign]

        pub.kill()  # SIGKILL: gone without unpublishing
        await pub.wait()
        if grace == "after-grace":  # the server ends the WebRTC session; the page notices and starts another
            await browser.wait("livesrvPlayer.restarts >= 1", 20, "the page to notice the end and reconnect")
        else:
            await asyncio.sleep(1.0)
        at_drop = await snapshot(browser)
        old = stream.publisher
        await republish(app, procs, browser_sample, old)
        # A WebRTC <video>'s currentTime runs on regardless: 25 frames decoded past the drop are the new publisher's.
        await browser.wait(f"document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > "
                           f"{at_drop['frames'] + 25} && livesrvPlayer.state === 'playing'", 40,
                           f"the new publisher's frames (at the drop: {at_drop})")
        snap = await assert_plays(browser, "over WebRTC after the publisher came back")
        assert snap["mode"] == "webrtc" and await browser.eval("window.samePage === true"), snap
        (now,) = app.rtc.sessions.values()
        if grace == "within-grace" and snap["restarts"] == 0:
            assert now is session  # the same WebRTC session carried on
        elif grace == "after-grace":
            assert now is not session and snap["restarts"] >= 1, snap
        print(f"{grace}: {snap['restarts']} reconnects ({snap['errors']})")

        await browser.goto(base(app) + "/")  # leaving the page ends its WebRTC session at once, with a DELETE
        await wait_until(lambda: not app.rtc.sessions and now.token in deletes, 5,
                         f"the session to end and be DELETEd when the page is left (DELETEs: {deletes})")
        clean(await browser.log())
    finally:
        await browser.close()
    no_errors_logged(caplog)
