"""WHEP on the API's HTTPS listener (what a page loaded over HTTPS calls): aiortc plays an RTMP stream whose
offer and DELETE went over https://, as over the plain API."""

from __future__ import annotations

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from livesrv.app import App
from livesrv.config import parse_text
from tests.helpers import ffmpeg_publish_args, wait_until
from tests.rtc.helpers import RTC_EXTRA, RTC_VHOST, RtcClient
from tests.servers.tls_certs import insecure_context, self_signed_pair

pytestmark = pytest.mark.e2e


async def test_whep_over_the_https_api(rtc_clients, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pair = self_signed_pair(tmp_path / "certs", "server")
    app = App(parse_text(f"""
    listen 127.0.0.1:0;
    http_api {{ enabled on; listen 127.0.0.1:0;
               https {{ enabled on; listen 127.0.0.1:0; key {pair.key}; cert {pair.cert}; }} }}
    {RTC_EXTRA}
    vhost __defaultVhost__ {{ {RTC_VHOST} }}
    """, "<test>").config)
    await app.start()
    try:
        await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
        await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream")
        client = RtcClient()
        rtc_clients.append(client)
        for kind in ("video", "audio"):
            client.pc.addTransceiver(kind, direction="recvonly")
        api = f"https://127.0.0.1:{app.port('api_https')}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure_context())) as http:
            async with http.post(f"{api}/rtc/v1/whep/?app=live&stream=test", data=await client.offer(),
                                 headers={"Content-Type": "application/sdp"}) as resp:
                answer = await resp.text()
                assert resp.status == 201, answer
                location = resp.headers["Location"]
            await client.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            assert len(await client.frames("video", 10, 30)) == 10
            (viewer,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
            async with http.delete(f"{api}{location}") as resp:
                assert resp.status == 200
        await wait_until(lambda: viewer.cid not in app.hub.clients, 5, "the WHEP viewer to go")
        assert {c.scheme for c in app.api.connections} <= {"https"}
    finally:
        await app.stop()
