"""livesrv's own pages in a real headless chromium, against a real server and real ffmpeg publishers.

``/`` lists a live stream with its real size and codec and a still; the player page plays over HTTP-FLV,
WS-FLV and HLS (decoded frames, currentTime advancing), plays on after its publisher is killed and comes
back without a reload, and its glass-to-glass latency is measured from a barcode of the wall clock burned
into the picture; the console kicks a viewer (gone from its table and from the server), and a kick it is
refused (no auth, not loopback) changes nothing; with API auth the console asks for credentials; without the
players' npm packages the player falls back to the browser's own HLS and says so.

Every socket is on 127.0.0.1. ``LIVESRV_SCREENSHOTS=DIR`` also writes the README's screenshots there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench import glass
from livesrv.app import App
from livesrv.hub.clients import VIEWER
from livesrv.servers.api.service import is_loopback
from livesrv.servers.web import VENDOR_DIR, VENDOR_FILES
from tests.browser.driver import Browser
from tests.browser.harness import no_errors_logged, republish, start_live
from tests.helpers import FFMPEG, FlvViewer, Procs, require_tool, wait_until

pytestmark = pytest.mark.e2e

HLS = "hls { enabled on; hls_fragment 1; hls_window 10; }"
SNAPSHOT = """(() => { const v = document.getElementById('video'); const q = v.getVideoPlaybackQuality();
  return {t: v.currentTime, frames: q.totalVideoFrames, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
          readyState: v.readyState, state: livesrvPlayer.state, mode: livesrvPlayer.mode,
          restarts: livesrvPlayer.restarts, errors: livesrvPlayer.errors, buffer: livesrvPlayer.buffer(),
          bufferedEnd: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0}; })()"""


@pytest.fixture(autouse=True)
def _players_installed() -> None:
    """The pages' players come from npm (scripts/serve and scripts/test install them): missing is a broken set-up."""
    missing = [f for f in VENDOR_FILES.values() if not (VENDOR_DIR / f).is_file()]
    if missing:
        pytest.fail(f"{VENDOR_DIR} lacks {missing}: run scripts/test (npm ci in src/livesrv/web/vendor)")


@pytest.fixture
async def browser(procs: Procs) -> AsyncIterator[Browser]:
    b = await Browser.start(procs)
    yield b
    await b.close()


def base(app: App) -> str:
    return f"http://127.0.0.1:{app.port('http')}"


