"""WHIP with aiortc as the publisher: the stream enters the hub and plays over HTTP-FLV and RTMP (ffprobe)."""

from __future__ import annotations

import pytest
from aiortc.contrib.media import MediaPlayer

from tests.helpers import wait_until
from tests.rtc.helpers import RtcClient, ffprobe_streams, post_sdp

pytestmark = pytest.mark.e2e


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
        for url in (f"http://127.0.0.1:{app.port('http')}/live/test.flv",
                    f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"):
            streams = await ffprobe_streams(procs, url)
            assert {k: v["codec_name"] for k, v in streams.items()} == {"video": "h264", "audio": "aac"}, url
            assert (streams["video"]["width"], streams["audio"]["sample_rate"]) == (320, "48000"), streams
        status, _, _ = await post_sdp(app.port("api"), client.location, b"", method="DELETE")
        assert status == 200
        await wait_until(lambda: not any(s.live for s in app.hub.streams.values()), 5, "the stream to unpublish")
        assert not [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    finally:
        for t in (player.video, player.audio):
            t.stop()
