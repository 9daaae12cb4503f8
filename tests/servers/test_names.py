"""Names refused where they enter, over real sockets, and log lines that stay one record whatever clients send.

RTMP connect, publish and play answer a name that breaks the rule (hub.keys) with an error carrying the
reason; HTTP-FLV, WS-FLV, HTTP-TS and HLS URLs answer 400. Nothing is created for a refused name: no stream in
the hub or the API, no HLS file. Every line the server logs meanwhile parses as one event with the expected
fields (tests.helpers.LogLines, through livesrv.log's own formatter).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from livesrv.app import App
from livesrv.codec import amf0
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.client import CommandReply, StatusEvent
from livesrv.hub.keys import parse_rtmp_request
from tests.helpers import LogLines, http_raw, wait_until
from tests.servers.rtmp_client import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, RTMPClient, keyframe

FORGED = "cam\n[2026-11-30 00:00:00,000][INFO][livesrv.rtmp] event=publish client=FORGED ip=6.6.6.6 stream=/live/forged"
FORBIDDEN = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ufffd"]
INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc"]
#: Text that is fine by itself (no surrogates: it must encode to UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
#: Raw AMF0 bytes of a stream name that breaks the rule: a control character, invalid UTF-8, or too long.
BAD_NAMES = st.one_of(
    st.builds(lambda a, c, b: (a + c + b).encode(), TEXT, st.sampled_from(FORBIDDEN), TEXT),
    st.builds(lambda a, c, b: a.encode() + c + b.encode(), TEXT, st.sampled_from(INVALID_UTF8), TEXT),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~é直", min_size=201, max_size=300)
      .filter(lambda s: len(s.encode()) > 200).map(str.encode),
)


@pytest.fixture
async def app(make_server, tmp_path: Path) -> App:  # type: ignore[no-untyped-def]
    """One server for all examples of a test, with HLS on so that a name reaching it would make files."""
    return await make_server(vhost=f"hls {{ enabled on; hls_fragment 1; hls_path {tmp_path / 'hls'}; }}")


# ---------------------------------------------------------------------------------------------- helpers


async def connected(port: int, app: str = "live", tc_url: str | None = None, **extra: Any) -> tuple[RTMPClient, CommandReply]:
    """An RTMP client after its connect command, and the server's answer to it (``_result`` or ``_error``)."""
    client = await RTMPClient.open(port)
    await client.handshake()
    txn = client.session.connect(app, tc_url if tc_url is not None else f"rtmp://127.0.0.1:{port}/{app}", **extra)
    await client.drain()
    reply = await client.wait_event(lambda e: isinstance(e, CommandReply) and e.transaction_id == txn, "connect reply")
    assert isinstance(reply, CommandReply)
    return client, reply


def _amf_string(raw: bytes) -> bytes:
    """An AMF0 string of any bytes: how a client sends a name that is not valid UTF-8."""
    return b"\x02" + struct.pack(">H", len(raw)) + raw


async def send_stream_command(client: RTMPClient, command: str, raw_name: bytes) -> StatusEvent:
    """createStream, then ``publish``/``play`` with these exact name bytes; the server's onStatus answer."""
    sid = await client.create_stream()
    payload = amf0.encode(command, 0.0, None) + _amf_string(raw_name) + amf0.encode("live" if command == "publish" else -2.0)
    client.session._send(m.Message(m.COMMAND_AMF0, sid, 0, payload), 8)  # noqa: SLF001 - bytes no encoder makes
    await client.drain()
    prefix = "NetStream.Publish." if command == "publish" else "NetStream.Play."
    ev = await client.wait_event(
        lambda e: isinstance(e, StatusEvent) and e.code.startswith(prefix) and e.code != "NetStream.Play.Reset",
        f"the {command} answer",
    )
    assert isinstance(ev, StatusEvent)
    return ev


async def api_json(app: App, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('api')}{path}") as r:
            assert r.status == 200
            return json.loads(await r.text())  # type: ignore[no-any-return]


async def nothing_left(app: App, hls_root: Path) -> None:
    """The refused client is gone and left nothing: no connection, stream, API entry or HLS file."""
    await wait_until(lambda: not app.rtmp.connections, 10, "the refused connection to close")
    assert not app.hub.streams
    assert (await api_json(app, "/api/v1/streams"))["streams"] == []
    assert (await api_json(app, "/api/v1/clients"))["clients"] == []
    assert not hls_root.exists() or not any(p.is_file() for p in hls_root.rglob("*"))


