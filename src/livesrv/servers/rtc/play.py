"""WHEP play: a stream of the hub (published over RTMP, WHIP, an edge pull...) to WebRTC viewers.

Per stream, one :class:`RtcSource` (a hub output, kept in ``stream.extra["rtc"]`` while the stream has WebRTC
viewers) gets every packet as the publisher sends it (no merged-write wait): H.264 is passed through, each
frame turned once into an Annex B access unit (SPS/PPS before each IDR, B-frames dropped unless
``keep_bframe on``) and handed to every viewer as the same ``av.Packet``; AAC is transcoded to Opus once, in
the audio thread, only while the source exists. Each viewer's aiortc sender then packetizes to RTP (FU-A,
STAP-A) and encrypts for its own peer.

Each viewer is also a hub :class:`~livesrv.hub.stream.Viewer` (with a format that writes nothing): it holds the
stream like any viewer, waits for a first publisher (``wait_timeout``), stays through a republish
(``republish_grace``), starts an edge's pull, and is closed by the hub like the others. Video starts at the
next keyframe (SRS's RTC source has no GOP cache either): the RTP timestamps then follow the stream's own, so
the browser's jitter buffer stays at the live edge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livesrv.codec import flv
from livesrv.codec.avc import AVCConfig, AVCError, parse_avc_config
from livesrv.codec.errors import ProtocolError
from livesrv.codec.webrtc import flv_avc_frame
from livesrv.hub.clients import VIEWER
from livesrv.hub.stream import Stream, Viewer
from livesrv.log import event
from livesrv.media.formats import Format
from livesrv.media.packet import AUDIO, VIDEO, MediaPacket
from livesrv.servers.rtc.session import Host, RtcSession, codecs
from livesrv.servers.rtc.transcode import OPUS_RATE, AacToOpus, Worker

log = logging.getLogger("livesrv.rtc")

MS = Fraction(1, 1000)
OPUS_TB = Fraction(1, OPUS_RATE)
#: Frames queued for one viewer's sender; past this it skips to the next keyframe (video) or drops (audio).
MAX_QUEUED = 120


class _NoBytes(Format):
    """A WebRTC viewer's hub format: media reaches it through the stream's RtcSource, not the fan-out."""

    __slots__ = ()

    def encode(self, pkts: Sequence[MediaPacket]) -> bytes:
        return b""


NO_BYTES = _NoBytes("rtc")


class _NoTransport:
    @staticmethod
    def write(data: bytes) -> None:
        pass

    @staticmethod
    def get_write_buffer_size() -> int:
        return 0


class PacketTrack(MediaStreamTrack):
    """A track whose ``recv`` returns encoded packets (aiortc's sender then only packetizes them)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        pkt = await self.queue.get()
        if pkt is None or self.readyState != "live":
            raise MediaStreamError
        return pkt

    def end(self) -> None:
        self.queue.put_nowait(None)
        self.stop()


class RtcSource:
    """A stream's feed for its WebRTC viewers (see the module's docstring). A hub output."""

    name = "rtc"
    linger: float | None = None

    def __init__(self, service: Host, stream: Stream) -> None:
        self.service = service
        self.stream = stream
        self.viewers: set[WhepViewer] = set()
        self.avc: AVCConfig | None = None
        self.avc_header: bytes | None = None
        self.asc: bytes | None = None
        self.worker: Worker | None = None
        self.transcoder: AacToOpus | None = None  # used by the worker's thread only, once created
        self.warned: set[str] = set()
        self.frames = self.dropped_b = 0

    # ------------------------------------------------------------------------------ the hub's output

    def start(self, stream: Stream) -> None:
        """A (new) publisher: its headers come with its first packets (or from the GOP cache)."""
        self.avc = self.avc_header = self.asc = None
        self._stop_audio()
        gop = stream.gop
        for pkt in (gop.video_header, gop.audio_header):
            if pkt is not None:
                self.on_packet(pkt)
        for v in self.viewers:
            v.need_keyframe = True

    async def end(self, stream: Stream, generation: int) -> None:
        pass  # viewers stay attached for the republish grace; the hub closes them after it

    def dispose(self) -> None:
        pass

    def on_packet(self, pkt: MediaPacket) -> None:
        if pkt.kind == VIDEO:
            self._video(pkt)
        elif pkt.kind == AUDIO:
            self._audio(pkt)

    # ------------------------------------------------------------------------------ media

    def _warn(self, what: str, reason: str) -> None:
        if what not in self.warned:
            self.warned.add(what)
            event(log, "rtc-skip", logging.WARNING, stream=self.stream.key, track=what, reason=reason)

    def _video(self, pkt: MediaPacket) -> None:
        payload = pkt.payload
        if len(payload) < 5 or payload[0] & 0x80 or payload[0] & 0x0F != flv.VIDEO_CODEC_AVC:
            self._warn("video", "only H.264 video plays over WebRTC here")
            return
        if pkt.sequence_header:
            if payload != self.avc_header:
                try:
                    self.avc = parse_avc_config(memoryview(payload)[5:])
                    self.avc_header = payload
                except AVCError as exc:
                    self._warn("video", f"bad AVC sequence header: {exc}")
            return
        if payload[1] != 1 or self.avc is None:
            return
        try:
            au = flv_avc_frame(payload, self.avc, self.service.keep_bframe(self.stream.key.vhost))
        except (ProtocolError, ValueError):
            return
        if au is None:
            self.dropped_b += 1
            if self.dropped_b == 1:
                self._warn("bframe", "B-frames dropped for WebRTC (keep_bframe off); publish without B-frames "
                                     "(x264 -bf 0, OBS profile baseline) for a clean picture")
            return
        data, idr = au
        out = av.Packet(data)
        out.pts = out.dts = pkt.timestamp  # the decode time: WebRTC has no reordering
        out.time_base = MS
        self.frames += 1
        for v in tuple(self.viewers):
            v.video(out, idr, len(data))

    def _audio(self, pkt: MediaPacket) -> None:
        payload = pkt.payload
        if len(payload) < 2 or payload[0] >> 4 != flv.SOUND_AAC:
            self._warn("audio", "only AAC audio is transcoded to Opus for WebRTC")
            return
        if pkt.sequence_header:
            asc = bytes(payload[2:])
            if asc != self.asc:
                self._stop_audio()
                self.asc = asc
                try:
                    bitrate = self.service.vhost_rtc(self.stream.key.vhost).opus_bitrate
                    transcoder = AacToOpus(asc, bitrate)
                except (av.FFmpegError, ValueError) as exc:
                    self._warn("audio", f"cannot decode this AAC: {exc}")
                    return
                self.transcoder = transcoder
                self.worker = Worker(str(self.stream.key), self._opus)
            return
        worker, transcoder = self.worker, self.transcoder
        if worker is not None and transcoder is not None and payload[1] == 1:
            worker.submit(transcoder.feed, bytes(payload[2:]), pkt.timestamp)

    def _opus(self, packets: list[tuple[bytes, int]]) -> None:
        for payload, pts in packets:
            out = av.Packet(payload)
            out.pts = out.dts = pts
            out.time_base = OPUS_TB
            for v in tuple(self.viewers):
                v.audio(out, len(payload))

    def _stop_audio(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        self.transcoder = None

    # ------------------------------------------------------------------------------ viewers

    def add(self, viewer: WhepViewer) -> None:
        self.viewers.add(viewer)
        viewer.need_keyframe = True

    def remove(self, viewer: WhepViewer) -> None:
        self.viewers.discard(viewer)

    def close(self) -> None:
        self._stop_audio()


class WhepViewer(RtcSession):
    """A WebRTC viewer: a peer connection with a video and/or an audio sender, a hub viewer, a client."""

    kind = VIEWER
    action = "play"

    def __init__(self, service: Host, ip: str, key: Any, plan: Any, kinds: list[str]) -> None:
        super().__init__(service, ip, key, plan)
        self.viewer = Viewer(self.cid, ip, "rtc", NO_BYTES, _NoTransport(), self)
        self.tracks: dict[str, PacketTrack] = {}
        for kind in kinds:
            if kind in self.tracks:
                continue
            track = self.tracks[kind] = PacketTrack(kind)
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codecs(kind))
        self.need_keyframe = True
        self.source: RtcSource | None = None
        self.playing = False

    # ------------------------------------------------------------------------------ media in

    def video(self, pkt: av.Packet, idr: bool, size: int) -> None:
        track = self.tracks.get("video")
        if track is None or not self.connected:
            return
        if self.need_keyframe:
            if not idr:
                return
            self.need_keyframe = False
        if track.queue.qsize() >= MAX_QUEUED:  # its sender is stuck: start again at the next keyframe
            while not track.queue.empty():
                track.queue.get_nowait()
            self.need_keyframe = True
            self.viewer.dropped += MAX_QUEUED
            return
        track.queue.put_nowait(pkt)
        self.send_bytes += size

    def audio(self, pkt: av.Packet, size: int) -> None:
        track = self.tracks.get("audio")
        if track is None or not self.connected or track.queue.qsize() >= MAX_QUEUED:
            return
        track.queue.put_nowait(pkt)
        self.send_bytes += size

    def on_connected(self) -> None:
        self.need_keyframe = True

    # ------------------------------------------------------------------------------ the hub's viewer owner

    def publisher_left(self, stream: Stream) -> None:
        pass  # the peer connection stays; the next publisher's media follows (or the grace period ends)

    def publisher_arrived(self, stream: Stream) -> None:
        self.need_keyframe = True

    def close_viewer(self, reason: str) -> None:
        self.close(reason)

    def end_tracks(self) -> None:
        for track in self.tracks.values():
            track.end()
