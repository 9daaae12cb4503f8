"""WHIP publish: a browser or OBS publishes over WebRTC, and the stream enters the hub like an RTMP publish.

The publisher claims the stream (``hub.begin_publish``: takeover rules, state machine), its ``on_publish`` hook
is awaited with the claim held, and ``token.ready()`` makes it live, all before the 201; ``release`` when the
session ends (DELETE, ICE/DTLS failure or consent timeout, kicked, taken over). Its media becomes FLV packets:
each H.264 access unit is an AVC frame (the AVC sequence header built from the SPS/PPS the browser sends with
its keyframes), Opus is transcoded to AAC once, in the audio thread. Timestamps: each track's RTP clock, from
the wall-clock moment its first frame arrived, so audio and video start together.

aiortc's receiver only yields decoded frames; the encoded ones are taken where its jitter buffer hands them to
its decoder thread (see :class:`_Tap`), so nothing is decoded or re-encoded but the audio.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from typing import TYPE_CHECKING, Any

from livesrv.codec.avc import AVCError
from livesrv.codec.webrtc import annexb_access_unit, flv_aac_sequence_header, flv_aac_tag, flv_avc_sequence_header, flv_avc_tag
from livesrv.hub.clients import PUBLISHER
from livesrv.log import client_event
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from livesrv.servers.rtc.session import Host, RtcSession, codecs
from livesrv.servers.rtc.transcode import OpusToAac, Worker

if TYPE_CHECKING:
    from livesrv.hub.hub import PublishToken

log = logging.getLogger("livesrv.rtc")


class _Tap(queue.Queue):  # type: ignore[type-arg]
    """Stands in for an aiortc receiver's decoder queue: encoded frames go to ``deliver`` (on the event loop,
    where the receiver puts them); the end marker still reaches the idle decoder thread, which then exits."""

    def __init__(self, deliver: Any) -> None:
        super().__init__()
        self.deliver = deliver

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
        else:
            self.deliver(*item)


class WhipPublisher(RtcSession):
    kind = PUBLISHER
    action = "publish"

    def __init__(self, service: Host, ip: str, key: Any, plan: Any, kinds: list[str]) -> None:
        super().__init__(service, ip, key, plan)
        self.token_: PublishToken | None = None
        self.kinds = []
        for kind in kinds:
            if kind in self.kinds:
                continue
            self.kinds.append(kind)
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(codecs(kind))
        self.t0 = self.last_frame = time.monotonic()
        self.bases: dict[str, float] = {}  # track -> ms at its RTP timestamp 0
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.header: bytes | None = None
        self.got_keyframe = False
        self.worker: Worker | None = None
        self.aac: OpusToAac | None = None
        self.aac_header_sent = False
        self._pli: asyncio.Task[None] | None = None
        self.on_end.append(self._stop_media)

    def tap(self) -> None:
        """Take the encoded frames from each receiver (called after the answer, before any media)."""
        for t in self.pc.getTransceivers():
            receiver = t.receiver
            kind = t.kind
            attr = "_RTCRtpReceiver__decoder_queue"
            if receiver is None or not hasattr(receiver, attr):
                raise RuntimeError("this aiortc version has no receiver decoder queue to read encoded frames from")
            setattr(receiver, attr, _Tap(lambda codec, frame, k=kind: self._frame(k, frame)))

    # --------------------------------------------------------------------------------- hub

    def start(self, token: PublishToken) -> None:
        self.token_ = token
        vrtc = self.service.vhost_rtc(self.key.vhost)
        try:
            self.aac = OpusToAac(vrtc.aac_bitrate)
        except Exception as exc:  # noqa: BLE001 - no AAC encoder: the video still goes on
            client_event(log, "rtc-audio-failed", self.cid, self.ip, self.key, f"no AAC encoder: {exc!r}",
                         logging.ERROR)
            self.aac = None
        else:
            self.worker = Worker(str(self.key), self._aac_frames)

    def on_connected(self) -> None:
        self.t0 = self.last_frame = time.monotonic()
        self._pli = asyncio.get_running_loop().create_task(self._watch(), name=f"rtc-publisher {self.cid}")

    async def _watch(self) -> None:
        """Ask the browser for a keyframe at once, then every ``pli_for_rtmp`` seconds (SRS): RTMP, FLV and HLS
        viewers join at keyframes, which a WebRTC encoder otherwise sends only when asked. And close a publisher
        that sends nothing (``publish { firstpkt_timeout; normal_timeout; }``, as for RTMP)."""
        pli_every = self.service.vhost_rtc(self.key.vhost).pli_for_rtmp
        publish = self.service.vhost_publish(self.key.vhost)
        next_pli = time.monotonic() + 0.2
        while not self.closed:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            silent_ms = (now - self.last_frame) * 1000
            limit = publish.normal_timeout if self.recv_bytes else publish.firstpkt_timeout
            if silent_ms > max(limit, 1000):
                self.close(f"publisher sent no media for {limit}ms", logging.WARNING)
                return
            if "video" not in self.kinds or now < next_pli:
                continue
            next_pli = now + (pli_every if self.got_keyframe else 0.5)
            for t in self.pc.getTransceivers():
                if t.kind != "video" or t.receiver is None:
                    continue
                for src in t.receiver.getSynchronizationSources():
                    try:
                        await t.receiver._send_rtcp_pli(src.source)
                    except Exception:  # noqa: BLE001 - a PLI that cannot go out now goes out next time
                        pass

    def _ms(self, kind: str, rtp: int, clock: int) -> int:
        base = self.bases.get(kind)
        if base is None:
            base = self.bases[kind] = (time.monotonic() - self.t0) * 1000 - rtp * 1000 / clock
        return max(0, int(base + rtp * 1000 / clock))

    def _ingest(self, pkt: MediaPacket) -> None:
        token = self.token_
        if token is not None and not self.closed:
            token.stream.ingest(token.generation, pkt)

    # --------------------------------------------------------------------------------- media

    def _frame(self, kind: str, frame: Any) -> None:
        if self.closed:
            return
        data = bytes(frame.data)
        self.recv_bytes += len(data)
        self.last_frame = time.monotonic()
        if kind == "video":
            self._video(data, frame.timestamp)
        elif self.worker is not None and self.aac is not None:
            self.worker.submit(self.aac.feed, data, self._ms("audio", frame.timestamp, 48000))

    def _video(self, data: bytes, rtp: int) -> None:
        au = annexb_access_unit(data)
        if au.sps is not None:
            self.sps = au.sps
        if au.pps is not None:
            self.pps = au.pps
        if not au.avcc:
            return
        if au.idr and self.sps is not None and self.pps is not None:
            try:
                header = flv_avc_sequence_header(self.sps, self.pps)
            except AVCError:
                return
            ms = self._ms("video", rtp, 90000)
            if header != self.header:
                self.header = header
                self._ingest(MediaPacket(VIDEO, ms, header, True, True))
            self.got_keyframe = True
        elif not self.got_keyframe:
            return  # nothing decodes before the first keyframe (its PLI is on the way)
        ms = self._ms("video", rtp, 90000)
        self._ingest(MediaPacket(VIDEO, ms, flv_avc_tag(au.avcc, au.idr), au.idr, False))

    def _aac_frames(self, frames: list[tuple[bytes, int]]) -> None:
        if self.aac is None or not frames:
            return
        if not self.aac_header_sent:
            self.aac_header_sent = True
            self._ingest(MediaPacket(AUDIO, max(0, frames[0][1]), flv_aac_sequence_header(self.aac.asc), False, True))
        for raw, ms in frames:
            self._ingest(MediaPacket(AUDIO, max(0, ms), flv_aac_tag(raw)))

    def _stop_media(self) -> None:
        if self._pli is not None:
            self._pli.cancel()
        if self.worker is not None:
            self.worker.close()
        token, self.token_ = self.token_, None
        if token is not None:
            token.release(f"WebRTC publisher closed: {self.reason}")
