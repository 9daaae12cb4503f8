"""A sans-IO HLS segmenter with SRS's knobs: media packets in, file actions out.

The segmenter never touches the disk or the clock. :meth:`HlsSegmenter.feed` returns the actions to perform,
in order: :class:`AppendSegment` (the next bytes of the open segment), :class:`CloseSegment` (it is complete:
rename it into place), :class:`WritePlaylist` (the whole ``.m3u8``) and :class:`DeleteFile` (segments that left
the window). Names are relative to ``hls_path``. The asyncio adapter performs them off the event loop, in the
given order: a playlist never names a segment that is not yet complete, and a segment is deleted only after the
playlist stopped naming it.

Memory. A segment's bytes flow out as they are produced: the segmenter keeps less than ``buffer_bytes``
(:data:`SEGMENT_BUFFER_BYTES`, 128 KiB) of its open segment between two calls, whatever ``hls_fragment`` and the
bitrate, and hands the rest out as appends. (A size, not "every keyframe": a keyframe interval at a high bitrate
can be megabytes; 128 KiB is about half a second at 2 Mbit/s, so a 2 Mbit/s stream costs the writer about two
appends a second, and 50 streams hold at most 6.4 MiB.) The writer appends them to :func:`part_name` (a hidden
name in the same directory) and renames that into place on :class:`CloseSegment`, so a player, or a crash,
never leaves half a segment under its final name; :meth:`HlsSegmenter.clear_leftovers` deletes the part files a
killed process left behind.

Cutting rules (``vhost { hls { ... } }``):

* the first segment (and the first after a discontinuity) starts on a video keyframe, or on any frame of a
  pure audio stream; frames before it are dropped;
* with video, it is cut at the first keyframe once it lasts ``hls_fragment`` seconds; when
  ``hls_wait_keyframe`` is off it is also cut on any video frame once it lasts ``hls_fragment * hls_td_ratio``;
* pure audio is cut on the first frame once the segment lasts ``hls_fragment``;
* the window keeps the newest segments whose cumulative duration fits ``hls_window`` plus the one that crosses
  it (SRS's rule); older ones leave the playlist and, with ``hls_cleanup``, are deleted.

Lifecycle: :meth:`~HlsSegmenter.finish` at unpublish closes the open segment and writes the final playlist;
:meth:`~HlsSegmenter.discontinuity` when a new publisher starts (call it before feeding that publisher's
packets) marks the next segment with ``EXT-X-DISCONTINUITY``; :meth:`~HlsSegmenter.dispose` (after
``hls_dispose``) deletes everything. A track whose timestamps go back by more than a second, or a frame more
than :data:`MAX_FORWARD_JUMP_MS` (or three forced-cut lengths) ahead of everything seen, is treated as an
implicit discontinuity, so a publisher that resets its clock cannot freeze segmenting.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Final

from livesrv.codec import flv
from livesrv.codec.errors import ProtocolError
from livesrv.codec.hls_playlist import MediaPlaylist, Segment
from livesrv.codec.mpegts import FLVPacket, TSMuxer
from livesrv.config import HlsConfig
from livesrv.names import has_bad_char

__all__ = [
    "AppendSegment",
    "CloseSegment",
    "DeleteFile",
    "DeleteLeftovers",
    "HlsAction",
    "HlsSegmenter",
    "SEGMENT_BUFFER_BYTES",
    "SegmentInfo",
    "WritePlaylist",
    "part_name",
    "render_template",
]

#: Backward jump (ms) beyond which timestamps are taken to have restarted.
MAX_BACKWARD_JUMP_MS: Final = 1000
#: Forward jump (ms) beyond which timestamps are taken to have restarted (at least; see the module doc).
MAX_FORWARD_JUMP_MS: Final = 30_000
#: Bytes of its open segment a segmenter keeps at most between two calls; beyond it they go out as an append.
SEGMENT_BUFFER_BYTES: Final = 128 * 1024
#: Suffix of a segment's part file (see :func:`part_name`).
PART_SUFFIX: Final = ".tmp"
# Stands for [seq] and [timestamp] while a name pattern is built: no name can hold it (control character).
_VARIABLE: Final = "\x00"


@dataclass(frozen=True, slots=True)
class AppendSegment:
    """The next bytes of the open segment ``name``, which start at byte ``offset`` of it: ``pieces`` in order
    (``size`` bytes in all).

    The first append of a segment has offset 0: the writer (re)creates its part file. The offset lets the
    writer check that nothing was lost in between, so it never renames a segment with a hole into place.

    Pieces, not one ``bytes``: the segmenter hands out what the muxer produced as it is, and the writer gives
    them to one ``writev``; joining them first would copy the whole stream once more in the event loop.
    ``AppendSegment(name, data, offset)`` with one buffer is accepted too. The pieces are never modified.
    """

    name: str
    pieces: tuple[bytes | bytearray | memoryview, ...] | bytes
    offset: int
    size: int = -1  # computed when not given

    def __post_init__(self) -> None:
        if isinstance(self.pieces, (bytes, bytearray, memoryview)):
            object.__setattr__(self, "pieces", (self.pieces,))
        if self.size < 0:
            object.__setattr__(self, "size", sum(map(len, self.pieces)))

    @property
    def data(self) -> bytes:
        """The bytes joined (a copy: for tests and tools, not for the writer)."""
        return b"".join(self.pieces)


@dataclass(frozen=True, slots=True)
class CloseSegment:
    """Segment ``name`` is complete (``size`` bytes, all appended): rename its part file into place."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class WritePlaylist:
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class DeleteFile:
    """Delete ``name``; for a segment still open (:meth:`HlsSegmenter.dispose` mid-segment), its part file."""

    name: str