def _printable_utf8(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable() and "\ufffd" not in text


def one_client(events: list[dict[str, str]]) -> str:
    """Every event of a test step came from one client (a forged ``client=`` would be a second one)."""
    clients = {e["client"] for e in events if "client" in e}
    assert len(clients) == 1, events
    return clients.pop()


# ------------------------------------------------------------------------------------------------- RTMP


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=BAD_NAMES)
@example(raw=FORGED.encode())
@example(raw=b"cam\x00era")
@example(raw=b"x" * 3000)
async def test_a_refused_publish_name_leaves_nothing_and_logs_one_line_each(
    app: App, log_lines: LogLines, tmp_path: Path, raw: bytes
) -> None:
    log_lines.clear()
    port = app.port("rtmp")
    client, reply = await connected(port)
    try:
        assert reply.name == "_result"
        status = await send_stream_command(client, "publish", raw)
    finally:
        await client.close()
    assert status.level == "error" and status.code == "NetStream.Publish.BadName", status
    assert status.description.startswith("invalid ") and status.description.isprintable(), status.description
    await nothing_left(app, tmp_path / "hls")

    events = log_lines.events()
    cid = one_client(events)
    rejected = [e for e in events if e["event"] == "publish-rejected"]
    assert len(rejected) == 1, events
    expected_key = parse_rtmp_request(f"rtmp://127.0.0.1:{port}/live", "live", raw.decode("utf-8", "replace")).key
    assert rejected[0] == {"event": "publish-rejected", "client": cid, "ip": "127.0.0.1", "stream": str(expected_key),
                           "reason": status.description}
    assert [e["event"] for e in events if e["event"] not in ("connect", "handshake")] == ["publish-rejected", "close"]


async def test_a_refused_play_name_creates_no_stream(app: App, log_lines: LogLines, tmp_path: Path) -> None:
    for raw in (b"cam\nera", b"cam\xff", b"live/" + b"y" * 201):
        log_lines.clear()
        client, _ = await connected(app.port("rtmp"))
        try:
            status = await send_stream_command(client, "play", raw)
        finally:
            await client.close()
        assert status.level == "error" and status.description.startswith("invalid "), status
        await nothing_left(app, tmp_path / "hls")
        events = log_lines.events()
        one_client(events)
        assert [e["reason"] for e in events if e["event"] == "play-rejected"] == [status.description]


@pytest.mark.parametrize(
    ("app_name", "tc_url", "why"),
    [
        ("live\n[2026-11-30 00:00:00,000] event=connect", None, "control character U+000A"),
        ("live", "rtmp://127.0.0.1/live\x00", "invalid tcUrl"),
        ("live?token=a\rb", None, "invalid query"),
        ("a" * 201, None, "201 bytes long"),
    ],
    ids=["newline-in-app", "nul-in-tcurl", "cr-in-query", "long-app"],
)
async def test_a_refused_connect_answers_an_error_with_the_reason(
    app: App, log_lines: LogLines, tmp_path: Path, app_name: str, tc_url: str | None, why: str
) -> None:
    client, reply = await connected(app.port("rtmp"), app_name, tc_url)
    await client.close()
    assert reply.name == "_error", reply
    info = reply.values[1]
    assert info["code"] == "NetConnection.Connect.Rejected" and why in info["description"], info
    await nothing_left(app, tmp_path / "hls")
    events = log_lines.events()
    one_client(events)
    closes = [e for e in events if e["event"] == "close"]
    assert len(closes) == 1 and closes[0]["reason"] == f"connect rejected: {info['description']}"
    connects = [e for e in events if e["event"] == "connect" and "tcUrl" in e]
    assert len(connects) == 1 and connects[0]["app"] == app_name.split("?", 1)[0]


async def test_what_a_client_says_about_itself_is_logged_escaped_on_the_connect_line(
    app: App, log_lines: LogLines
) -> None:
    port = app.port("rtmp")
    client, reply = await connected(
        port, "live", f"rtmp://127.0.0.1:{port}/live?vhost=x&token=secret",
        pageUrl="http://example.com/p?k=secret\nevent=forged", swfUrl="sw\"f\\ url", flashVer=FORGED,
    )
    await client.close()
    assert reply.name == "_result"  # these do not name anything: logged, not refused
    (line,) = [e for e in log_lines.events("connect") if "tcUrl" in e]
    assert line["tcUrl"] == f"rtmp://127.0.0.1:{port}/live?vhost=***&token=***"  # the URL kept, the query masked
    assert line["pageUrl"] == "http://example.com/p?k=***"  # (parse_qsl stops at the newline: still masked)
    assert line["swfUrl"] == "sw\"f\\ url" and line["flashVer"] == FORGED


