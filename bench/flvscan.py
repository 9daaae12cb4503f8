"""A cheap incremental reader of an HTTP-FLV response: status line, chunked or raw body, FLV tag headers.

Sans-IO (bytes in, calls to :class:`~bench.measure.ViewerStats` out). It never copies a tag's payload: after
reading a tag header and the payload's first two bytes it skips the rest by counting, so a viewer costs a
few microseconds per read and per tag, far less than the server spends on it.
"""

from __future__ import annotations

import struct

from bench.measure import AUDIO, SCRIPT, VIDEO, ViewerStats

_HEAD_LIMIT = 16 * 1024
_PTS_AND_HEADER = struct.Struct(">III").unpack_from  # previous tag size, type<<24|size, ts24<<8|ts_ext


class StreamEnd(Exception):
    """The response cannot be read on (bad status, bad framing): the viewer gives up."""


class FLVScanner:
    """FLV body after the HTTP head: the 9-byte file header, then (previous tag size, tag header) pairs."""

    __slots__ = ("stats", "_header", "_pending", "_skip", "_expect_prev", "tags")

    def __init__(self, stats: ViewerStats) -> None:
        self.stats = stats
        self._header: bytearray | None = bytearray()  # the file header until it is complete
        self._pending = b""  # a previous-tag-size + tag header split across reads
        self._skip = 0  # payload bytes still to skip
        self._expect_prev = 0  # PreviousTagSize0 is 0
        self.tags = 0

    def feed(self, data: bytes | memoryview, now: float) -> None:
        if self._header is not None:
            hdr = self._header
            hdr += data
            if len(hdr) < 9:
                return
            if hdr[:3] != b"FLV" or hdr[3] != 1:
                self.stats.bad_framing(f"not an FLV stream: {bytes(hdr[:9])!r}")
                raise StreamEnd("not FLV")
            size = struct.unpack_from(">I", hdr, 5)[0]
            if size < 9:
                self.stats.bad_framing(f"FLV header size {size}")
                raise StreamEnd("bad FLV header")
            data = bytes(hdr)
            self._header = None
            self._skip = size
        n = len(data)
        if self._pending:
            data = self._pending + data
            self._pending = b""
            n = len(data)
            p = 0
        else:
            p = self._skip
            if p >= n:
                self._skip = p - n
                return
            self._skip = 0
        stats = self.stats
        tag = stats.tag
        expect = self._expect_prev
        tags = self.tags
        # Fast path, inline: an AVC/HEVC/AV1 or AAC frame after the first keyframe, its timestamp a little
        # after the previous one of its track. Anything else goes through ViewerStats.tag, with the counters
        # this loop keeps in locals handed back first and reloaded after.
        fast = stats.first_key_at is not None
        v_ts, a_ts, media = stats.v_ts, stats.a_ts, stats.media
        vf = af = 0
        max_gap = stats.th.max_gap_ms
        while p + 15 <= n:
            prev, tw, tsw = _PTS_AND_HEADER(data, p)
            size = tw & 0xFFFFFF
            if p + 17 > n and p + 15 + (2 if size >= 2 else size) > n:
                break
            if prev != expect:
                stats.bad_framing(f"previous tag size {prev}, expected {expect}")
            expect = size + 11
            typ = tw >> 24
            ts = (tsw >> 8) | ((tsw & 0xFF) << 24)
            if typ == VIDEO:
                common = (fast and size >= 2 and data[p + 16] == 1 and (b0 := data[p + 15]) & 0x8F in (7, 12, 13)
                          and (b0 >> 4) != 5 and 0 <= ts - v_ts <= max_gap)
                if common:
                    v_ts = media = ts
                    vf += 1
            elif typ == AUDIO:
                common = (size >= 2 and data[p + 15] >> 4 == 10 and data[p + 16] == 1 and v_ts >= 0
                          and 0 <= ts - a_ts <= max_gap)
                if common:
                    a_ts = ts
                    af += 1
            elif typ == SCRIPT:
                common = True
            else:
                stats.bad_framing(f"tag type {typ}")
                raise StreamEnd("bad tag type")
            if not common:
                stats.v_ts, stats.a_ts, stats.media = v_ts, a_ts, media
                stats.video_frames += vf
                stats.audio_frames += af
                vf = af = 0
                tag(typ, ts, data[p + 15] if size else -1, data[p + 16] if size >= 2 else -1, now)
                v_ts, a_ts, media = stats.v_ts, stats.a_ts, stats.media
                fast = stats.first_key_at is not None
            tags += 1
            p += 15 + size
        stats.v_ts, stats.a_ts, stats.media = v_ts, a_ts, media
        stats.video_frames += vf
        stats.audio_frames += af
        self._expect_prev = expect
        self.tags = tags
        if p > n:
            self._skip = p - n
        elif p < n:
            self._pending = bytes(data[p:])


class HTTPFLVReader:
    """The whole response: head, then identity or chunked transfer coding, into an :class:`FLVScanner`."""

    __slots__ = ("scanner", "_head", "_chunked", "_chunk_left", "_line", "status", "done")

    def __init__(self, stats: ViewerStats) -> None:
        self.scanner = FLVScanner(stats)
        self._head: bytearray | None = bytearray()
        self._chunked = False
        self._chunk_left = 0
        self._line = b""
        self.status = 0
        self.done = False  # the chunked body ended (last-chunk seen)

    def feed(self, data: bytes, now: float) -> None:
        if self._head is not None:
            head = self._head
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > _HEAD_LIMIT:
                    raise StreamEnd("HTTP head too long")
                return
            self._parse_head(bytes(head[:end]))
            data = bytes(head[end + 4 :])
            self._head = None
            if not data:
                return
        if not self._chunked:
            self.scanner.feed(data, now)
            return
        self._dechunk(data, now)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise StreamEnd(f"bad status line {lines[0][:80]!r}")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise StreamEnd(f"bad status line {lines[0][:80]!r}") from None
        if self.status != 200:
            raise StreamEnd(f"HTTP {self.status}")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True

    def _dechunk(self, data: bytes, now: float) -> None:
        mv = memoryview(data)
        n = len(data)
        p = 0
        feed = self.scanner.feed
        while p < n:
            left = self._chunk_left
            if left:
                take = left if left <= n - p else n - p
                feed(mv[p : p + take], now)
                p += take
                self._chunk_left = left - take
                continue
            i = data.find(b"\n", p)
            if i < 0:
                self._line += data[p:]
                if len(self._line) > 1024:
                    raise StreamEnd("chunk size line too long")
                return
            line = (self._line + data[p:i]).strip()
            self._line = b""
            p = i + 1
            if not line:
                continue  # the CRLF that ends a chunk's data
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self.scanner.stats.bad_framing(f"bad chunk size line {line[:40]!r}")
                raise StreamEnd("bad chunked coding") from None
            if size == 0:
                self.done = True
                return
            self._chunk_left = size
