"""Issue 19, as a new user tried it: a stream name that forges log lines, a NUL byte, 3,000 characters.

The publisher is livesrv's RTMP test client (no tool would send such names); the log is read as an operator's
file would hold it, through livesrv.log's own formatter. Each name is refused with a description that says
why, nothing is created for it (no stream, no HLS file), and no line of the log was written by the client.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from livesrv.codec.rtmp.client import StatusEvent
from tests.helpers import LOG_LINE, LogLines, http_raw, parse_event, wait_until
from tests.servers.rtmp_client import RTMPClient

FORGED_PREFIX = "[2026-11-30 00:00:00,000]"
FORGED = f"cam\n{FORGED_PREFIX}[INFO][livesrv.rtmp] event=publish client=FORGED ip=6.6.6.6 stream=/live/forged"


def assert_no_forged_line(log: LogLines) -> None:
    lines = log.lines()  # (each checked to be one record of the log format)
    assert lines
    for line in lines:
        assert not line.startswith(FORGED_PREFIX), line
        message = LOG_LINE.fullmatch(line)["message"]  # type: ignore[index]
        assert not message.startswith("event=publish client=FORGED"), line
    assert all(e.get("client") != "FORGED" for e in log.events())
    assert not log.events("publish")  # nobody published


@pytest.mark.parametrize(
    ("name", "why"),
    [(FORGED, "control character U+000A"), ("cam\x00era", "control character U+0000"),
     ("x" * 3000, "3000 bytes long, at most 200 allowed")],
    ids=["forged-log-line", "nul-byte", "3000-characters"],
)
async def test_a_bad_stream_name_is_refused_and_forges_nothing(
    make_server, log_lines: LogLines, tmp_path: Path, name: str, why: str  # type: ignore[no-untyped-def]
) -> None:
    hls_path = tmp_path / "hls"
    app = await make_server(vhost=f"hls {{ enabled on; hls_fragment 1; hls_path {hls_path}; }}")
    port = app.port("rtmp")
    pub = await RTMPClient.open(port)
    try:
        await pub.connect("live", port)
        sid = await pub.create_stream()
        pub.session.publish(sid, name)
        await pub.drain()
        status = await pub.wait_event(lambda e: isinstance(e, StatusEvent) and e.code.startswith("NetStream.Publish."),
                                      "the publish answer")
    finally:
        await pub.close()
    assert isinstance(status, StatusEvent)
    assert status.level == "error" and status.code == "NetStream.Publish.BadName", status
    assert why in status.description and status.description.startswith("invalid "), status.description

    await wait_until(lambda: not app.rtmp.connections, 10, "the refused publisher to be closed")
    assert not app.hub.streams
    assert not hls_path.exists() or not any(p.is_file() for p in hls_path.rglob("*"))
    (rejected,) = log_lines.events("publish-rejected")
    assert rejected["reason"] == status.description
    assert_no_forged_line(log_lines)


async def test_the_forging_name_in_an_http_flv_url_is_a_400(make_server, log_lines: LogLines) -> None:  # type: ignore[no-untyped-def]
    app = await make_server()
    port = app.port("http")
    log_lines.clear()  # (the ready line)
    status, body = await http_raw(port, "/live/" + quote(FORGED, safe="") + ".flv")
    assert status == 400 and b"control character U+000A" in body, body
    status, _ = await http_raw(port, "/live/cam\x0bforged.flv")  # raw: refused by the HTTP parser itself
    assert status == 400
    assert not app.hub.streams
    lines = log_lines.lines()
    assert len(lines) == 2 and not any(line.startswith(FORGED_PREFIX) for line in lines), lines
    refused = parse_event(LOG_LINE.fullmatch(lines[0])["message"])  # type: ignore[index]
    assert refused["event"] == "play-rejected" and refused["stream"] == "/live/" + FORGED  # all of it, escaped
    assert "event=http-bad-request" in lines[1]  # (h11's line, with its reason as a Python literal)
