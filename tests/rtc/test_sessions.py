"""WebRTC clients in the hub: candidates on loopback only, a viewer that waits for its publisher, takeover rules
between WHIP and RTMP publishers, the API's client list and kick."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiortc.contrib.media import MediaPlayer

from tests.helpers import ffmpeg_publish_args, wait_until
from tests.rtc.helpers import RTC_EXTRA, RTC_VHOST, RtcClient

pytestmark = pytest.mark.e2e


def candidates(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_a_viewer_waits_for_its_publisher_and_only_loopback_is_offered(rtc_server, rtc_clients, procs,  # type: ignore[no-untyped-def]
                                                                              sample_flv) -> None:
    app = rtc_server
    client = RtcClient()
    rtc_clients.append(client)
    assert await client.play(app.port("api")) == 201
    assert candidates(client.answer) and set(candidates(client.answer)) == {"127.0.0.1"}, client.answer
    await wait_until(lambda: client.pc.connectionState == "connected", 10, "the WebRTC connection")
    stream = next(iter(app.hub.streams.values()))
    assert not stream.live and [v.protocol for v in stream.viewers.values()] == ["rtc"]
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    video = await client.frames("video", 10)
    assert video[0].width == 320
    await client.frames("audio", 5)


async def get_json(port: int, path: str, method: str = "GET") -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"http://127.0.0.1:{port}{path}") as resp:
            return json.loads(await resp.text())


async def test_api_lists_and_kicks_webrtc_clients(rtc_server, rtc_clients, procs, sample_flv):  # type: ignore[no-untyped-def]
    app = rtc_server
    api = app.port("api")
    player = MediaPlayer(str(sample_flv), loop=True)
    pub = RtcClient()
    rtc_clients.append(pub)
    try:
        assert await pub.publish(api, [player.video, player.audio]) == 201
        await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the WHIP stream")
        viewer = RtcClient()
        rtc_clients.append(viewer)
        assert await viewer.play(api) == 201
        await viewer.frames("video", 5)
        clients = (await get_json(api, "/api/v1/clients"))["clients"]
        rtc = {c["kind"]: c for c in clients if c["protocol"] == "rtc"}
        assert set(rtc) == {"publisher", "viewer"}, clients
        assert rtc["publisher"]["publish"] and rtc["publisher"]["recv_bytes"] > 0
        assert rtc["viewer"]["type"] == "rtc-play" and rtc["viewer"]["send_bytes"] > 0
        assert rtc["viewer"]["tcUrl"].startswith("webrtc://127.0.0.1:")
        streams = (await get_json(api, "/api/v1/streams"))["streams"]
        assert streams[0]["publish"]["active"] and streams[0]["video"]["codec"] == "H264"
        # kick the viewer, then the publisher
        await get_json(api, f"/api/v1/clients/{rtc['viewer']['id']}", "DELETE")
        await wait_until(lambda: rtc["viewer"]["id"] not in app.hub.clients, 5, "the viewer to be kicked")
        await get_json(api, f"/api/v1/clients/{rtc['publisher']['id']}", "DELETE")
        await wait_until(lambda: not app.hub.clients and not any(s.live for s in app.hub.streams.values()), 5,
                         "the publisher to be kicked")
    finally:
        for t in (player.video, player.audio):
            t.stop()


@pytest.mark.parametrize("takeover", [True, False])
async def test_takeover_rules_apply_to_whip(make_server, rtc_clients, procs, sample_flv,  # type: ignore[no-untyped-def]
                                            takeover: bool) -> None:
    app = await make_server(RTC_EXTRA, RTC_VHOST + ("" if takeover else " publish { takeover off; }"))
    player = MediaPlayer(str(sample_flv), loop=True)
    try:
        first = RtcClient()
        rtc_clients.append(first)
        assert await first.publish(app.port("api"), [player.video, player.audio]) == 201
        await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the WHIP stream")
        stream = next(iter(app.hub.streams.values()))
        old = stream.publisher
        rtmp = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
        if takeover:  # the RTMP publisher takes the stream over; the WebRTC one is closed
            await wait_until(lambda: stream.live and stream.publisher not in (None, old), 20, "the takeover")
            assert getattr(stream.publisher, "protocol", "") == "rtmp"
            await wait_until(lambda: old.closed, 5, "the WHIP session to close")
            # and a WHIP publisher takes it back
            second = RtcClient()
            rtc_clients.append(second)
            assert await second.publish(app.port("api"), [player.video]) == 201
            await wait_until(lambda: getattr(stream.publisher, "protocol", "") == "rtc", 10, "the WHIP takeover")
        else:  # SRS's rule: the newcomer is refused, the WHIP publisher goes on
            assert await rtmp.wait() != 0
            assert stream.publisher is old and not old.closed
            second = RtcClient()
            rtc_clients.append(second)
            assert await second.publish(app.port("api"), [player.video]) == 409
            assert "Stream already exists or busy" in second.error
    finally:
        for t in (player.video, player.audio):
            t.stop()


async def test_a_viewer_stays_through_a_republish_and_leaves_after_the_grace(make_server, rtc_clients, procs,  # type: ignore[no-untyped-def]
                                                                             sample_flv) -> None:
    app = await make_server(RTC_EXTRA, RTC_VHOST + " play { republish_grace 2; }")
    url = f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    client = RtcClient()
    rtc_clients.append(client)
    assert await client.play(app.port("api")) == 201
    await client.frames("video", 5)
    stream = next(iter(app.hub.streams.values()))
    pub.kill()
    await wait_until(lambda: not stream.live, 10, "the publisher to be gone")
    await procs.start(*ffmpeg_publish_args(sample_flv, url))
    await wait_until(lambda: stream.live, 20, "the republish")
    frames = await client.frames("video", 30)  # the same session, the new publisher's pictures
    assert frames[-1].width == 320
    (session,) = [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    for p in procs.procs:
        if p.returncode is None:
            p.kill()
    await wait_until(lambda: session.closed, 15, "the grace period to end the session")
    assert "grace" in session.reason and not app.hub.clients


async def test_eip_announces_another_address_for_one_session(rtc_server):  # type: ignore[no-untyped-def]
    """SRS's ?eip=: the answer announces that address (a NAT's) with the ports bound here. The client never uses
    the answer (nothing is sent to that address); the session is deleted."""
    from tests.rtc.helpers import post_sdp

    app = rtc_server
    client = RtcClient()
    for kind in ("video", "audio"):
        client.pc.addTransceiver(kind, direction="recvonly")
    try:
        status, answer, headers = await post_sdp(app.port("api"), "/rtc/v1/whep/?app=live&stream=test&eip=203.0.113.9",
                                                 await client.offer())
        assert status == 201
        assert candidates(answer) and set(candidates(answer)) == {"203.0.113.9"}, answer
        assert "c=IN IP4 203.0.113.9" in answer
        assert (await post_sdp(app.port("api"), headers["Location"], b"", method="DELETE"))[0] == 200
        assert not app.hub.clients
    finally:
        await client.close()