async def shot(browser: Browser, tmp_path: Path, name: str, full_page: bool = False) -> None:
    """A screenshot in the test's directory, and in $LIVESRV_SCREENSHOTS (the README's, docs/img) when set."""
    await browser.screenshot(tmp_path / name, full_page)
    target = os.environ.get("LIVESRV_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        await browser.screenshot(Path(target) / name, full_page)


async def snapshot(browser: Browser) -> dict[str, Any]:
    return dict(await browser.eval(SNAPSHOT))


async def assert_plays(browser: Browser, what: str, seconds: float = 3.0) -> dict[str, Any]:
    """currentTime and the decoded frames advance at about the stream's rate over ``seconds``."""
    a = await snapshot(browser)
    await asyncio.sleep(seconds)
    b = await snapshot(browser)
    assert b["t"] - a["t"] >= 0.6 * seconds, f"{what}: currentTime advanced {b['t'] - a['t']:.2f}s: {a} -> {b}"
    assert b["frames"] - a["frames"] >= 0.5 * 25 * seconds, f"{what}: frames {a['frames']} -> {b['frames']}"
    # readyState may be 2 for a moment: a low-latency buffer is often down to the current frame
    assert (b["w"], b["h"]) == (640, 360) and not b["paused"] and b["readyState"] >= 2, b
    return b


async def wait_playing(browser: Browser, timeout: float = 40) -> None:
    await browser.wait("window.livesrvPlayer && livesrvPlayer.state === 'playing' && "
                       "livesrvPlayer.video.currentTime > 0.5", timeout, "the player to play")


def clean(log: dict[str, list[str]], allowed: tuple[str, ...] = ()) -> None:
    """No page error; console errors only those expected (e.g. a refused request's status)."""
    assert log["pageErrors"] == [], log
    unexpected = [m for m in log["console"] if not any(a in m for a in allowed)]
    assert unexpected == [], log


# ------------------------------------------------------------------------------------------ streams page


async def test_streams_page_lists_the_stream_and_the_urls(make_server, procs, browser, browser_sample,  # type: ignore[no-untyped-def]
                                                          tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server(vhost=HLS)
    http, rtmp = base(app), f"rtmp://127.0.0.1:{app.port('rtmp')}"
    await browser.goto(http + "/")
    await browser.wait("document.body.dataset.ready === 'true'", 20, "the page to load the streams")
    empty = await browser.eval("document.getElementById('empty').hidden ? null : document.getElementById('empty').innerText")
    assert empty and "OBS" in empty and "ffmpeg" in empty, empty
    copy = ("(sel) => Object.fromEntries([...document.querySelectorAll(sel + ' .copyable')]"
            ".map(e => [e.dataset.label, e.querySelector('code').textContent]))")
    publish = await browser.eval(f"({copy})('#publish')")
    assert publish["OBS server"] == f"{rtmp}/live" and publish["OBS stream key"] == "test", publish
    assert publish["RTMP URL"] == f"{rtmp}/live/test" and publish["ffmpeg"].endswith(f" -f flv {rtmp}/live/test")
    play = await browser.eval(f"({copy})('#play')")
    assert play == {"RTMP": f"{rtmp}/live/test", "HTTP-FLV": f"{http}/live/test.flv",
                    "WS-FLV": f"ws://127.0.0.1:{app.port('http')}/live/test.flv", "HLS": f"{http}/live/test.m3u8",
                    "HTTP-TS": f"{http}/live/test.ts", "In this browser": f"{http}/player.html?app=live&stream=test"}
    # A publisher starts: the stream appears without a reload, with its real size and codec and a still.
    await start_live(app, procs, browser_sample)
    viewer = FlvViewer(f"{http}/live/test.flv").start()
    try:
        card = await browser.wait(
            "(() => { const c = document.querySelector('.stream[data-name=\"live/test\"]');"
            " const img = c && c.querySelector('.still img');"
            " return c && img.naturalWidth > 0 && c.querySelector('.info .viewers').textContent === '1 viewer'"
            " && {text: c.innerText, still: [img.naturalWidth, img.naturalHeight]}; })()", 30,
            "the stream's card with its still and one viewer")
    finally:
        await viewer.close()
    assert "H264 Baseline 640×360" in card["text"] and "AAC 44.1 kHz stereo" in card["text"], card
    assert card["still"] == [320, 180], card  # the keyframe, decoded by the server and scaled
    assert await browser.eval("document.getElementById('empty').hidden")
    await shot(browser, tmp_path, "streams.png", full_page=True)
    await browser.fill("#stream", "show")  # the lines follow the names typed
    assert (await browser.eval(f"({copy})('#publish')"))["RTMP URL"] == f"{rtmp}/live/show"
    urls = await browser.eval(f"({copy})('.stream .urls')")  # each stream's own URLs
    assert urls == {k: v for k, v in play.items() if k != "In this browser"}, urls
    await browser.click(".stream a.watch")  # click to watch
    await browser.wait("location.pathname === '/player.html'", 10)
    await wait_playing(browser)
    assert await browser.eval("location.search") == "?app=live&stream=test"
    clean(await browser.log())
    no_errors_logged(caplog)


# ------------------------------------------------------------------------------------------ player page


@pytest.mark.parametrize("mode, protocol", [("flv", "flv"), ("ws", "ws-flv"), ("hls", "hls")])
async def test_player_plays(make_server, procs, browser, browser_sample, tmp_path, caplog,  # type: ignore[no-untyped-def]
                            mode: str, protocol: str) -> None:
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server(vhost=HLS)
    await start_live(app, procs, browser_sample)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=test&mode={mode}")
    await wait_playing(browser, 60 if mode == "hls" else 40)
    snap = await assert_plays(browser, mode)
    assert snap["mode"] == mode and await browser.eval("document.getElementById('video').muted"), snap
    assert await browser.eval(f"document.querySelector('#modes [data-mode={mode}]').getAttribute('aria-pressed')") == "true"
    viewers = [c.protocol for c in app.hub.clients.values() if c.kind == VIEWER]
    assert protocol in viewers, viewers
    if mode == "flv":
        await shot(browser, tmp_path, "player.png")
    # HLS: the playlist answers 404 until its first segment is cut; the player tries again.
    clean(await browser.log(), allowed=("404",) if mode == "hls" else ())
    no_errors_logged(caplog)


async def test_player_switches_protocol_on_the_same_page(make_server, procs, browser, browser_sample) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(vhost=HLS)
    await start_live(app, procs, browser_sample)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=test")
    await wait_playing(browser)
    assert (await snapshot(browser))["mode"] == "flv"  # the automatic choice with mpegts.js: lowest latency
    await browser.eval("window.samePage = true")
    await browser.click("#modes [data-mode=ws]")
    await browser.wait("livesrvPlayer.mode === 'ws' && livesrvPlayer.state === 'playing'", 30)
    await wait_until(lambda: [c.protocol for c in app.hub.clients.values() if c.kind == VIEWER] == ["ws-flv"], 10,
                     "the HTTP-FLV viewer to be replaced by a WS-FLV one")
    await assert_plays(browser, "after switching to WS-FLV")
    assert await browser.eval("window.samePage && new URLSearchParams(location.search).get('mode')") == "ws"


@pytest.mark.parametrize("grace", ["within-grace", "after-grace"])
async def test_player_plays_on_after_the_publisher_drops_and_returns(make_server, procs, browser,  # type: ignore[no-untyped-def]
                                                                     browser_sample, caplog, grace: str) -> None:
    """The publisher is killed and restarted. Within ``republish_grace`` the same connection carries on; past
    it the server closes the viewer and the page connects again by itself. Either way: no reload."""
    caplog.set_level(logging.INFO, logger="livesrv")
    app = await make_server(vhost="play { republish_grace 1; }" if grace == "after-grace" else "")
    pub, stream = await start_live(app, procs, browser_sample)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=test&mode=flv")
    await wait_playing(browser)
    await assert_plays(browser, "before the publisher drops", 2)
    await browser.eval("window.samePage = true")
    pub.kill()  # SIGKILL: gone without unpublishing
    await pub.wait()
    if grace == "after-grace":  # the server ends the viewer's body; the page notices and tries again
        await browser.wait("livesrvPlayer.restarts >= 1", 20, "the page to notice the end and reconnect")
    else:
        await asyncio.sleep(1.0)
    at_drop = await snapshot(browser)
    old = stream.publisher
    await republish(app, procs, browser_sample, old)
    # Past what was buffered at the drop: media only the new publisher can have sent.
    target = at_drop["bufferedEnd"] + 1.0 if grace == "within-grace" else 1.0
    await browser.wait(f"livesrvPlayer.video.currentTime > {target} && livesrvPlayer.state === 'playing'", 40,
                       f"playback past {target:.2f}s with the new publisher's media (at the drop: {at_drop})")
    await assert_plays(browser, "after the publisher came back", 2)
    assert await browser.eval("window.samePage === true"), "the page was reloaded"
    clean(await browser.log())
    no_errors_logged(caplog)


async def test_player_latency_over_http_flv(make_server, procs, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Glass-to-glass, from the wall clock burned into the picture as a barcode (bench/glass.py), with the
    server's default settings. The 0.5 s target is the benchmark's (bench/latency.py, docs/performance.md);
    here a generous bound."""
    app = await make_server()
    url = f"rtmp://127.0.0.1:{app.port('rtmp')}/live/glass"
    await procs.start(*glass.publisher_args(require_tool(FFMPEG), url, tmp_path))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    await browser.add_script(glass.JS)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=glass&mode=flv")
    await wait_playing(browser)
    await browser.eval("glass.start(document.getElementById('video'))")
    await asyncio.sleep(3)  # start-up: the player catches up from the cached GOP
    since = await browser.eval("Date.now()")
    await asyncio.sleep(6)
    samples = [s["latency"] for s in await browser.eval("glass.samples()") if s["at"] >= since]
    assert len(samples) >= 100, f"only {len(samples)} frames read in 6 s"
    p50 = statistics.median(samples)
    print(f"glass-to-glass over HTTP-FLV: p50 {p50:.0f} ms over {len(samples)} frames")
    assert 0 < p50 < 3000, f"glass-to-glass p50 {p50} ms: {sorted(samples)[:: max(1, len(samples) // 20)]}"


async def test_without_the_players_the_page_says_so_and_plays_native_hls(make_server, procs, browser,  # type: ignore[no-untyped-def]
                                                                        browser_sample, tmp_path) -> None:
    app = await make_server(vhost=HLS)
    app.web.vendor_dir = tmp_path / "no-npm"  # as on a server where npm was not there
    await start_live(app, procs, browser_sample)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=test")
    note = await browser.wait("!document.getElementById('note').hidden && document.getElementById('note').textContent", 20)
    assert "mpegts.js and hls.js are not installed" in note and "HLS (native)" in note, note
    await wait_playing(browser, 60)
    snap = await assert_plays(browser, "native HLS")
    assert snap["mode"] == "native", snap
    disabled = await browser.eval("[...document.querySelectorAll('#modes button:disabled')].map(b => b.dataset.mode)")
    assert disabled == ["flv", "ws", "hls", "webrtc"], disabled  # (and WebRTC is off on this server)
    await browser.goto(base(app) + "/")
    footer = await browser.wait("document.body.dataset.ready && document.getElementById('footer').textContent", 20)
    assert "not installed" in footer and "HLS natively" in footer, footer


# ------------------------------------------------------------------------------------------ console


async def test_console_kicks_a_viewer_and_a_refused_kick_changes_nothing(make_server, procs, browser,  # type: ignore[no-untyped-def]
                                                                         browser_sample, tmp_path) -> None:
    app = await make_server()
    await start_live(app, procs, browser_sample)
    viewer = FlvViewer(f"{base(app)}/live/test.flv").start()
    try:
        await wait_until(lambda: any(c.kind == VIEWER for c in app.hub.clients.values()), 10, "the viewer")
        (cid,) = [c.cid for c in app.hub.clients.values() if c.kind == VIEWER]
        await browser.goto(base(app) + "/console/")
        row = f"#clients tbody tr[data-id='{cid}']"
        text = await browser.wait(f"document.querySelector(\"{row}\") && document.querySelector(\"{row}\").innerText",
                                  20, "the viewer in the clients table")
        assert "viewer" in text and "flv" in text and "/live/test" in text and "127.0.0.1" in text, text
        streams = await browser.wait("document.querySelector('#streams tbody tr') && "
                                     "document.querySelector('#streams tbody tr').innerText", 10)
        assert "live/test" in streams and "640×360" in streams, streams
        figures = await browser.eval("Object.fromEntries([...document.querySelectorAll('.figure')].map("
                                     "f => [f.dataset.figure, f.querySelector('.value').textContent]))")
        assert set(figures) >= {"CPU", "Memory", "In", "Out", "Connections", "Uptime"}, figures
        assert figures["Streams"] == "1" and figures["Clients"] == "2", figures
        assert "only this machine" in await browser.eval("document.getElementById('safety').textContent")
        config = await browser.wait("document.getElementById('config').textContent.startsWith('{') && "
                                    "document.getElementById('config').textContent", 10)
        assert json.loads(config)["http_api"]["enabled"] is True
        await asyncio.sleep(8)  # some history for the charts of the screenshot
        await shot(browser, tmp_path, "console.png", full_page=True)
        charted = await browser.eval("document.querySelector('#streams canvas').toDataURL().length")
        assert charted > 1000, "the stream's chart is blank"
        await browser.fill("#filter", "publisher")  # the filter hides the viewer's row
        await browser.wait(f"document.querySelector(\"{row}\").hidden", 5)
        await browser.fill("#filter", "flv 127.0.0.1")
        await browser.wait(f"!document.querySelector(\"{row}\").hidden", 5)

        # As seen from another machine without auth: refused, and nothing changes.
        app.api_service.trusted = lambda ip: False
        await browser.click(f"{row} button")
        await browser.click(f"{row} button")  # the second click confirms
        error = await browser.wait("!document.getElementById('error').hidden && "
                                   "document.getElementById('error').textContent", 10, "the refusal shown")
        assert "only to clients on this machine" in error and "auth" in error, error
        await asyncio.sleep(2.5)  # a refresh later
        assert cid in app.hub.clients and not viewer.ended.is_set()
        assert await browser.eval(f"!!document.querySelector(\"{row}\")")

        app.api_service.trusted = is_loopback
        await browser.click(f"{row} button")
        await browser.click(f"{row} button")
        await browser.wait(f"!document.querySelector(\"{row}\")", 10, "the kicked viewer's row to go")
        await wait_until(lambda: cid not in app.hub.clients, 10, "the viewer to leave the server")
        await asyncio.wait_for(viewer.ended.wait(), 10)  # its connection was closed
        await asyncio.sleep(2.5)  # and it does not come back at the next refresh
        assert not await browser.eval(f"!!document.querySelector(\"{row}\")")
    finally:
        await viewer.close()
    clean(await browser.log(), allowed=("403",))


async def test_console_asks_for_the_api_credentials(procs, browser, browser_sample) -> None:  # type: ignore[no-untyped-def]
    from tests.servers.test_api import config

    app = App(config("auth { enabled on; username ops; password s3cret; }"))
    await app.start()
    try:
        await start_live(app, procs, browser_sample)
        await browser.goto(base(app) + "/console/")
        await browser.wait("document.getElementById('login')", 20, "the login form")
        assert await browser.eval("document.getElementById('safety').hidden")  # auth is on: no such note
        await browser.fill("#login [name=username]", "ops")
        await browser.fill("#login [name=password]", "wrong")
        await browser.click("#login button")
        await browser.wait("document.querySelector('#login .error').textContent.includes('Wrong')", 10)
        await browser.fill("#login [name=password]", "s3cret")
        await browser.click("#login button")
        await browser.wait("!document.getElementById('login') && document.body.dataset.ready === 'true' && "
                           "document.querySelector('#streams tbody tr')", 20, "the console after signing in")
        config_text = await browser.wait("document.getElementById('config').textContent.startsWith('{') && "
                                         "document.getElementById('config').textContent", 10)
        assert json.loads(config_text)["http_api"]["auth"]["password"] == "***"
        await browser.goto(base(app) + "/")  # the credentials hold for the session: the list loads at once
        await browser.wait("document.querySelector('.stream[data-name=\"live/test\"]')", 20)
        clean(await browser.log(), allowed=("401",))
    finally:
        await app.stop()