@dataclass(frozen=True, slots=True)
class DeleteLeftovers:
    """Delete the part files in directory ``name`` whose base name fully matches the regular expression
    ``pattern``: what a process killed mid-segment left of this stream (see
    :meth:`HlsSegmenter.clear_leftovers`)."""

    name: str
    pattern: str


HlsAction = AppendSegment | CloseSegment | WritePlaylist | DeleteFile | DeleteLeftovers


def part_name(name: str) -> str:
    """Where segment ``name`` is written until it is complete: hidden (``.`` first, so listings and globs for
    ``*.ts`` skip it), in the same directory so the final rename is atomic, and the same for every attempt
    (a new part for the name truncates a leftover one)."""
    head, tail = posixpath.split(name)
    return posixpath.join(head, f".{tail}{PART_SUFFIX}")


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A written segment: ``name`` is relative to ``hls_path``, ``uri`` relative to the playlist."""

    sequence: int
    name: str
    uri: str
    duration: float  # seconds
    discontinuity: bool
    start_ms: int  # stream timestamp of its first frame
    size: int


@dataclass(slots=True)
class _OpenSegment:
    sequence: int
    name: str
    start_ms: int
    discontinuity: bool
    chunks: list[bytes | bytearray] = field(default_factory=list)  # produced, not handed out (``pending``)
    end_ms: int = 0
    frames: int = 0
    pending: int = 0  # bytes in ``chunks``
    written: int = 0  # bytes already handed out as appends

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.pending += len(data)

    def take(self) -> list[HlsAction]:
        """The buffered bytes as one append of their pieces (none when empty)."""
        if not self.pending:
            return []
        act = AppendSegment(self.name, tuple(self.chunks), self.written, self.pending)
        self.written += self.pending
        self.chunks.clear()
        self.pending = 0
        return [act]


def _safe_name(name: str, what: str) -> str:
    """A relative, normalized POSIX path that cannot leave ``hls_path`` and holds no control character (names
    are checked where they enter; this is the second layer)."""
    norm = posixpath.normpath(name.lstrip("/"))
    if not norm or norm == "." or norm.startswith("../") or norm == ".." or has_bad_char(norm):
        raise ValueError(f"{what} {name!r} is not a file name inside hls_path without control characters")
    return norm


def _ts_video(payload: bytes) -> bool:
    """Is this a video frame the TS muxer carries (H.264/H.265), even before its sequence header?"""
    try:
        return flv.parse_video(payload).codec in (flv.CODEC_AVC, flv.CODEC_HEVC)
    except ProtocolError:
        return True  # let the muxer reject it and count it


def render_template(template: str, *, vhost: str, app: str, stream: str, seq: int | None = None,
                    timestamp: int | None = None) -> str:
    """SRS's path variables: ``[vhost]``, ``[app]``, ``[stream]``, ``[seq]``, ``[timestamp]`` (ms)."""
    out = template.replace("[vhost]", vhost).replace("[app]", app).replace("[stream]", stream)
    if seq is not None:
        out = out.replace("[seq]", str(seq))
    if timestamp is not None:
        out = out.replace("[timestamp]", str(timestamp))
    return out