ODD_BUT_VALID = ["a b", 'we"ird\\name', "x=y", "直播", "..", "-_.~", "t" * 200]


async def test_odd_but_valid_names_publish_and_stay_one_field_in_logs_and_metrics(
    app: App, log_lines: LogLines
) -> None:
    port = app.port("rtmp")
    for name in ODD_BUT_VALID:
        pub = await RTMPClient.open(port)
        try:
            await pub.publish(name, port=port)
            for type_id, payload in ((m.VIDEO, AVC_SEQUENCE_HEADER), (m.AUDIO, AAC_SEQUENCE_HEADER), (m.VIDEO, keyframe(0))):
                pub.send_media(type_id, 0, payload)
            await pub.drain()
            await pub.barrier()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{app.port('api')}/metrics") as r:
                    text = await r.text()
            labels = {sample.labels.get("stream") for fam in text_string_to_metric_families(text)
                      if fam.name == "livesrv_stream_live" for sample in fam.samples}
            assert labels == {f"/live/{name}"}, labels  # prometheus-client escaped '"' and '\\'; parsed back
        finally:
            await pub.close()
        await wait_until(lambda: not app.rtmp.connections and not app.hub.streams, 10, "the publisher and its stream to go")
    published = [e["stream"] for e in log_lines.events("publish")]
    assert published == [f"/live/{name}" for name in ODD_BUT_VALID]


# ------------------------------------------------------------------------------------------------- HTTP


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=BAD_NAMES, suffix=st.sampled_from([".flv", ".ts", ".m3u8"]), ws=st.booleans())
@example(raw=FORGED.encode(), suffix=".flv", ws=False)
@example(raw=b"a\nb", suffix=".flv", ws=True)
@example(raw=b"a\nb", suffix=".m3u8", ws=False)
@example(raw=b"x" * 3000, suffix=".flv", ws=False)
async def test_a_live_url_with_a_bad_name_is_a_400_and_leaves_nothing(
    app: App, log_lines: LogLines, tmp_path: Path, raw: bytes, suffix: str, ws: bool
) -> None:
    log_lines.clear()
    # Percent-encoded: h11 refuses raw control characters and bytes above 0x7e in a request target.
    target = "/live/" + urlquote(raw, safe="") + suffix + "?token=abc"
    headers = "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" if ws else ""
    status, body = await http_raw(app.port("http"), target, headers=headers)
    if suffix == ".m3u8" and len(raw) + len(suffix) <= 255 and _printable_utf8(raw):
        # Only too long for a stream name: still a possible file name under hls_path, so simply not found.
        assert status == 404, (target, status, body)
        await nothing_left(app, tmp_path / "hls")
        return
    assert status == 400, (target, status, body)
    assert body.startswith(b"bad request: invalid ") and body.count(b"\n") == 1, body
    await nothing_left(app, tmp_path / "hls")
    (refused,) = log_lines.events()
    assert refused["event"] == "play-rejected" and refused["reason"] == body.decode()[len("bad request: "):-1]


async def test_a_raw_control_character_in_a_request_target_is_a_400(app: App, log_lines: LogLines) -> None:
    for target in ("/live/a\x01b.flv", "/live/a\x7fb.ts", "/live/a\tb.m3u8"):
        log_lines.clear()
        status, _ = await http_raw(app.port("http"), target)
        assert status == 400, target
        assert not app.hub.streams
        assert len(log_lines.lines()) == 1  # (h11 refuses it; one record, one line)


@pytest.mark.parametrize("target", [
    "/live/a%20b.flv", "/live/te-st_1.2~x.flv?token=abc&vhost=v", "/live/sub/stream.flv", "/live/%E7%9B%B4.flv",
    "/live/a%20b.ts", "/live/sub/x.ts?token=1",
])
async def test_names_that_work_today_still_do_over_http(app: App, target: str) -> None:
    status, _ = await http_raw(app.port("http"), target, method="HEAD")
    assert status == 200, target
