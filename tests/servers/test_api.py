"""The HTTP API's contract without media: SRS envelope, errors and statuses, JSONP, CORS, Basic auth, real
process figures, the raw reload API, SIGHUP and the log file of a real ``livesrv`` process, and the codec
detail parsers (property-tested: any bytes give an answer, never an exception)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings, strategies as st

from livesrv.app import App
from livesrv.config import load_config, parse_text
from livesrv.media.packet import AUDIO, VIDEO
from livesrv.codec.inspect import audio_info, video_info
from livesrv.servers.api.sampling import Meter
from tests.helpers import Procs, wait_until


def config(http_api: str = "", extra: str = ""):  # type: ignore[no-untyped-def]
    """A server on OS-chosen ports whose ``http_api`` block holds ``http_api``."""
    text = f"""
    listen 127.0.0.1:0;
    http_server {{ enabled on; listen 127.0.0.1:0; }}
    http_api {{ enabled on; listen 127.0.0.1:0; {http_api} }}
    {extra}
    vhost __defaultVhost__ {{ http_remux {{ enabled on; }} }}
    """
    result = parse_text(text, "<test>")
    assert not result.warnings, result.warnings
    return result.config


@pytest.fixture
async def start_app() -> AsyncIterator[Callable[..., Awaitable[App]]]:
    apps: list[App] = []

    async def start(http_api: str = "", extra: str = "") -> App:
        app = App(config(http_api, extra))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


def api_url(app: App, path: str) -> str:
    return f"http://127.0.0.1:{app.port('api')}{path}"


async def get(app: App, path: str, method: str = "GET", **kw: object) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api_url(app, path), **kw) as r:  # type: ignore[arg-type]
            return r.status, dict(r.headers), await r.text()


def envelope_ok(body: dict[str, object]) -> None:
    assert body["code"] == 0, body
    assert isinstance(body["server"], str) and body["server"]
    assert isinstance(body["service"], str) and body["service"]
    assert body["pid"] == str(os.getpid())


async def test_every_answer_has_the_srs_envelope_and_errors_have_the_right_status(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, text = await get(server, "/api/v1/versions")
    body = json.loads(text)
    assert status == 200 and headers["Content-Type"] == "application/json"
    envelope_ok(body)
    assert set(body["data"]) == {"major", "minor", "revision", "version"}
    for path in ("/", "/api", "/api/v1", "/api/v1/vhosts", "/api/v1/streams/", "/api/v1/clients/"):
        status, _, text = await get(server, path)
        assert status == 200, path
        envelope_ok(json.loads(text))
    status, _, text = await get(server, "/api/v1/streams")
    assert json.loads(text)["streams"] == [] and json.loads(text)["total"] == 0

    cases = [
        ("GET", "/api/v1/nothing", 404, 3010),
        ("GET", "/api/v1/streams/vid-nothere", 404, 2048),
        ("DELETE", "/api/v1/streams/vid-nothere", 404, 2048),
        ("GET", "/api/v1/clients/nothere1", 404, 2049),
        ("DELETE", "/api/v1/clients/nothere1", 404, 2049),
        ("GET", "/api/v1/vhosts/vid-nothere", 404, 2014),
        ("POST", "/api/v1/versions", 405, 405),
        ("PUT", "/api/v1/streams", 405, 405),
        ("DELETE", "/api/v1/clients", 405, 405),
        ("GET", "/api/v1/streams?count=ten", 400, 400),
        ("GET", "/api/v1/clients?start=-1", 400, 400),
    ]
    for method, path, want_status, want_code in cases:
        status, headers, text = await get(server, path, method)
        body = json.loads(text)
        assert (status, body["code"]) == (want_status, want_code), (method, path, body)
        assert body["error"] and body["pid"] == str(os.getpid())
        if status == 405:
            assert "Allow" in headers


async def test_vhosts_list_the_configured_vhosts_with_stable_ids(start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app(extra="vhost other.example { hls { enabled on; hls_fragment 4; } }")
    _, _, text = await get(app, "/api/v1/vhosts")
    vhosts = {v["name"]: v for v in json.loads(text)["vhosts"]}
    assert set(vhosts) == {"__defaultVhost__", "other.example"}
    other = vhosts["other.example"]
    assert other["hls"] == {"enabled": True, "fragment": 4.0} and other["enabled"] is True
    assert (other["clients"], other["streams"], other["send_bytes"], other["recv_bytes"]) == (0, 0, 0, 0)
    assert other["kbps"] == {"recv_30s": 0, "send_30s": 0}
    assert re.fullmatch(r"vid-[0-9a-z]{7}", other["id"])
    status, _, text = await get(app, f"/api/v1/vhosts/{other['id']}")
    assert status == 200 and json.loads(text)["vhost"]["id"] == other["id"]


async def test_jsonp_as_the_srs_console_uses_it(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, text = await get(server, "/api/v1/streams/?callback=JSON_CALLBACK_1")
    assert status == 200 and headers["Content-Type"] == "text/javascript"
    m = re.fullmatch(r"JSON_CALLBACK_1\((.*)\)", text, re.S)
    assert m is not None, text
    envelope_ok(json.loads(m.group(1)))
    # Errors stay 200 for JSONP (a script tag cannot see a status) with the code in the body.
    status, _, text = await get(server, "/api/v1/clients/nothere1?callback=cb&method=DELETE")
    assert status == 200 and json.loads(text[3:-1])["code"] == 2049
    # A callback that is not a JavaScript name is refused (it would be reflected into a script).
    status, _, text = await get(server, "/api/v1/versions?callback=alert(1)//")
    assert status == 400 and json.loads(text)["code"] == 400


async def test_cors_preflight_and_crossdomain_off(start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app()
    status, headers, _ = await get(app, "/api/v1/clients/abc", "OPTIONS",
                                   headers={"Origin": "http://console.example", "Access-Control-Request-Method": "DELETE"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    _, headers, _ = await get(app, "/api/v1/versions")
    assert headers["Access-Control-Allow-Origin"] == "*"

    closed = await start_app("crossdomain off;")
    _, headers, _ = await get(closed, "/api/v1/versions")
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = await get(closed, "/api/v1/versions", "OPTIONS")
    assert status == 405


async def test_basic_auth(start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app("auth { enabled on; username ops; password s3cret; }")

    def basic(user: str, pw: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    for headers in ({}, basic("ops", "wrong"), basic("nobody", "s3cret"), {"Authorization": "Basic !!!"},
                    {"Authorization": "Bearer s3cret"}):
        status, resp_headers, text = await get(app, "/api/v1/summaries", headers=headers)
        assert status == 401 and json.loads(text)["code"] == 401, headers
        assert resp_headers["WWW-Authenticate"].startswith("Basic ")
    status, _, _ = await get(app, "/metrics")
    assert status == 401
    status, _, text = await get(app, "/api/v1/summaries", headers=basic("ops", "s3cret"))
    assert status == 200
    envelope_ok(json.loads(text))
    status, _, text = await get(app, "/metrics", headers=basic("ops", "s3cret"))
    assert status == 200 and "srs_clients" in text
    # A preflight carries no credentials: it must not be refused.
    status, _, _ = await get(app, "/api/v1/versions", "OPTIONS")
    assert status == 200


def burn(seconds: float) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def test_summaries_are_real_measurements(server) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(burn, 1.3)  # this process uses CPU: the sampler must see it
    await wait_until(lambda: server.api_service.sampler.cpu_percent > 10, 5, "the sampler to measure this process's CPU")
    _, _, text = await get(server, "/api/v1/summaries")
    body = json.loads(text)
    envelope_ok(body)
    data = body["data"]
    me, sys_ = data["self"], data["system"]
    assert data["ok"] is True and abs(data["now_ms"] / 1000 - time.time()) < 5
    assert me["pid"] == os.getpid() and me["ppid"] == os.getppid()
    assert me["cwd"] == os.getcwd()
    assert 10_000 < me["mem_kbyte"] < 10_000_000  # a Python process: tens of MB
    assert 0 < me["mem_percent"] < 1
    assert me["cpu_percent"] > 0.1  # SRS's unit: a fraction of one core
    assert me["srs_uptime"] >= 0
    assert sys_["cpus"] >= 1 and 1 <= sys_["cpus_online"] <= sys_["cpus"]
    assert sys_["mem_ram_kbyte"] > me["mem_kbyte"] and 0 < sys_["mem_ram_percent"] < 1
    assert sys_["uptime"] > 0 and sys_["load_1m"] >= 0
    assert 0 <= sys_["cpu_percent"] <= 1
    assert sys_["net_recvi_bytes"] > 0  # the test talks over loopback
    assert sys_["conn_sys"] >= 1 and sys_["conn_srs"] >= 1


def test_meter_rate_over_the_window() -> None:
    m = Meter(1.0)
    assert m.kbps() == {"recv_30s": 0, "send_30s": 0}
    for t in range(100):
        m.add(float(t), t * 125_000, t * 250_000)  # 1000 kbps in, 2000 kbps out
    assert m.kbps() == {"recv_30s": 1000, "send_30s": 2000}
    assert len(m.samples) == 31  # 30 s of history, no more


def test_codec_details_from_sequence_headers() -> None:
    # AAC LC 44.1 kHz stereo (AudioSpecificConfig 0x12 0x10) and HE-AAC 48 kHz mono (explicit SBR).
    assert audio_info(b"\xaf\x00\x12\x10") == {
        "codec": "AAC", "sample_rate": 44100, "channel": 2, "profile": "LC"}
    he = audio_info(b"\xaf\x00\x2b\x8a\x08\x00")
    assert he is not None and he["codec"] == "AAC" and he["profile"] == "HE" and he["channel"] == 1
    # MP3 has no sequence header: the FLV audio header says what it is.
    assert audio_info(b"\x2f\xff\xfb") == {
        "codec": "MP3", "sample_rate": 44100, "channel": 2, "profile": "Other"}
    # A broken AVC header still says H264, with the size from onMetaData.
    broken = video_info(b"\x17\x00\x00\x00\x00\x01\x64", {"width": 1280.0, "height": 720.0})
    assert broken == {"codec": "H264", "profile": "Other", "level": "Other", "width": 1280, "height": 720}


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([AUDIO, VIDEO]), payload=st.binary(max_size=64),
       meta=st.dictionaries(st.sampled_from(["width", "height"]), st.one_of(st.floats(), st.integers(), st.text())))
def test_codec_details_never_raise(kind: int, payload: bytes, meta: dict[str, object]) -> None:
    """Sequence headers come from publishers: whatever they hold, the API answers."""
    if kind == AUDIO:
        out = audio_info(payload)
        assert out is None or isinstance(out["codec"], str)
    else:
        out2 = video_info(payload, meta)
        assert isinstance(out2["codec"], str) and out2["width"] >= 0 and out2["height"] >= 0


CONF = """
listen 127.0.0.1:0;
srs_log_tank file;
srs_log_file {log};
http_server {{ enabled on; listen 127.0.0.1:0; }}
http_api {{ enabled on; listen 127.0.0.1:0; raw_api {{ enabled {raw}; allow_reload {allow}; }} }}
vhost __defaultVhost__ {{ http_remux {{ enabled on; }} play {{ gop_cache {gop}; }} }}
"""


async def test_raw_reload_api(tmp_path: Path) -> None:
    path = tmp_path / "livesrv.conf"
    log = tmp_path / "unused.log"
    path.write_text(CONF.format(log=log, raw="off", allow="off", gop="on"))
    app = App(load_config(path, environ={}).config, config_path=str(path))
    await app.start()
    try:
        status, _, text = await get(app, "/api/v1/raw?rpc=reload")
        assert (status, json.loads(text)["code"]) == (403, 1061)
        path.write_text(CONF.format(log=log, raw="on", allow="off", gop="on"))
        app.reload()
        status, _, text = await get(app, "/api/v1/raw?rpc=reload")
        assert (status, json.loads(text)["code"]) == (403, 1062)
        status, _, text = await get(app, "/api/v1/raw?rpc=nonsense")
        assert (status, json.loads(text)["code"]) == (400, 1060)
        path.write_text(CONF.format(log=log, raw="on", allow="on", gop="on"))
        app.reload()
        assert app.config.vhost("__defaultVhost__").play.gop_cache is True
        path.write_text(CONF.format(log=log, raw="on", allow="on", gop="off"))
        status, _, text = await get(app, "/api/v1/raw?rpc=reload")
        body = json.loads(text)
        assert status == 200 and body["code"] == 0 and body["data"]["restart_needed"] == []
        assert app.config.vhost("__defaultVhost__").play.gop_cache is False
        # A broken file changes nothing and says why.
        path.write_text("vhost { broken")
        status, _, text = await get(app, "/api/v1/raw?rpc=reload")
        body = json.loads(text)
        assert status == 500 and body["code"] == 1023 and "reload failed" in body["error"]
        assert app.config.vhost("__defaultVhost__").play.gop_cache is False
    finally:
        await app.stop()


async def test_livesrv_process_logs_to_its_file_and_reloads_on_sighup(tmp_path: Path, procs: Procs) -> None:
    """The real command: ``srs_log_tank file`` gets the lines; SIGHUP re-reads the file, says what needs a
    restart; the API keeps answering throughout; SIGTERM stops it cleanly."""
    conf = tmp_path / "livesrv.conf"
    log = tmp_path / "objs" / "livesrv.log"
    log.parent.mkdir()
    conf.write_text(CONF.format(log=log, raw="off", allow="off", gop="on"))
    proc = await procs.start(sys.executable, "-m", "livesrv.cli", "-c", str(conf))

    def text() -> str:
        return log.read_text() if log.exists() else ""

    await wait_until(lambda: "event=ready" in text() or proc.returncode is not None, 20, "livesrv to start")
    assert proc.returncode is None, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    port = int(re.search(r"api=127\.0\.0\.1:(\d+)", text()).group(1))  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/api/v1/versions") as r:
            assert r.status == 200 and (await r.json())["code"] == 0
        conf.write_text(CONF.format(log=log, raw="off", allow="off", gop="off").replace(
            "listen 127.0.0.1:0;", "listen 127.0.0.1:0 127.0.0.1:0;", 1))
        proc.send_signal(signal.SIGHUP)
        # The reload line, then one warning per change that needs a restart (each its own write: wait for both).
        await wait_until(lambda: "event=reload-needs-restart" in text(), 10, "the restart warning")
        assert re.search(r"event=reload file=\S+ vhosts=1 restart_needed=1", text())
        assert re.search(r"event=reload-needs-restart change=.listen 127\.0\.0\.1:0 -> ", text())
        conf.write_text("listen oops")
        proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: "event=reload-failed" in text(), 10, "the failed reload line")
        async with s.get(f"http://127.0.0.1:{port}/api/v1/versions") as r:
            assert r.status == 200
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
    lines = text().splitlines()
    assert all(line.startswith("[") for line in lines), lines  # one formatted line per event, nothing raw
    assert any("[INFO][livesrv.app] event=stopped" in line for line in lines)
    assert (await proc.stderr.read()).decode().strip() == ""  # type: ignore[union-attr]  # the file tank, not the console


def test_log_level_and_tanks(tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_livesrv_logging: None) -> None:
    import logging

    from livesrv import log as logsetup
    from livesrv.log import client_event

    logger = logging.getLogger("livesrv.test")
    path = tmp_path / "srs.log"
    logsetup.setup("warn", "file", str(path))
    client_event(logger, "play", "abc12345", "10.0.0.1", "/live/test", "quiet")
    client_event(logger, "close", "abc12345", "10.0.0.1", "/live/test", "kicked by the HTTP API", logging.WARNING,
                 send_bytes=10)
    lines = path.read_text().splitlines()
    assert len(lines) == 1, lines  # the info line is below srs_log_level warn
    assert re.fullmatch(r"\[[^]]+\]\[WARNING\]\[livesrv\.test\] event=close client=abc12345 ip=10\.0\.0\.1 "
                        r'stream=/live/test send_bytes=10 reason="kicked by the HTTP API"', lines[0]), lines[0]
    assert capsys.readouterr().err == ""  # the file tank, not the console

    logsetup.setup("trace", "console")
    client_event(logger, "play", "abc12345", "10.0.0.1", "/live/test")
    assert "event=play client=abc12345" in capsys.readouterr().err
    assert len(path.read_text().splitlines()) == 1  # the file is no longer written
