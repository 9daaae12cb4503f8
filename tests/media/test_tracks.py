"""The tracks a stream is said to carry (FLV header flags) and the FLV formats that carry only some of them."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from livesrv.media.formats import FLV, WS_FLV, flv_format
from livesrv.media.packet import AUDIO, DATA, VIDEO, MediaPacket
from livesrv.media.tracks import NO_AUDIO_EVIDENCE_MS, Tracks, guess_tracks


def video(ts: int, key: bool = False) -> MediaPacket:
    return MediaPacket(VIDEO, ts, b"\x17\x01" if key else b"\x27\x01", key)


def audio(ts: int) -> MediaPacket:
    return MediaPacket(AUDIO, ts, b"\xaf\x01")


def test_seen_packets_decide() -> None:
    assert guess_tracks(False, True, {}, [video(0, True)]) == Tracks(False, True)
    assert guess_tracks(True, False, {}, [audio(0)]) == Tracks(True, False)
    assert guess_tracks(True, True, {}, [video(0, True), audio(10)]) == Tracks(True, True)


def test_metadata_announces_a_track_not_seen_yet() -> None:
    assert guess_tracks(False, True, {"audiocodecid": 10.0}, [video(0, True)]) == Tracks(True, True)
    assert guess_tracks(True, False, {"videocodecid": "avc1"}, []) == Tracks(True, True)
    assert guess_tracks(False, True, {"audiocodecid": 0, "videocodecid": None}, []) == Tracks(False, True)


def test_video_long_enough_without_audio_frames_means_no_audio() -> None:
    """An audio sequence header with no frame: no audio once the GOP proves it; not at the first keyframe."""
    first = [video(0, True)]
    assert guess_tracks(True, True, {}, first) == Tracks(True, True)
    gop = [video(t, t == 0) for t in range(0, NO_AUDIO_EVIDENCE_MS + 40, 40)]
    assert guess_tracks(True, True, {"audiocodecid": 10}, gop) == Tracks(False, True)
    assert guess_tracks(True, True, {}, [*gop, audio(NO_AUDIO_EVIDENCE_MS)]) == Tracks(True, True)


def test_formats_are_interned_and_filter_tracks() -> None:
    assert flv_format() is FLV and flv_format(websocket=True) is WS_FLV
    assert flv_format(False, True) is flv_format(False, True)
    pkts = [MediaPacket(DATA, 0, b"\x02meta"), video(0, True), audio(0)]
    assert FLV.encode(pkts) == b"".join(p.flv_bytes() for p in pkts)
    assert flv_format(False, True).encode(pkts) == pkts[0].flv_bytes() + pkts[1].flv_bytes()
    assert flv_format(True, False).encode(pkts) == pkts[0].flv_bytes() + pkts[2].flv_bytes()
    assert flv_format(True, False, True).encode([video(40)]) == b""  # no empty WebSocket frame


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([AUDIO, VIDEO]), st.integers(0, 5000)), max_size=40),
       st.booleans(), st.booleans())
def test_a_track_with_frames_in_the_gop_is_always_announced(frames, audio_seen, video_seen) -> None:  # type: ignore[no-untyped-def]
    gop = [MediaPacket(kind, ts, b"\x00\x01") for kind, ts in frames]
    has_audio = audio_seen or any(k == AUDIO for k, _ in frames)
    has_video = video_seen or any(k == VIDEO for k, _ in frames)
    t = guess_tracks(has_audio, has_video, {}, gop)
    assert t.video == has_video
    if any(k == AUDIO for k, _ in frames):
        assert t.audio
    if not has_audio:
        assert not t.audio
