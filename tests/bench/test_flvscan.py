"""The load generator's cheap HTTP-FLV reader: any split of a valid response reads the same; bad bytes end it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench.flvscan import HTTPFLVReader, StreamEnd
from bench.measure import Thresholds, ViewerStats
from livesrv.codec import flv

HEAD_RAW = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n"
HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n"


@st.composite
def flv_bodies(draw):  # type: ignore[no-untyped-def]
    """A valid FLV body (header, metadata, sequence headers, frames) and its frame counts."""
    n = draw(st.integers(1, 40))
    parts = [flv.file_header(), flv.encode_tag(18, 0, b"\x02\x00\x0aonMetaData"),
             flv.encode_tag(9, 0, b"\x17\x00\x00\x00\x00"), flv.encode_tag(8, 0, b"\xaf\x00\x12\x10")]
    video = audio = 0
    for i in range(n):
        size = draw(st.integers(0, 3000))
        if draw(st.booleans()):
            parts.append(flv.encode_tag(9, i * 33, (b"\x27\x01" if video else b"\x17\x01") + bytes(size)))
            video += 1
        else:
            parts.append(flv.encode_tag(8, i * 33, b"\xaf\x01" + bytes(size)))
            audio += 1
    return b"".join(parts), video, audio


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return [p for p in out if p]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(body):
        size = sizes[i % len(sizes)] if sizes else len(body)
        piece = body[pos : pos + size]
        out.append(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
        pos += size
        i += 1
    return b"".join(out)


def read(response: bytes, cuts: list[int]) -> tuple[ViewerStats, HTTPFLVReader]:
    stats = ViewerStats(Thresholds(), 0.0, 100.0, 0.0)
    reader = HTTPFLVReader(stats)
    for i, piece in enumerate(split(response, cuts)):
        reader.feed(piece, 1.0 + i)
    return stats, reader


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flv_bodies(), st.lists(st.integers(0, 10**6), max_size=30), st.booleans(),
       st.lists(st.integers(1, 5000), min_size=1, max_size=5))
def test_any_split_and_chunking_reads_every_frame(body, cuts, use_chunked, sizes) -> None:  # type: ignore[no-untyped-def]
    data, video, audio = body
    response = HEAD_CHUNKED + chunked(data, sizes) + b"0\r\n\r\n" if use_chunked else HEAD_RAW + data
    stats, reader = read(response, cuts)
    assert stats.framing == 0 and stats.first_problem == ""
    assert (stats.video_frames, stats.audio_frames) == (video, audio)
    assert reader.scanner.tags == 3 + video + audio
    assert (stats.first_key_at is not None) == (video > 0)
    assert reader.done == use_chunked


@settings(max_examples=100, deadline=None)
@given(flv_bodies(), st.integers(0, 10**6), st.integers(1, 255), st.lists(st.integers(0, 10**6), max_size=5))
def test_a_wrong_previous_tag_size_is_caught(body, where, delta, cuts) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = body
    # Offsets of every PreviousTagSize after the first tag.
    offsets, pos = [], 13
    while pos < len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        pos += 11 + size
        offsets.append(pos)
        pos += 4
    at = offsets[where % len(offsets)]
    if at + 4 >= len(data):
        return  # the last size is only read with the next tag, which never comes
    value = (int.from_bytes(data[at : at + 4], "big") + delta) & 0xFFFFFFFF
    bad = data[:at] + value.to_bytes(4, "big") + data[at + 4 :]
    stats, _ = read(HEAD_RAW + bad, cuts)
    assert stats.framing >= 1 and "previous tag size" in stats.first_problem


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_garbage_bodies_only_ever_end_the_stream(junk, cuts, use_chunked) -> None:  # type: ignore[no-untyped-def]
    response = (HEAD_CHUNKED if use_chunked else HEAD_RAW) + junk
    try:
        read(response, cuts)
    except StreamEnd:
        pass


@pytest.mark.parametrize("head", [b"HTTP/1.1 404 Not Found\r\n\r\n", b"garbage\r\n\r\n"])
def test_a_refused_request_ends_the_stream(head: bytes) -> None:
    with pytest.raises(StreamEnd):
        read(head + b"FLV", [])


FIRST_BYTES = st.sampled_from([(0x17, 0), (0x17, 1), (0x27, 1), (0x57, 1), (0x1C, 1), (0x91, 0), (0x91, 1),
                               (0xAF, 0), (0xAF, 1), (0x2F, 1), (0x22, 1)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([8, 9]), st.integers(0, 5000), FIRST_BYTES, st.integers(0, 50)),
                max_size=60),
       st.lists(st.integers(0, 10**5), max_size=10))
def test_the_scanner_counts_exactly_as_tag_by_tag(tags, cuts) -> None:  # type: ignore[no-untyped-def]
    """The scanner's inline fast path for common frames agrees with ViewerStats.tag on any tag sequence."""
    body = flv.file_header() + b"".join(
        flv.encode_tag(typ, ts, bytes(first) + bytes(extra)) for typ, ts, first, extra in tags
    )
    scanned, _ = read(HEAD_RAW + body, cuts)
    direct = ViewerStats(Thresholds(), 0.0, 100.0, 0.0)
    for typ, ts, (b0, b1), _ in tags:
        direct.tag(typ, ts, b0, b1, 1.0)
    keys = ("video_frames", "audio_frames", "frames_before_key", "backwards", "ts_gaps", "v_ts", "a_ts", "media")
    assert {k: getattr(scanned, k) for k in keys} == {k: getattr(direct, k) for k in keys}
    assert (scanned.first_key_at is None) == (direct.first_key_at is None)
