"""livesrv's pages over HTTPS in headless chromium (``--ignore-certificate-errors``: the test server's certificate
is self-signed; the pages are still secure contexts, so the browser blocks any http:// or ws:// they would use):
the player plays over HTTPS-FLV, WSS-FLV and HLS over HTTPS; the streams page shows the URLs of the page's scheme
(https://, wss://, rtmps://); the console works with the API over HTTPS, and kicks a viewer through it. Every
connection the pages make is to the TLS listeners. Every socket is on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livesrv.app import App
from livesrv.config import parse_text
from livesrv.hub.clients import VIEWER
from tests.browser.driver import Browser
from tests.browser.harness import no_errors_logged, start_live
from tests.browser.test_web import assert_plays, clean, snapshot, wait_playing
from tests.helpers import Procs, wait_until
from tests.servers.test_tls import live_https_viewer
from tests.servers.tls_certs import Pair, self_signed_pair

pytestmark = pytest.mark.e2e


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    pair: Pair = self_signed_pair(tmp_path / "certs", "server")
    files = f"key {pair.key}; cert {pair.cert};"
    config = parse_text(f"""
    listen 127.0.0.1:0;
    http_server {{ enabled on; listen 127.0.0.1:0; dir ./objs/nginx/html;
                   https {{ enabled on; listen 127.0.0.1:0; {files} }} }}
    http_api {{ enabled on; listen 127.0.0.1:0; https {{ enabled on; listen 127.0.0.1:0; {files} }} }}
    rtmps {{ enabled on; listen 127.0.0.1:0; {files} }}
    vhost __defaultVhost__ {{ http_remux {{ enabled on; }} hls {{ enabled on; hls_fragment 1; hls_window 10; }} }}
    """, "<test>").config
    server = App(config)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def browser(procs: Procs) -> AsyncIterator[Browser]:
    b = await Browser.start(procs, ignore_certificate_errors=True)
    yield b
    await b.close()


def base(app: App) -> str:
    return f"https://127.0.0.1:{app.port('https')}"


def only_tls(app: App) -> None:
    """Every connection of the HTTP server is one of its TLS listener's (the plain one has none)."""
    schemes = {c.scheme for c in app.http.connections}
    assert schemes <= {"https"}, schemes


def no_insecure_requests(log: dict[str, list[str]]) -> None:
    """Nothing the page asked for went (or was blocked going) to http:// or ws://: no mixed content."""
    text = " ".join(log["console"] + log["failedRequests"])
    assert "Mixed Content" not in text and "http://" not in text and "ws://" not in text, log


COPY = ("(sel) => Object.fromEntries([...document.querySelectorAll(sel + ' .copyable')]"
        ".map(e => [e.dataset.label, e.querySelector('code').textContent]))")


