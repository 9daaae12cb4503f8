"""What one simulated viewer measures, whatever protocol brought the tags.

A viewer only ever looks at tag headers (type, timestamp) and the first two payload bytes (frame type, codec
and packet type): enough to tell a sequence header from a frame, a keyframe from an inter frame, and to follow
media time. Parsing more would make the load generator cost as much per viewer as the server it measures.

"Keeping up" tolerates servers that write merged batches (SRS writes every ~350 ms): media time is compared
with wall-clock between the *arrivals* that open and close the measuring window, not with the window's
edges, so a batch boundary never counts as lag. A viewer must also receive media close to both edges of the
window (within the stall threshold), or a viewer that stopped half-way would look fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUDIO = 8
VIDEO = 9
SCRIPT = 18

KEEP_UP_RATIO = 0.95

#: Legacy FLV video codec ids whose second byte is a packet type (0 = sequence header, 1 = frame, 2 = end).
_PACKETIZED_VIDEO = frozenset((7, 12, 13))  # AVC, HEVC (FLV extension used by SRS/Chinese CDNs), AV1 (same)
_AAC = 10


@dataclass(slots=True)
class Thresholds:
    stall_s: float = 1.0  # no media time advance for longer than this (wall clock) is a stall
    max_gap_ms: int = 1000  # consecutive frames of one track further apart than this are a gap (frames lost)


class ViewerStats:
    """Counters of one viewer; fed tag by tag (``tag``) and read by read (``account``)."""

    __slots__ = (
        "th", "window_start", "window_end", "connect_at", "first_key_at", "frames_before_key",
        "v_ts", "a_ts", "media", "adv_at", "a0", "m0", "a1", "m1", "stalls", "max_stall",
        "bytes", "win_bytes", "backwards", "ts_gaps", "framing", "first_problem", "error", "ended",
        "video_frames", "audio_frames",
    )

    def __init__(self, th: Thresholds, window_start: float, window_end: float, connect_at: float) -> None:
        self.th = th
        self.window_start = window_start
        self.window_end = window_end
        self.connect_at = connect_at
        self.first_key_at: float | None = None
        self.frames_before_key = 0  # inter frames received before the first keyframe (undecodable start)
        self.v_ts = -1  # last coded video frame's timestamp (ms)
        self.a_ts = -1  # last coded audio frame's timestamp (ms)
        self.media = -1  # media time received (ms): video's when there is video, else audio's
        self.adv_at = connect_at  # wall time media time last advanced
        self.a0: float | None = None  # first arrival in the window that carried media, and media time then
        self.m0 = 0
        self.a1 = 0.0  # last arrival in the window that advanced media time, and media time then
        self.m1 = 0
        self.stalls = 0
        self.max_stall = 0.0
        self.bytes = 0
        self.win_bytes = 0
        self.backwards = 0  # a track's timestamp went backwards
        self.ts_gaps = 0  # a track's timestamps jumped by more than max_gap_ms
        self.framing = 0  # broken container/chunk framing, bad previous-tag-size, unknown tag type
        self.first_problem = ""
        self.error = ""  # why the viewer could not play (connect refused, HTTP 404, closed by server...)
        self.ended = False
        self.video_frames = 0
        self.audio_frames = 0

    # ------------------------------------------------------------------------------------ per tag

    def tag(self, typ: int, ts: int, b0: int, b1: int, now: float) -> None:
        """A media tag arrived; ``b0``/``b1`` are its first payload bytes (-1 when absent)."""
        if typ == VIDEO:
            if b0 & 0x80:  # Enhanced RTMP: low nibble is the packet type
                pt = b0 & 0x0F
                if pt != 1 and pt != 3:  # not CodedFrames(X): sequence start/end, metadata
                    return
            elif (b0 & 0x0F) in _PACKETIZED_VIDEO and b1 != 1:
                return  # sequence header or end of sequence
            if (b0 >> 4) & 0x07 == 5:
                return  # video info/command frame, not a picture
            self.video_frames += 1
            if self.first_key_at is None:
                if (b0 >> 4) & 0x07 == 1:
                    self.first_key_at = now
                else:
                    self.frames_before_key += 1
            last = self.v_ts
            self.v_ts = ts
            self.media = ts
        elif typ == AUDIO:
            if b0 >> 4 == _AAC and b1 == 0:
                return  # AAC sequence header
            self.audio_frames += 1
            last = self.a_ts
            self.a_ts = ts
            if self.v_ts < 0:
                self.media = ts
        else:
            return
        if last >= 0:
            d = ts - last
            if d < 0:
                self.backwards += 1
                if not self.first_problem:
                    self.first_problem = f"{'video' if typ == VIDEO else 'audio'} timestamp went back {last}->{ts}"
            elif d > self.th.max_gap_ms:
                self.ts_gaps += 1
                if not self.first_problem:
                    self.first_problem = f"{'video' if typ == VIDEO else 'audio'} timestamp gap {last}->{ts}"

    def bad_framing(self, what: str) -> None:
        self.framing += 1
        if not self.first_problem:
            self.first_problem = what

    # ----------------------------------------------------------------------------------- per read

    def account(self, nbytes: int, media_before: int, now: float) -> None:
        """One read of ``nbytes`` was processed; ``media_before`` is the media time before it."""
        self.bytes += nbytes
        media = self.media
        if now < self.window_start or now > self.window_end:
            if media > media_before:
                self.adv_at = now
            return
        self.win_bytes += nbytes
        if media > media_before:
            gap = now - self.adv_at
            if gap > self.th.stall_s:
                self.stalls += 1
            if gap > self.max_stall:
                self.max_stall = gap
            self.adv_at = now
            self.a1, self.m1 = now, media
        if self.a0 is None and media >= 0:
            # The media time held now arrived at adv_at (maybe just before the window): that is the pair.
            self.a0, self.m0 = self.adv_at, media
            if self.a1 < self.a0:
                self.a1, self.m1 = self.a0, media

    # ------------------------------------------------------------------------------------- result

    def result(self) -> dict[str, Any]:
        ws, we = self.window_start, self.window_end
        stall_s = self.th.stall_s
        tail = we - self.adv_at
        stalls, max_stall = self.stalls, self.max_stall
        if tail > stall_s:  # still stalled when the window closed
            stalls += 1
        if tail > max_stall:
            max_stall = tail
        rate: float | None = None
        keeping_up = False
        if self.a0 is not None and self.a1 > self.a0:
            rate = (self.m1 - self.m0) / 1000.0 / (self.a1 - self.a0)
            covered = self.a0 - ws <= stall_s and we - self.a1 <= stall_s
            keeping_up = covered and rate >= KEEP_UP_RATIO
        malformed = self.framing + self.backwards + self.ts_gaps
        return {
            "error": self.error,
            "first_frame": None if self.first_key_at is None else self.first_key_at - self.connect_at,
            "frames_before_key": self.frames_before_key,
            "keeping_up": keeping_up,
            "rate": rate,
            "stalls": stalls,
            "max_stall": round(max_stall, 3),
            "bytes": self.bytes,
            "win_bytes": self.win_bytes,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "malformed": malformed,
            "framing": self.framing,
            "backwards": self.backwards,
            "ts_gaps": self.ts_gaps,
            "problem": self.first_problem,
        }
