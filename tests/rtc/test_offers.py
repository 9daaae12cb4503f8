"""Bad and hostile offers each get a clear 4xx and leave nothing behind; the server and a WebRTC viewer that
is already playing go on. Hooks and security apply to WebRTC clients; a vanished peer is cleaned up."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import ffmpeg_publish_args, wait_until
from tests.hooks.hook_server import ACCEPT_ZERO, REJECT_CODE1
from tests.rtc.helpers import RTC_EXTRA, RTC_VHOST, RtcClient, post_sdp

pytestmark = pytest.mark.e2e

_MEDIA = ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
          "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
          "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")
HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"

BAD_OFFERS = {
    "empty": (b"", "empty offer"),
    "garbage": (bytes(range(256)) * 4, "not UTF-8"),
    "not-sdp": (b"hello world, this is not SDP\n", "must start with v=0"),
    "huge": ((HEAD + "a=x:" + "y" * 70000 + "\r\n").encode(), "over 65536 bytes"),
    "too-many-lines": ((HEAD + "m=audio 9 RTP/AVP 0\r\n" * 20).encode(), "more than 8 media"),
    "no-media": (HEAD.encode(), "no audio or video"),
    "datachannel-only": ((HEAD + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n").encode(), "no audio or video"),
    "vp8-only": ((HEAD + _MEDIA + "a=rtpmap:96 VP8/90000\r\n").encode(), "no H.264"),
    "h264-mode0": ((HEAD + _MEDIA + "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=0\r\n").encode(), "no H.264"),
    "pcmu-audio": ((HEAD + _MEDIA.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 0")
                    + "a=rtpmap:0 PCMU/8000\r\n").encode(), "no Opus"),
    "no-fingerprint": ((HEAD + _MEDIA.split("a=fingerprint")[0] + "a=rtpmap:96 H264/90000\r\n"
                        "a=fmtp:96 packetization-mode=1\r\n").encode(), "no a=fingerprint"),
    "control-char": ((HEAD + "a=tool:x\x00y\r\n" + _MEDIA).encode(), "control character"),
    "sendonly-for-whep": ((HEAD + _MEDIA.replace("a=recvonly", "a=sendonly") + "a=rtpmap:96 H264/90000\r\n"
                           "a=fmtp:96 packetization-mode=1\r\n").encode(), "must receive"),
    "bad-candidate": ((HEAD + _MEDIA + "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
                       "a=candidate:1 1 udp\r\n").encode(), "cannot answer"),
}


async def test_bad_offers_are_refused_and_a_viewer_plays_on(rtc_server, rtc_clients, procs,  # type: ignore[no-untyped-def]
                                                            sample_flv) -> None:
    app = rtc_server
    api = app.port("api")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    good = RtcClient()
    rtc_clients.append(good)
    assert await good.play(api) == 201
    await good.frames("video", 5)
    before = set(app.hub.clients)
    for name, (body, reason) in BAD_OFFERS.items():
        for path in ("/rtc/v1/whep/?app=live&stream=test", "/rtc/v1/whep/?app=live&stream=other"):
            status, text, _ = await post_sdp(api, path, body)
            assert status == 400, (name, status, text)
            assert reason in text, (name, text)
        assert set(app.hub.clients) == before, name
        assert [str(k) for k in app.hub.streams] == ["/live/test"], name
    # WHIP too, and names that no stream may have
    status, text, _ = await post_sdp(api, "/rtc/v1/whip/?app=live&stream=x", b"v=0\r\n")
    assert status == 400 and "no audio or video" in text
    status, text, _ = await post_sdp(api, "/rtc/v1/whip/?app=live&stream=a%00b", BAD_OFFERS["vp8-only"][0])
    assert status == 400 and "control character" in text
    status, text, _ = await post_sdp(api, "/rtc/v1/whep/?app=live&stream=test", b"x", method="GET")
    assert status == 405
    # over the API's max_body_size (1 MiB): the HTTP layer refuses it before reading it all
    status, _, _ = await post_sdp(api, "/rtc/v1/whep/?app=live&stream=test", b"v=0\r\n" + b"a" * (2 << 20))
    assert status == 413
    assert set(app.hub.clients) == before and len(app.hub.streams) == 1
    # the viewer that was playing goes on
    frames = await good.frames("video", 25)
    assert len(frames) == 25


async def test_hooks_and_security_apply(make_server, hook_server, rtc_clients, procs, sample_flv):  # type: ignore[no-untyped-def]
    hooks = (f"http_hooks {{ enabled on; on_play {hook_server.url('on_play')}; on_stop {hook_server.url('on_stop')}; "
             f"on_publish {hook_server.url('on_publish')}; on_unpublish {hook_server.url('on_unpublish')}; }}")
    secure = "vhost secure { rtc { enabled on; rtmp_to_rtc on; } security { enabled on; deny play all; deny publish all; } }"
    app = await make_server(RTC_EXTRA + secure, RTC_VHOST + hooks)
    api = app.port("api")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    # security: the vhost denies WebRTC play and publish from here
    pub = RtcClient()
    rtc_clients.append(pub)
    offer = await _offer(pub, "sendonly")
    status, text, _ = await post_sdp(api, "/rtc/v1/whip/?app=live&stream=w&vhost=secure", offer)
    assert status == 403 and "security" in text, text
    status, text, _ = await post_sdp(api, "/rtc/v1/whep/?app=live&stream=test&vhost=secure", BAD_OFFERS["vp8-only"][0])
    assert status == 403 and "security" in text, text
    # on_publish refuses a WHIP publisher: its claim on the stream is released, nothing is left
    hook_server.set_answer(REJECT_CODE1, stream="w", hook="on_publish")
    status, text, _ = await post_sdp(api, "/rtc/v1/whip/?app=live&stream=w", offer)
    assert status == 403 and "on_publish refused" in text, text
    assert [str(k) for k in app.hub.streams] == ["/live/test"]
    # an accepted WHIP publisher: on_publish, then on_unpublish when it ends
    hook_server.set_answer(ACCEPT_ZERO, stream="w", hook="on_publish")
    status, answer, headers = await post_sdp(api, "/rtc/v1/whip/?app=live&stream=w&token=pub", offer)
    assert status == 201, answer
    assert hook_server.calls_for("on_publish")[-1].payload["param"] == "?token=pub"
    assert (await post_sdp(api, headers["Location"], b"", method="DELETE"))[0] == 200
    unpublish = (await hook_server.wait_call("on_unpublish")).payload
    assert unpublish["stream"] == "w" and unpublish["param"] == "?token=pub"
    # on_play refuses one stream name, accepts another (with its token in param)
    hook_server.set_answer(REJECT_CODE1, stream="test", hook="on_play")
    refused = RtcClient()
    rtc_clients.append(refused)
    assert await refused.play(api) == 403 and "on_play refused" in refused.error
    assert not [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    hook_server.set_answer(ACCEPT_ZERO, stream="test", hook="on_play")
    ok = RtcClient()
    rtc_clients.append(ok)
    for kind in ("video", "audio"):
        ok.pc.addTransceiver(kind, direction="recvonly")
    status, body, headers = await post_sdp(api, "/rtc/v1/whep/?app=live&stream=test&token=s3cret", await ok.offer())
    assert status == 201
    call = (hook_server.calls_for("on_play"))[-1]
    assert call.payload["param"] == "?token=s3cret" and call.payload["stream"] == "test"
    from aiortc import RTCSessionDescription
    await ok.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    ok.location = headers["Location"]
    await ok.frames("video", 3)
    await post_sdp(api, ok.location, b"", method="DELETE")
    await hook_server.wait_call("on_stop")


async def _offer(client: RtcClient, direction: str) -> str:
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    if direction == "sendonly":
        client.pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        client.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    return await client.offer()


async def test_a_vanished_peer_is_cleaned_up(rtc_server, procs, sample_flv):  # type: ignore[no-untyped-def]
    """A player that goes away without DELETE (its machine dropped off): its consent checks fail, the session
    ends after about stun_timeout (6 s here) and everything it held is released."""
    app = rtc_server
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    client = RtcClient()
    assert await client.play(app.port("api")) == 201
    await client.frames("video", 3)
    # vanish: stop answering anything, with no goodbye (no DTLS close alert, no DELETE)
    for t in client.pc.getTransceivers():
        conn = t.receiver.transport.transport.iceGatherer._connection
        for proto in conn._protocols:
            proto.transport.abort()
    await wait_until(lambda: not [c for c in app.hub.clients.values() if c.protocol == "rtc"], 30,
                     "the vanished viewer to be cleaned up")
    stream = next(iter(app.hub.streams.values()))
    assert not [v for v in stream.viewers.values() if v.protocol == "rtc"] and "rtc" not in stream.extra
    await asyncio.wait_for(client.pc.close(), 10)


async def test_an_offer_that_never_connects_is_dropped(rtc_server):  # type: ignore[no-untyped-def]
    """A valid offer whose peer never connects (no ICE): the session ends after stun_timeout."""
    app = rtc_server
    client = RtcClient()
    for kind in ("video", "audio"):
        client.pc.addTransceiver(kind, direction="recvonly")
    status, _, _ = await post_sdp(app.port("api"), "/rtc/v1/whep/?app=live&stream=test", await client.offer())
    assert status == 201
    await client.pc.close()  # never sets the answer: no connectivity check ever comes
    assert [c for c in app.hub.clients.values() if c.protocol == "rtc"]
    await wait_until(lambda: not app.hub.clients and not app.hub.streams, 15, "the session to time out")
