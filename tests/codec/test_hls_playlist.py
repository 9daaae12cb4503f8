"""Typed HLS media playlists: whole-text rendering, target duration rule, parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livesrv.codec.hls_playlist import MediaPlaylist, PlaylistError, Segment, parse_media_playlist


def test_render_whole_text() -> None:
    pl = MediaPlaylist(
        (Segment("test-7.ts", 10.0), Segment("test-8.ts", 9.96), Segment("test-9.ts", 10.24, discontinuity=True)),
        media_sequence=7,
    )
    assert pl.render() == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-MEDIA-SEQUENCE:7\n"
        "#EXT-X-TARGETDURATION:11\n"
        "#EXTINF:10.000,\n"
        "test-7.ts\n"
        "#EXTINF:9.960,\n"
        "test-8.ts\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:10.240,\n"
        "test-9.ts\n"
    )
    assert str(pl) == pl.render()
    assert pl.duration == pytest.approx(30.2)


def test_discontinuity_sequence_and_endlist() -> None:
    pl = MediaPlaylist((Segment("a/b-3.ts", 2.0),), media_sequence=3, discontinuity_sequence=2, endlist=True)
    assert pl.render() == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"
        "#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\na/b-3.ts\n#EXT-X-ENDLIST\n"
    )


@pytest.mark.parametrize(
    ("durations", "minimum", "target"),
    [
        ([2.0, 2.0], 0, 2),
        ([2.0, 2.001], 0, 3),
        ([2.0004], 0, 2),  # written as 2.000: the ceiling of what is written
        ([1.2, 0.5], 0, 2),
        ([0.0], 0, 1),
        ([], 0, 1),
        ([4.0], 6, 6),
    ],
)
def test_target_duration_is_ceiling_of_longest_extinf(durations: list[float], minimum: int, target: int) -> None:
    pl = MediaPlaylist(tuple(Segment(f"s{i}.ts", d) for i, d in enumerate(durations)), min_target_duration=minimum)
    assert pl.target_duration == target


@pytest.mark.parametrize(("uri", "duration"), [("", 1.0), ("a\nb.ts", 1.0), ("a.ts", -1.0), ("a.ts", float("nan"))])
def test_segment_validation(uri: str, duration: float) -> None:
    with pytest.raises(ValueError):
        Segment(uri, duration)


def test_parse_reads_what_ffmpeg_style_playlists_contain() -> None:
    text = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:12\n"
        "#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z\n#EXTINF:3.960000, no desc\nseg12.ts\n"
        "#EXT-X-DISCONTINUITY\n#EXTINF:4.0,\nseg13.ts\n"
    )
    pl = parse_media_playlist(text)
    assert pl.media_sequence == 12 and pl.version == 3
    assert pl.segments == (Segment("seg12.ts", 3.96), Segment("seg13.ts", 4.0, True))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "#EXT-X-VERSION:3\n",
        "#EXTM3U\nseg.ts\n",
        "#EXTM3U\n#EXTINF:abc,\nseg.ts\n",
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n",
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-1\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:3.5,\nseg.ts\n",
        "#EXTM3U\n#EXTINF:-3.5,\nseg.ts\n",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(PlaylistError):
        parse_media_playlist(text)


_segments = st.lists(
    st.builds(
        Segment,
        st.from_regex(r"[a-z0-9_/]{1,12}-[0-9]{1,6}\.ts", fullmatch=True),
        st.integers(0, 30_000).map(lambda ms: ms / 1000),
        st.booleans(),
    ),
    max_size=12,
)


@given(_segments, st.integers(0, 2**32), st.integers(0, 1000), st.booleans())
def test_render_parse_roundtrip(segments: list[Segment], seq: int, disc: int, endlist: bool) -> None:
    pl = MediaPlaylist(tuple(segments), seq, disc, endlist=endlist)
    text = pl.render()
    back = parse_media_playlist(text)
    assert back == pl
    assert back.render() == text
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and sum(line.startswith("#EXTINF:") for line in lines) == len(segments)
