"""WHIP with aiortc as the publisher: the stream enters the hub and plays over HTTP-FLV and RTMP (ffprobe)."""

from __future__ import annotations

import json

import pytest
from aiortc.contrib.media import MediaPlayer

from tests.helpers import require_tool, wait_until
from tests.rtc.helpers import RtcClient, post_sdp

pytestmark = pytest.mark.e2e


async def ffprobe_streams(procs, url: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rc, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-rw_timeout", "15000000",
                                   "-show_entries", "stream=codec_type,codec_name", "-of", "json", url, timeout=40)
    assert rc == 0, err.decode(errors="replace")
    return {s["codec_type"]: s["codec_name"] for s in json.loads(out)["streams"]}


async def test_whip_publish_plays_over_flv_and_rtmp(rtc_server, rtc_clients, procs, sample_flv,  # type: ignore[no-untyped-def]
                                                    hook_server) -> None:
    app = rtc_server
    player = MediaPlayer(str(sample_flv), loop=True)
    client = RtcClient()
    rtc_clients.append(client)
    try:
        assert await client.publish(app.port("api"), [player.video, player.audio]) == 201, getattr(client, "error", "")
        await wait_until(lambda: any(s.live and s.gop.gop and s.gop.audio_header for s in app.hub.streams.values()),
                         20, "the WHIP stream to go live with video and audio")
        (pub,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
        assert pub.kind == "publisher"
        flv = await ffprobe_streams(procs, f"http://127.0.0.1:{app.port('http')}/live/test.flv")
        assert flv == {"video": "h264", "audio": "aac"}
        rtmp = await ffprobe_streams(procs, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test")
        assert rtmp == {"video": "h264", "audio": "aac"}
        status, _, _ = await post_sdp(app.port("api"), client.location, b"", method="DELETE")
        assert status == 200
        await wait_until(lambda: not any(s.live for s in app.hub.streams.values()), 5, "the stream to unpublish")
        assert not [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    finally:
        for t in (player.video, player.audio):
            t.stop()
