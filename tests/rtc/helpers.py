"""WebRTC test helpers: a server with WebRTC on loopback, and aiortc as a WHEP/WHIP client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.helpers import Procs, require_tool

#: WebRTC on loopback only: the server offers 127.0.0.1 and nothing else; a peer is gone after ~6 s of silence.
RTC_EXTRA = "rtc_server { enabled on; listen 8000; candidate 127.0.0.1; }"
RTC_VHOST = "rtc { enabled on; rtmp_to_rtc on; rtc_to_rtmp on; stun_timeout 6; pli_for_rtmp 1; }"


async def post_sdp(port: int, path: str, body: bytes | str, method: str = "POST",
                   headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"http://127.0.0.1:{port}{path}", data=body,
                                headers={"Content-Type": "application/sdp", **(headers or {})}) as resp:
            return resp.status, await resp.text(), dict(resp.headers)


class RtcClient:
    """aiortc as a WHEP player or WHIP publisher against livesrv."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict[str, Any] = {}
        self.location = ""
        self.answer = ""
        self.error = ""
        self.pc.on("track", lambda track: self.tracks.__setitem__(track.kind, track))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def play(self, port: int, stream: str = "test", kinds: tuple[str, ...] = ("video", "audio")) -> int:
        for kind in kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        return await self._exchange(port, f"/rtc/v1/whep/?app=live&stream={stream}")

    async def publish(self, port: int, tracks: list[Any], stream: str = "test") -> int:
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        return await self._exchange(port, f"/rtc/v1/whip/?app=live&stream={stream}")

    async def _exchange(self, port: int, path: str) -> int:
        status, body, headers = await post_sdp(port, path, await self.offer())
        if status != 201:
            self.error = body
            return status
        self.location = headers["Location"]
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        return status

    async def frames(self, kind: str, n: int, timeout: float = 20) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while kind not in self.tracks:
            if loop.time() > deadline:
                raise AssertionError(f"no {kind} track within {timeout}s")
            await asyncio.sleep(0.05)
        out = []
        while len(out) < n:
            out.append(await asyncio.wait_for(self.tracks[kind].recv(), max(0.1, deadline - loop.time())))
        return out

    async def close(self) -> None:
        await self.pc.close()


async def ffprobe_streams(procs: Procs, url: str) -> dict[str, dict[str, Any]]:
    """What ffprobe reads from a live URL: its streams by codec type (codec_name, width, height, sample_rate)."""
    rc, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-rw_timeout", "15000000",
                                   "-show_entries", "stream=codec_type,codec_name,width,height,sample_rate",
                                   "-of", "json", url, timeout=40)
    assert rc == 0, err.decode(errors="replace")
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}
