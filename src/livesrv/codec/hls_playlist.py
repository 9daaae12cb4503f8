"""Typed HLS live media playlists (RFC 8216), rendered to text and parsed back.

A playlist is a value: the segmenter builds a new one after every segment and renders it whole, so what is
served is always consistent and tests can compare entire texts. ``TARGETDURATION`` is derived from the
segments (the ceiling of the longest ``EXTINF`` as written), which is what RFC 8216 4.3.3.1 requires and what
SRS does. ``EXT-X-DISCONTINUITY-SEQUENCE`` is written once discontinuities have slid out of the window, so
players can keep their timelines aligned (RFC 8216 6.2.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["MediaPlaylist", "PlaylistError", "Segment", "parse_media_playlist"]


class PlaylistError(ValueError):
    """Text that is not a media playlist of the kind :func:`parse_media_playlist` reads."""


@dataclass(frozen=True, slots=True)
class Segment:
    uri: str
    duration: float  # seconds
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before this segment

    def __post_init__(self) -> None:
        if not self.uri or any(c in self.uri for c in "\r\n"):
            raise ValueError(f"invalid segment URI {self.uri!r}")
        if not math.isfinite(self.duration) or self.duration < 0:
            raise ValueError(f"invalid segment duration {self.duration!r}")

    @property
    def extinf(self) -> str:
        """The duration as written: three decimals, as SRS writes it."""
        return f"{self.duration:.3f}"


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    segments: tuple[Segment, ...] = ()
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    version: int = 3
    endlist: bool = False
    #: Lower bound for EXT-X-TARGETDURATION (e.g. the configured fragment), 0 for none.
    min_target_duration: int = 0

    @property
    def target_duration(self) -> int:
        longest = max((math.ceil(float(s.extinf)) for s in self.segments), default=0)
        return max(longest, self.min_target_duration, 1)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{self.version}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        lines.append(f"#EXT-X-TARGETDURATION:{self.target_duration}")
        for seg in self.segments:
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXTINF:{seg.extinf},")
            lines.append(seg.uri)
        if self.endlist:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    __str__ = render


def _int_tag(value: str, tag: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise PlaylistError(f"{tag} is not an integer: {value!r}") from None
    if n < 0:
        raise PlaylistError(f"{tag} is negative")
    return n


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Read back a media playlist (the tags written by :meth:`MediaPlaylist.render`; others are ignored)."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("missing #EXTM3U")
    segments: list[Segment] = []
    media_sequence = disc_sequence = 0
    version = 1
    endlist = False
    duration: float | None = None
    discontinuity = False
    target = 0
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#"):
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-VERSION":
                version = _int_tag(value, tag)
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                media_sequence = _int_tag(value, tag)
            elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
                disc_sequence = _int_tag(value, tag)
            elif tag == "#EXT-X-TARGETDURATION":
                target = _int_tag(value, tag)
            elif tag == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif tag == "#EXT-X-ENDLIST":
                endlist = True
            elif tag == "#EXTINF":
                try:
                    duration = float(value.partition(",")[0])
                except ValueError:
                    raise PlaylistError(f"bad EXTINF {value!r}") from None
            continue
        if duration is None:
            raise PlaylistError(f"segment {line!r} without #EXTINF")
        try:
            segments.append(Segment(line, duration, discontinuity))
        except ValueError as e:
            raise PlaylistError(str(e)) from None
        duration = None
        discontinuity = False
    playlist = MediaPlaylist(tuple(segments), media_sequence, disc_sequence, version, endlist)
    if target and target < playlist.target_duration:
        raise PlaylistError(f"EXT-X-TARGETDURATION {target} is shorter than a segment")
    return replace(playlist, min_target_duration=target) if target > playlist.target_duration else playlist
