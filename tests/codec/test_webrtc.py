"""livesrv.codec.webrtc: offer checks and the H.264/AAC conversions between FLV and WebRTC (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from livesrv.codec.avc import START_CODE, parse_avc_config, split_annexb
from livesrv.codec.webrtc import (
    MAX_OFFER_BYTES,
    OfferError,
    annexb_access_unit,
    avc_decoder_record,
    check_offer,
    flv_avc_frame,
    flv_avc_sequence_header,
    flv_avc_tag,
    is_b_slice,
)

SPS = bytes.fromhex("6742c01e95a0a0fd00f1226a")  # a baseline SPS (profile 66, level 3.0)
PPS = bytes.fromhex("68ce3c80")
FP = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)


def offer(*media: str, session: str = "") -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + session + "".join(media)).encode()


def section(kind: str = "video", direction: str = "recvonly", codec: str = "H264/90000",
            fmtp: str = "packetization-mode=1", extra: str = "") -> str:
    return (f"m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:{kind}\r\na={direction}\r\n"
            f"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{FP}\r\n"
            f"a=rtpmap:96 {codec}\r\n" + (f"a=fmtp:96 {fmtp}\r\n" if fmtp else "") + extra)


def test_a_browser_like_offer_is_accepted() -> None:
    o = check_offer(offer(section("video"), section("audio", codec="opus/48000/2", fmtp="minptime=10")), True)
    assert o.kinds() == ["video", "audio"]
    assert o.media[0].has_h264() and o.media[1].has_opus()


def test_session_level_credentials_count() -> None:
    body = offer(section("video").replace("a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n", "")
                 .replace(FP + "\r\n", ""), session=f"a=ice-ufrag:x\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\n{FP}\r\n")
    assert check_offer(body, True).kinds() == ["video"]


@pytest.mark.parametrize("body,sending,reason", [
    (b"", True, "empty offer"),
    (b"\xff\xfe", True, "not UTF-8"),
    (b"m=video 9 RTP 96\r\n", True, "must start with v=0"),
    (b"v=0\r\n" + b"a=x\r\n" * (MAX_OFFER_BYTES // 5), True, "bytes is over"),
    (offer(), True, "no audio or video"),
    (offer(section("video", codec="VP8/90000", fmtp="")), True, "no H.264"),
    (offer(section("video", fmtp="packetization-mode=0")), True, "no H.264"),
    (offer(section("audio", codec="PCMU/8000", fmtp="")), True, "no Opus"),
    (offer(section("video", direction="sendonly")), True, "must receive"),
    (offer(section("video", direction="recvonly")), False, "must send"),
    (offer(section("video").replace(FP, "a=x")), True, "no a=fingerprint"),
    (offer(section("video").replace("a=ice-pwd", "a=x")), True, "no a=ice-ufrag"),
    (offer(section("video"), session="garbage line\r\n"), True, "not type=value"),
    (offer(section("video", extra="a=rtpmap:999 H264/90000\r\n")), True, "bad payload type"),
    (offer(*[section("video")] * 9), True, "more than 8 media"),
    (offer(section("video", extra="a=" + "x" * 5000 + "\r\n")), True, "over 4096"),
])
def test_bad_offers_say_why(body: bytes, sending: bool, reason: str) -> None:
    with pytest.raises(OfferError, match=reason):
        check_offer(body, sending)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_answered_or_refused_cleanly(data: bytes) -> None:
    try:
        check_offer(data, True)
    except OfferError:
        pass


def slice_nal(nal_type: int, slice_type: int, first_mb: int = 0) -> bytes:
    """A slice header's first bits: first_mb_in_slice ue(v), slice_type ue(v), then padding."""
    bits = ""
    for v in (first_mb, slice_type):
        code = bin(v + 1)[2:]
        bits += "0" * (len(code) - 1) + code
    bits += "1" + "0" * (-(len(bits) + 1) % 8)
    return bytes((0x60 | nal_type,)) + int(bits, 2).to_bytes(len(bits) // 8, "big") + b"\x88\x84"


@pytest.mark.parametrize("slice_type,b", [(0, False), (1, True), (2, False), (5, False), (6, True), (7, False)])
def test_b_slices_are_told_apart(slice_type: int, b: bool) -> None:
    assert is_b_slice(slice_nal(1, slice_type, first_mb=37)) is b
    assert not is_b_slice(PPS) and not is_b_slice(b"")


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_flv_frames_become_annexb_with_parameter_sets_before_idr() -> None:
    cfg = parse_avc_config(avc_decoder_record(SPS, PPS))
    idr = slice_nal(5, 7)
    au, is_idr = flv_avc_frame(flv_avc_tag(avcc(b"\x09\xf0", idr), True), cfg)  # type: ignore[misc]
    assert is_idr and split_annexb(au) == [SPS, PPS, idr]  # AUD left out, SPS/PPS in front
    p = slice_nal(1, 5)
    au, is_idr = flv_avc_frame(flv_avc_tag(avcc(p), False), cfg)  # type: ignore[misc]
    assert not is_idr and au == START_CODE + p
    b = slice_nal(1, 6)
    assert flv_avc_frame(flv_avc_tag(avcc(b), False), cfg) is None  # bframe discard
    assert flv_avc_frame(flv_avc_tag(avcc(b), False), cfg, keep_bframe=True) == (START_CODE + b, False)
    sei = b"\x06\x05\x01\x00\x80"
    assert split_annexb(flv_avc_frame(flv_avc_tag(avcc(sei, p), False), cfg, keep_sei=False)[0]) == [p]  # type: ignore[index]


def test_webrtc_access_units_become_flv() -> None:
    idr = slice_nal(5, 7)
    au = annexb_access_unit(b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + idr)
    assert au.idr and au.sps == SPS and au.pps == PPS and au.avcc == avcc(idr)
    header = flv_avc_sequence_header(SPS, PPS)
    assert header[:5] == b"\x17\x00\x00\x00\x00"
    cfg = parse_avc_config(header[5:])
    assert (cfg.profile, cfg.level, cfg.sps, cfg.pps, cfg.nalu_length_size) == (0x42, 0x1E, (SPS,), (PPS,), 4)
    assert flv_avc_tag(b"x", False, 0)[:5] == b"\x27\x01\x00\x00\x00"
