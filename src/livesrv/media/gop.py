"""What a new viewer needs to start at once: metadata, sequence headers and the current GOP.

Bounded by ``max_frames`` (SRS ``gop_cache_max_frames``): a stream whose keyframes never come (or a pure-audio
stream) cannot make the cache grow without limit.
"""

from __future__ import annotations

from livesrv.media.packet import AUDIO, VIDEO, MediaPacket

PURE_AUDIO_KEEP = 32  # packets of a stream that has no video: enough for a player to start, little memory


class GopCache:
    __slots__ = ("enabled", "max_frames", "metadata", "video_header", "audio_header", "gop", "_seen_video")

    def __init__(self, enabled: bool = True, max_frames: int = 2500) -> None:
        self.enabled = enabled
        self.max_frames = max_frames
        self.metadata: MediaPacket | None = None
        self.video_header: MediaPacket | None = None
        self.audio_header: MediaPacket | None = None
        self.gop: list[MediaPacket] = []
        self._seen_video = False

    def add(self, pkt: MediaPacket) -> None:
        if pkt.sequence_header:
            if pkt.kind == VIDEO:
                self.video_header = pkt
            elif pkt.kind == AUDIO:
                self.audio_header = pkt
            return
        if not self.enabled:
            return
        if pkt.kind == VIDEO:
            if pkt.keyframe:
                self.gop = [pkt]
                self._seen_video = True
                return
            if not self._seen_video:
                return  # inter frames before the first keyframe cannot be decoded
        elif pkt.kind != AUDIO:
            return
        elif not self._seen_video:
            self.gop.append(pkt)
            if len(self.gop) > PURE_AUDIO_KEEP:
                del self.gop[0]
            return
        self.gop.append(pkt)
        if len(self.gop) > self.max_frames:
            # A GOP this long is not worth keeping (SRS drops it too); the next keyframe restarts the cache.
            self.gop = []
            self._seen_video = False

    def set_metadata(self, pkt: MediaPacket) -> None:
        self.metadata = pkt

    def start_packets(self) -> list[MediaPacket]:
        """Metadata, sequence headers, then the cached GOP: the burst a new viewer gets first."""
        out = self.header_packets(self.gop[0].timestamp if self.gop else None)
        out.extend(self.gop)
        return out

    def header_packets(self, start: int | None) -> list[MediaPacket]:
        """Metadata and the current sequence headers, for a viewer that (re)starts at a keyframe at ``start``.

        Sequence headers are stamped with ``start`` so that a viewer sees time only move forward, even when a
        header was (re)sent after the GOP began. Metadata keeps timestamp 0 (see servers.rtmp): FFmpeg's FLV
        demuxer turns onMetaData at any other time into a subtitle stream.
        """
        out: list[MediaPacket] = []
        if self.metadata is not None:
            out.append(self.metadata)
        for pkt in (self.video_header, self.audio_header):
            if pkt is None:
                continue
            if start is not None and pkt.timestamp != start:
                pkt = MediaPacket(pkt.kind, start, pkt.payload, pkt.keyframe, pkt.sequence_header)
            out.append(pkt)
        return out

    def clear(self) -> None:
        self.metadata = self.video_header = self.audio_header = None
        self.gop = []
        self._seen_video = False