async def test_player_over_https_plays_flv_wss_and_hls(app, procs, browser, browser_sample, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv")
    await start_live(app, procs, browser_sample)
    await browser.goto(f"{base(app)}/player.html?app=live&stream=test&mode=flv")
    await wait_playing(browser)
    await assert_plays(browser, "HTTPS-FLV")
    assert (await browser.wait("window.livesrvPlayer && livesrvPlayer.urls.ws", 10)).startswith(f"wss://127.0.0.1:{app.port('https')}/")
    urls = await browser.eval(f"({COPY})('#urls')")
    assert urls["HTTP-FLV"] == f"{base(app)}/live/test.flv" and urls["HLS"] == f"{base(app)}/live/test.m3u8", urls
    assert urls["RTMPS"] == f"rtmps://127.0.0.1:{app.port('rtmps')}/live/test", urls
    await browser.eval("window.samePage = true")
    protocols = {"flv": "flv", "ws": "ws-flv", "hls": "hls"}
    for mode in ("flv", "ws", "hls"):
        if mode != "flv":
            await browser.click(f"#modes [data-mode={mode}]")
            await browser.wait(f"livesrvPlayer.mode === '{mode}' && livesrvPlayer.state === 'playing' && "
                               "livesrvPlayer.video.currentTime > 0.5", 60, f"the player to play over {mode}")
        snap = await assert_plays(browser, f"{mode} over TLS")
        assert snap["mode"] == mode, snap
        await wait_until(lambda: protocols[mode] in [c.protocol for c in app.hub.clients.values() if c.kind == VIEWER],
                         10, f"the {protocols[mode]} viewer")
        viewer = next(c for c in app.hub.clients.values() if c.kind == VIEWER and c.protocol == protocols[mode])
        assert viewer.context.tc_url == f"https://127.0.0.1:{app.port('https')}/live", viewer.context.tc_url
        only_tls(app)
    assert await browser.eval("window.samePage === true")
    log = await browser.log()
    clean(log, allowed=("404",))  # HLS: the playlist answers 404 until its first segment is cut
    no_insecure_requests(log)
    no_errors_logged(caplog)


async def test_streams_page_over_https_shows_the_secure_urls(app, procs, browser, browser_sample) -> None:  # type: ignore[no-untyped-def]
    await start_live(app, procs, browser_sample)
    await browser.goto(base(app) + "/")
    await browser.wait("(() => { const img = document.querySelector('.stream[data-name=\"live/test\"] .still img');"
                       " return img && img.naturalWidth > 0; })()", 30, "the stream's card with its still")
    rtmps, https, wss = (f"rtmps://127.0.0.1:{app.port('rtmps')}", base(app),
                         f"wss://127.0.0.1:{app.port('https')}")
    publish = await browser.eval(f"({COPY})('#publish')")
    assert publish["OBS server"] == f"{rtmps}/live" and publish["RTMPS URL"] == f"{rtmps}/live/test", publish
    assert publish["ffmpeg"].endswith(f" -f flv {rtmps}/live/test"), publish
    play = await browser.eval(f"({COPY})('#play')")
    assert play == {"RTMP": f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test", "RTMPS": f"{rtmps}/live/test",
                    "HTTP-FLV": f"{https}/live/test.flv", "WS-FLV": f"{wss}/live/test.flv",
                    "HLS": f"{https}/live/test.m3u8", "HTTP-TS": f"{https}/live/test.ts",
                    "In this browser": f"{https}/player.html?app=live&stream=test"}, play
    footer = await browser.eval("document.getElementById('footer').textContent")
    assert f"https://127.0.0.1:{app.port('api_https')}" in footer, footer
    log = await browser.log()
    clean(log)
    no_insecure_requests(log)
    only_tls(app)


async def test_console_over_https_with_the_api_over_https(app, procs, browser, browser_sample) -> None:  # type: ignore[no-untyped-def]
    await start_live(app, procs, browser_sample)
    task, received, _ = await live_https_viewer(app.port("https"))
    try:
        await wait_until(lambda: any(c.kind == VIEWER for c in app.hub.clients.values()), 10, "the viewer")
        (cid,) = [c.cid for c in app.hub.clients.values() if c.kind == VIEWER]
        await browser.goto(base(app) + "/console/")
        base_ = await browser.wait("window.livesrvConsole && livesrvConsole.api.base", 10, "the console's API")
        assert base_ == f"https://127.0.0.1:{app.port('api_https')}", base_
        row = f"#clients tbody tr[data-id='{cid}']"
        text = await browser.wait(f"document.querySelector(\"{row}\") && document.querySelector(\"{row}\").innerText",
                                  20, "the viewer in the clients table")
        assert "viewer" in text and "flv" in text and "/live/test" in text, text
        await browser.wait("document.querySelector('.figure[data-figure=Streams] .value') && "
                           "document.querySelector('.figure[data-figure=Streams] .value').textContent === '1'", 10,
                           "one stream in the console's figures")
        await browser.click(f"{row} button")
        await browser.click(f"{row} button")  # the second click confirms: DELETE over the API's HTTPS listener
        await browser.wait(f"!document.querySelector(\"{row}\")", 10, "the kicked viewer's row to go")
        await wait_until(lambda: cid not in app.hub.clients, 10, "the viewer to leave the server")
        await wait_until(task.done, 10, "the kicked viewer's connection to close")
    finally:
        task.cancel()
    assert {c.scheme for c in app.api.connections} <= {"https"}
    log = await browser.log()
    clean(log)
    no_insecure_requests(log)
