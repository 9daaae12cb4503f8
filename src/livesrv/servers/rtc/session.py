"""What a WHEP viewer and a WHIP publisher share: one aiortc peer connection, a client of the hub's registry,
and its end (DELETE, ICE/DTLS failure or consent timeout, kicked, no connection within ``stun_timeout``),
which releases everything it holds exactly once."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from livesrv import stats
from livesrv.hub.clients import HookContext, new_client_id
from livesrv.hub.keys import StreamKey
from livesrv.log import client_event
from livesrv.servers.rtc import ice

log = logging.getLogger("livesrv.rtc")

#: Seconds ``pc.close()`` may take (it says goodbye over DTLS) before the session is forgotten anyway.
CLOSE_TIMEOUT = 5.0


def codecs(kind: str) -> list[Any]:
    """The codecs the server negotiates for ``kind``: H.264 (with its RTX) or Opus."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    want = "video/h264" if kind == "video" else "audio/opus"
    return [c for c in caps if c.mimeType.lower() in (want, "video/rtx")] if kind == "video" else \
        [c for c in caps if c.mimeType.lower() == want]


class Host(Protocol):
    """What a session needs from the service that owns it (:class:`~.service.RtcService`)."""

    tasks: set[asyncio.Task[None]]

    def forget(self, session: RtcSession) -> None: ...

    def vhost_rtc(self, vhost: str) -> Any: ...

    def keep_bframe(self, vhost: str) -> bool: ...

    def vhost_publish(self, vhost: str) -> Any: ...


class RtcSession:
    """One peer connection and the client it is in the hub's registry."""

    protocol = "rtc"
    kind = ""  # PUBLISHER or VIEWER
    action = ""  # "play" or "publish", for logs and the Location

    def __init__(self, service: Host, ip: str, key: StreamKey, plan: ice.IcePlan) -> None:
        self.service = service
        self.cid = new_client_id()
        self.ip = ip
        self.key = key
        self.plan = plan
        self.token = secrets.token_hex(16)
        self.context = HookContext(self.cid, ip, key.vhost, key.app, key.stream)
        self.started = time.time()
        self.recv_bytes = 0
        self.send_bytes = 0
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: only this machine's addresses
        self.closed = False
        self.reason = ""
        self.registered = False
        self.connected = False
        self._deadline: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self.on_end: list[Callable[[], None]] = []  # released exactly once, in order, when the session ends
        self.pc.on("connectionstatechange", self._state_changed)

    # --------------------------------------------------------------------------------- negotiation

    async def answer(self, offer: str) -> str:
        """Apply the offer (transceivers must exist already) and return the answer SDP, every candidate in it."""
        if self.plan.loopback_only:
            offer = ice.loopback_offer(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        if self.plan.loopback_only:
            ice.guard_loopback(self.pc)
        return ice.announce(self.pc.localDescription.sdp, self.plan.announce)

    def arm(self, timeout: float) -> None:
        """The peer has ``timeout`` seconds to connect (ICE and DTLS), else the session ends."""
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._connect_timeout, timeout)

    def _connect_timeout(self, timeout: float) -> None:
        self._deadline = None
        if not self.connected:
            self.close(f"no WebRTC connection within {timeout:g}s (stun_timeout)", logging.WARNING)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected:
            self.connected = True
            client_event(log, "rtc-connected", self.cid, self.ip, self.key, level=logging.DEBUG, action=self.action)
            self.on_connected()
        elif state in ("failed", "closed") and not self.closed:
            why = "consent expired or DTLS closed" if self.connected else "ICE or DTLS failed"
            self.close(f"WebRTC connection {state} ({why})", logging.INFO if state == "closed" else logging.WARNING)

    def on_connected(self) -> None:
        """ICE and DTLS are up."""

    # --------------------------------------------------------------------------------- the end

    def kick(self, reason: str) -> None:
        self.close(reason, logging.WARNING)

    def close(self, reason: str, level: int = logging.INFO) -> None:
        """End the session: what it holds is released now, the peer connection closes in the background."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        callbacks, self.on_end = self.on_end, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - every release must run
                log.exception("event=rtc-release-error client=%s", self.cid)
        self.service.forget(self)
        if self.registered:  # (it was a client: its totals move to the closed ones in this same step)
            stats.connection_closed("rtc", self.recv_bytes, self.send_bytes, level >= logging.WARNING)
        client_event(log, "close", self.cid, self.ip, self.key, reason, level, protocol="rtc", action=self.action,
                     recv_bytes=self.recv_bytes, send_bytes=self.send_bytes)
        self._closing = asyncio.get_running_loop().create_task(self._close_pc(), name=f"rtc-close {self.cid}")
        self.service.tasks.add(self._closing)
        self._closing.add_done_callback(self.service.tasks.discard)

    async def _close_pc(self) -> None:
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - a peer that misbehaves while closing changes nothing
            pass

    def location(self) -> str:
        path = "whep" if self.action == "play" else "whip"
        return (f"/rtc/v1/{path}/?action=delete&token={self.token}&app={quote(self.key.app, safe='')}"
                f"&stream={quote(self.key.stream, safe='')}&session={self.cid}")