class HlsSegmenter:
    """One stream's HLS output. See the module docstring for the rules."""

    def __init__(
        self,
        config: HlsConfig,
        vhost: str,
        app: str,
        stream: str,
        *,
        start_sequence: int = 0,
        muxer: TSMuxer | None = None,
        buffer_bytes: int | None = None,
    ) -> None:
        self.config = config
        self.vhost = vhost
        self.app = app
        self.stream = stream
        self.playlist_name = _safe_name(
            render_template(config.hls_m3u8_file, vhost=vhost, app=app, stream=stream), "hls_m3u8_file"
        )
        self._playlist_dir = posixpath.dirname(self.playlist_name) or "."
        # Check the segment template once, with both variables, so a bad app/stream fails here.
        _safe_name(self._segment_name(start_sequence, 0), "hls_ts_file")
        self._muxer = muxer or TSMuxer()
        # Bytes of the open segment kept at most between calls (default: SEGMENT_BUFFER_BYTES, read here).
        self._buffer_bytes = SEGMENT_BUFFER_BYTES if buffer_bytes is None else buffer_bytes
        self._fragment_ms = config.hls_fragment * 1000.0
        self._force_ms = config.hls_fragment * config.hls_td_ratio * 1000.0
        self._window_s = config.hls_window
        self._forward_jump_ms = max(MAX_FORWARD_JUMP_MS, 3 * self._force_ms)
        self._next_seq = start_sequence
        self._segments: list[SegmentInfo] = []
        self._disc_sequence = 0
        self._open: _OpenSegment | None = None
        self._pending_discontinuity = False
        self._track_last: dict[int, int] = {}
        self._track_delta: dict[int, int] = {}
        #: Packets the muxer rejected as malformed (they are skipped, the stream goes on).
        self.dropped = 0

    # ------------------------------------------------------------------ state

    @property
    def segments(self) -> tuple[SegmentInfo, ...]:
        """The segments in the playlist window, oldest first."""
        return tuple(self._segments)

    @property
    def muxer(self) -> TSMuxer:
        return self._muxer

    @property
    def buffered(self) -> int:
        """Bytes of the open segment held here, not handed out yet: less than ``buffer_bytes`` between calls."""
        seg = self._open
        return sum(len(c) for c in seg.chunks) if seg is not None else 0

    @property
    def playlist(self) -> MediaPlaylist:
        return MediaPlaylist(
            tuple(Segment(s.uri, s.duration, s.discontinuity) for s in self._segments),
            self._segments[0].sequence if self._segments else self._next_seq,
            self._disc_sequence,
        )

    # ------------------------------------------------------------------ input

    def feed(self, pkt: FLVPacket, now_ms: int | None = None) -> list[HlsAction]:
        """Take one media packet. ``now_ms`` (wall clock, ms) only fills ``[timestamp]`` in segment names;
        without it the segment's stream timestamp is used."""
        kind = pkt.kind
        payload = pkt.payload
        # Fast paths for what nearly every publisher sends (this runs for every frame of every stream): a
        # legacy AVC/HEVC coded frame (codec 7 or 12, frame type 1..4, AVCPacketType 1: not a sequence header,
        # a codec TS carries, a keyframe when its frame type is 1) and a legacy AAC raw frame. Anything else
        # goes through flv's checks.
        if kind == flv.VIDEO:
            is_video = True
            b0 = payload[0] if len(payload) > 5 else 0  # (0: too short for the fast path)
            codec_id = b0 & 0x8F
            if (
                (codec_id == flv.VIDEO_CODEC_AVC or codec_id == flv.VIDEO_CODEC_HEVC)
                and payload[1] == flv.PACKET_CODED_FRAMES
                and 0x10 <= b0 & 0x70 <= 0x40
            ):
                keyframe = b0 & 0x70 == 0x10
            elif flv.is_sequence_header(payload):
                self._mux_aside(pkt)
                return []
            elif not self._muxer.has_video and not _ts_video(payload):
                self._mux_aside(pkt)  # AV1, VP9...: the muxer counts and drops it; segmenting ignores it
                return []
            else:
                keyframe = flv.is_keyframe(payload)
        elif kind == flv.AUDIO:
            is_video = keyframe = False
            if not (len(payload) > 2 and payload[1] == flv.AUDIO_PACKET_CODED_FRAMES and payload[0] >> 4 == flv.SOUND_AAC) and (
                flv.is_audio_sequence_header(payload)
            ):
                self._mux_aside(pkt)
                return []
        else:
            return []
        ts = pkt.timestamp
        actions: list[HlsAction] = []

        # A track going back in time, or any frame far ahead of everything seen (both tracks' last frames):
        # the clock restarted.
        last = self._track_last
        prev = last.get(kind)
        other = last.get(flv.VIDEO + flv.AUDIO - kind)
        jump = self._forward_jump_ms
        if (prev is not None and ts < prev - MAX_BACKWARD_JUMP_MS) or (
            (prev is not None or other is not None)
            and (prev is None or ts > prev + jump)
            and (other is None or ts > other + jump)
        ):
            if self._open is not None:
                actions += self._close(None)
            if self._segments:
                self._pending_discontinuity = True
            self._muxer_discontinuity()
            self._reset_clock()
            prev = None

        seg = self._open
        has_video = is_video or self._muxer.has_video
        if seg is None:
            if has_video and not keyframe:
                return actions  # a segment must start with a picture that decodes on its own
            seg = self._start(ts, now_ms)
        else:
            elapsed = ts - seg.start_ms
            if has_video:
                cut = is_video and (
                    (keyframe and elapsed >= self._fragment_ms)
                    or (not self.config.hls_wait_keyframe and elapsed >= self._force_ms)
                )
            else:
                cut = elapsed >= self._fragment_ms
            if cut:
                actions += self._close(ts)
                seg = self._start(ts, now_ms)

        try:
            # (straight into the segment's pieces: no join per packet; see AppendSegment)
            seg.pending += self._muxer.mux_into(pkt, seg.chunks)
        except ProtocolError:
            self.dropped += 1
            seg.pending = sum(map(len, seg.chunks))  # (a muxer raises before it appends; in case one did not)
            return actions
        seg.frames += 1
        if seg.pending >= self._buffer_bytes:  # (only once a frame is in: a segment without one is never written)
            actions += seg.take()
        # Where this frame ends: its timestamp plus its track's typical frame duration, which is what
        # the segment lasts if it is closed by finish() rather than by the next segment's first frame.
        if prev is not None and 0 < ts - prev < 1000:
            delta = self._track_delta[kind] = ts - prev
        else:
            delta = self._track_delta.get(kind, 0)
        last[kind] = ts
        if ts + delta > seg.end_ms:
            seg.end_ms = ts + delta
        return actions

    def continue_after(self, playlist: MediaPlaylist) -> None:
        """Before any media: this output takes over a playlist another process wrote (``workers N``: the stream
        moved to another worker), as a republish continues one. Its segments stay in the window (they leave it,
        and are deleted, as this output's own do), the sequence numbers go on after them, and the first new
        segment gets ``EXT-X-DISCONTINUITY`` (a new timeline): a player polling the playlist sees it move on,
        never go back. A segment named outside ``hls_path`` (an absolute or ``..`` URI) is not taken over:
        then only the numbering goes on."""
        if self._segments or self._open is not None:
            raise ValueError("continue_after: segments were cut already")
        adopted = []
        for i, seg in enumerate(playlist.segments):
            name = posixpath.normpath(posixpath.join(self._playlist_dir, seg.uri))
            if "://" in seg.uri or "?" in seg.uri or seg.uri.startswith("/") or name.split("/")[0] in ("..", "."):
                adopted = []
                break
            adopted.append(SegmentInfo(playlist.media_sequence + i, name, seg.uri, seg.duration, seg.discontinuity,
                                       0, 0))
        self._next_seq = playlist.media_sequence + len(playlist.segments)
        if adopted:
            self._segments = adopted
            self._disc_sequence = playlist.discontinuity_sequence
        else:
            self._disc_sequence = playlist.discontinuity_sequence + sum(1 for s in playlist.segments
                                                                        if s.discontinuity)
        self._pending_discontinuity = bool(playlist.segments)

    def discontinuity(self) -> list[HlsAction]:
        """A new publisher starts: close what is open; the next segment gets ``EXT-X-DISCONTINUITY``."""
        actions = self._close(None) if self._open is not None else []
        if self._segments or actions:
            self._pending_discontinuity = True
        self._muxer_discontinuity()
        self._reset_clock()
        return actions

    def finish(self, endlist: bool = False) -> list[HlsAction]:
        """Unpublish: write the open segment and the final playlist; forget the publisher's codecs.

        Like SRS, the playlist stays live (players keep polling, a republish continues it) unless
        ``endlist`` asks for ``EXT-X-ENDLIST``, e.g. to hand the recording to a VOD player.
        """
        actions = self._close(None, endlist) if self._open is not None else []
        if not actions and self._segments:
            actions = [WritePlaylist(self.playlist_name, self._render(endlist))]
        self._muxer.reset_codecs()
        if self._segments:
            self._pending_discontinuity = True
        self._muxer_discontinuity()
        self._reset_clock()
        return actions

    def dispose(self) -> list[HlsAction]:
        """Delete the playlist and every segment it names (``hls_dispose`` after unpublish), and the part of
        a segment still open (when not finished first)."""
        actions: list[HlsAction] = [DeleteFile(s.name) for s in self._segments]
        if self._segments:
            actions.append(DeleteFile(self.playlist_name))
        if self._open is not None and self._open.written:
            actions.append(DeleteFile(self._open.name))
        self._segments.clear()
        self._open = None
        self._pending_discontinuity = False
        self._disc_sequence = 0
        self._muxer.reset_codecs()
        self._reset_clock()
        return actions

    def clear_leftovers(self) -> list[HlsAction]:
        """The first actions of a new output for this stream: delete the part files a process killed
        mid-segment left (any sequence number or timestamp). Only done when the segments' directory does not
        itself depend on ``[seq]`` or ``[timestamp]`` (one directory to list). A part of another stream can
        match only when the two streams' segment names can collide anyway."""
        tpl = self.config.hls_ts_file.replace("[seq]", _VARIABLE).replace("[timestamp]", _VARIABLE)
        # (As _safe_name, whose check the constructor did with real numbers: the placeholder is not a name.)
        name = posixpath.normpath(render_template(tpl, vhost=self.vhost, app=self.app, stream=self.stream).lstrip("/"))
        directory, base = posixpath.split(part_name(name))
        if _VARIABLE in directory:
            return []
        pattern = "[0-9]+".join(re.escape(piece) for piece in base.split(_VARIABLE))
        return [DeleteLeftovers(directory or ".", pattern)]

    # ------------------------------------------------------------------ internals

    def _mux_aside(self, pkt: FLVPacket) -> None:
        """Packets that update the muxer's state but never open or cut a segment."""
        try:
            data = self._muxer.mux(pkt)
        except ProtocolError:
            self.dropped += 1
            return
        if data and self._open is not None:  # never in practice: configurations produce no packets
            self._open.add(data)

    def _reset_clock(self) -> None:
        self._track_last.clear()
        self._track_delta.clear()

    def _muxer_discontinuity(self) -> None:
        tail = self._muxer.discontinuity()
        if tail and self._open is not None:
            self._open.add(tail)

    def _segment_name(self, seq: int, timestamp: int) -> str:
        return render_template(
            self.config.hls_ts_file, vhost=self.vhost, app=self.app, stream=self.stream, seq=seq, timestamp=timestamp
        )

    def _start(self, ts: int, now_ms: int | None) -> _OpenSegment:
        seq = self._next_seq
        self._next_seq += 1
        name = _safe_name(self._segment_name(seq, ts if now_ms is None else now_ms), "hls_ts_file")
        seg = _OpenSegment(seq, name, ts, self._pending_discontinuity, end_ms=ts)
        seg.add(self._muxer.psi())
        self._pending_discontinuity = False
        self._open = seg
        return seg

    def _render(self, endlist: bool = False) -> str:
        pl = self.playlist
        return (replace(pl, endlist=True) if endlist else pl).render()

    def _close(self, end_ms: int | None, endlist: bool = False) -> list[HlsAction]:
        seg = self._open
        assert seg is not None
        self._open = None
        tail = self._muxer.flush()
        if tail:
            seg.add(tail)
        if seg.frames == 0:
            # Nothing usable reached it (so nothing was handed out): give the number back, keep a pending
            # discontinuity.
            self._next_seq = seg.sequence
            self._pending_discontinuity = self._pending_discontinuity or seg.discontinuity
            return []
        end = seg.end_ms if end_ms is None else end_ms
        duration = max(0, end - seg.start_ms) / 1000.0
        actions = seg.take()
        size = seg.written
        uri = posixpath.relpath(seg.name, self._playlist_dir)
        self._segments.append(
            SegmentInfo(seg.sequence, seg.name, uri, duration, seg.discontinuity, seg.start_ms, size)
        )
        removed = self._shrink()
        actions += [
            CloseSegment(seg.name, size),
            WritePlaylist(self.playlist_name, self._render(endlist)),
        ]
        if self.config.hls_cleanup:
            actions += [DeleteFile(s.name) for s in removed]
        return actions

    def _shrink(self) -> list[SegmentInfo]:
        """SRS's window: walk back from the newest; the segment that crosses hls_window is the oldest kept."""
        total = 0.0
        keep_from = 0
        segs = self._segments
        for i in range(len(segs) - 1, -1, -1):
            total += segs[i].duration
            if total > self._window_s:
                keep_from = i
                break
        removed = segs[:keep_from]
        del segs[:keep_from]
        self._disc_sequence += sum(1 for s in removed if s.discontinuity)
        return removed
