"""WebRTC at the codec level, sans-IO: checking an SDP offer before it reaches aiortc, and the conversions between
FLV's H.264/AAC packets and what WebRTC carries (Annex B access units, B-frame detection, FLV tags built from
frames received over WebRTC).

Nothing here does I/O or knows about peers: :mod:`livesrv.servers.rtc` drives aiortc with these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from livesrv.codec.avc import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SEI,
    NAL_SPS,
    START_CODE,
    AVCConfig,
    AVCError,
    BitReader,
    nal_type,
    split_annexb,
    split_avcc,
    unescape_rbsp,
)

__all__ = [
    "MAX_OFFER_BYTES",
    "MAX_MEDIA_SECTIONS",
    "Media",
    "Offer",
    "OfferError",
    "check_offer",
    "flv_avc_frame",
    "is_b_slice",
    "annexb_access_unit",
    "avc_decoder_record",
    "flv_avc_sequence_header",
    "flv_avc_tag",
    "flv_aac_sequence_header",
    "flv_aac_tag",
]

#: An SDP offer larger than this is refused (a browser's is 3-8 KB, with every codec and candidate).
MAX_OFFER_BYTES: Final = 64 * 1024
#: m= sections an offer may have (a WHIP/WHEP client sends one audio and one video).
MAX_MEDIA_SECTIONS: Final = 8
#: A line longer than this is not SDP a client would send.
MAX_LINE: Final = 4096

_DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")


class OfferError(ValueError):
    """An offer this server cannot answer; the message says why (the HTTP answer's body)."""


@dataclass(slots=True)
class Media:
    """One m= section of an offer, as far as the server needs to know before aiortc reads it."""

    kind: str  # audio, video, application, ...
    port: int
    direction: str = "sendrecv"
    codecs: dict[int, str] = field(default_factory=dict)  # payload type -> "h264/90000", "opus/48000/2"
    fmtp: dict[int, str] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)

    def has_h264(self) -> bool:
        """H.264 with packetization-mode 1 (what every browser offers, and what the server sends)."""
        for pt, name in self.codecs.items():
            if name.startswith("h264/") and "packetization-mode=1" in self.fmtp.get(pt, "").replace(" ", ""):
                return True
        return False

    def has_opus(self) -> bool:
        return any(name.startswith("opus/48000") for name in self.codecs.values())


@dataclass(slots=True)
class Offer:
    media: list[Media]

    def kinds(self) -> list[str]:
        return [m.kind for m in self.media]


def check_offer(body: bytes, sending: bool) -> Offer:
    """Check an SDP offer: text, SDP's shape, at least one audio or video section, ICE credentials and a DTLS
    fingerprint, and codecs the server has: H.264 (packetization-mode 1) for video, Opus for audio.

    ``sending``: the server sends media (WHEP: the peer must receive it), else it receives (WHIP). Raises
    :class:`OfferError` with the reason.
    """
    if not body:
        raise OfferError("empty offer: the body must be an SDP offer (application/sdp)")
    if len(body) > MAX_OFFER_BYTES:
        raise OfferError(f"offer of {len(body)} bytes is over {MAX_OFFER_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OfferError(f"offer is not UTF-8 text (byte {exc.start})") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0].strip() != "v=0":
        raise OfferError("not an SDP offer: it must start with v=0")
    media: list[Media] = []
    session_ice: set[str] = set()
    session_fp = False
    ice_ok: list[set[str]] = []
    fp_ok: list[bool] = []
    for n, line in enumerate(lines, 1):
        if len(line) > MAX_LINE:
            raise OfferError(f"SDP line {n} is over {MAX_LINE} bytes")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise OfferError(f"SDP line {n} is not type=value: {line[:40]!r}")
        if any(ord(c) < 32 and c != "\t" for c in line):
            raise OfferError(f"SDP line {n} holds a control character")
        kind, value = line[0], line[2:]
        if kind == "m":
            if len(media) >= MAX_MEDIA_SECTIONS:
                raise OfferError(f"more than {MAX_MEDIA_SECTIONS} media sections")
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise OfferError(f"SDP line {n}: malformed m= line {line[:60]!r}")
            media.append(Media(parts[0].lower(), int(parts[1].split("/")[0])))
            ice_ok.append(set(session_ice))
            fp_ok.append(session_fp)
            continue
        if kind != "a":
            continue
        name, _, arg = value.partition(":")
        if name in ("ice-ufrag", "ice-pwd"):
            (ice_ok[-1] if media else session_ice).add(name)
        elif name == "fingerprint":
            if media:
                fp_ok[-1] = True
            else:
                session_fp = True
        if not media:
            continue
        m = media[-1]
        if name in _DIRECTIONS:
            m.direction = name
        elif name in ("rtpmap", "fmtp"):
            pt_text, _, rest = arg.partition(" ")
            if not pt_text.isdigit() or not 0 <= int(pt_text) <= 127:
                raise OfferError(f"SDP line {n}: bad payload type in a={name}")
            if name == "rtpmap":
                m.codecs[int(pt_text)] = rest.strip().lower()
            else:
                m.fmtp[int(pt_text)] = rest.strip().lower()
        elif name == "candidate":
            m.candidates.append(arg)
    av = [m for m in media if m.kind in ("audio", "video") and m.port != 0]
    if not av:
        raise OfferError("the offer has no audio or video (m=audio / m=video) section")
    for i, m in enumerate(media):
        if m.kind not in ("audio", "video") or m.port == 0:
            continue
        if len(ice_ok[i]) < 2:
            raise OfferError(f"the offer's {m.kind} section has no a=ice-ufrag/a=ice-pwd")
        if not fp_ok[i]:
            raise OfferError(f"the offer's {m.kind} section has no a=fingerprint (DTLS)")
        if sending and m.direction not in ("recvonly", "sendrecv"):
            raise OfferError(f"the offer's {m.kind} section is {m.direction}: a WHEP player must receive")
        if not sending and m.direction not in ("sendonly", "sendrecv"):
            raise OfferError(f"the offer's {m.kind} section is {m.direction}: a WHIP publisher must send")
        if m.kind == "video" and not m.has_h264():
            names = ", ".join(sorted({c.split("/")[0] for c in m.codecs.values()})) or "none"
            raise OfferError(f"the offer's video has no H.264 with packetization-mode=1 (offered: {names})")
        if m.kind == "audio" and not m.has_opus():
            names = ", ".join(sorted({c.split("/")[0] for c in m.codecs.values()})) or "none"
            raise OfferError(f"the offer's audio has no Opus/48000 (offered: {names})")
    return Offer(media)


# ------------------------------------------------------------------------------- H.264: FLV -> WebRTC


def is_b_slice(nal: bytes | memoryview) -> bool:
    """Is this coded slice NAL unit a B slice (slice_type 1 or 6)? Reads first_mb_in_slice and slice_type."""
    if len(nal) < 2 or nal_type(nal) not in (1, 5):
        return False
    try:
        r = BitReader(unescape_rbsp(bytes(nal[1:9])))
        r.ue()  # first_mb_in_slice
        return r.ue() % 5 == 1
    except AVCError:
        return False


def flv_avc_frame(
    payload: bytes, config: AVCConfig, keep_bframe: bool = False, keep_sei: bool = True
) -> tuple[bytes, bool] | None:
    """An FLV AVC coded-frame tag body (after the 5-byte header) as one Annex B access unit, the decoder
    configuration's SPS and PPS in front of an IDR (a WebRTC viewer joins at any keyframe). Returns
    ``(access_unit, idr)``, or None when nothing is left to send (B-frame dropped, AUDs only).

    ``keep_bframe`` off drops frames made of B slices, as SRS's ``bframe discard``: WebRTC players expect
    frames in presentation order.
    """
    nals = split_avcc(memoryview(payload)[5:], config.nalu_length_size)
    out: list[bytes | memoryview] = []
    idr = False
    in_band_ps = False
    for nal in nals:
        t = nal[0] & 0x1F
        if t == NAL_AUD or (t == NAL_SEI and not keep_sei):
            continue
        if t in (1, 5) and not keep_bframe and is_b_slice(nal):
            return None
        if t == NAL_IDR:
            idr = True
        elif t in (NAL_SPS, NAL_PPS):
            in_band_ps = True
        out.append(nal)
    if not out:
        return None
    parts: list[bytes | memoryview] = []
    if idr and not in_band_ps:
        for ps in (*config.sps, *config.pps):
            parts += (START_CODE, ps)
    for nal in out:
        parts += (START_CODE, nal)
    return b"".join(parts), idr


# ------------------------------------------------------------------------------- H.264: WebRTC -> FLV


@dataclass(slots=True)
class AccessUnit:
    """An H.264 access unit received over WebRTC, as FLV wants it."""

    avcc: bytes  # NAL units with 4-byte lengths, parameter sets and AUDs left out
    idr: bool
    sps: bytes | None
    pps: bytes | None


def annexb_access_unit(data: bytes) -> AccessUnit:
    """Split an Annex B access unit (what aiortc's H.264 depacketizer yields) into the FLV frame's NAL units and
    the parameter sets it carried."""
    sps = pps = None
    idr = False
    parts: list[bytes] = []
    for nal in split_annexb(data):
        t = nal[0] & 0x1F
        if t == NAL_SPS:
            sps = nal
            continue
        if t == NAL_PPS:
            pps = nal
            continue
        if t == NAL_AUD:
            continue
        if t == NAL_IDR:
            idr = True
        parts.append(len(nal).to_bytes(4, "big"))
        parts.append(nal)
    return AccessUnit(b"".join(parts), idr, sps, pps)


def avc_decoder_record(sps: bytes, pps: bytes) -> bytes:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) for one SPS and one PPS, 4-byte lengths."""
    if len(sps) < 4:
        raise AVCError(f"SPS of {len(sps)} bytes is too short")
    return (bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1)) + len(sps).to_bytes(2, "big") + sps
            + b"\x01" + len(pps).to_bytes(2, "big") + pps)


def flv_avc_sequence_header(sps: bytes, pps: bytes) -> bytes:
    """The FLV video tag body of an AVC sequence header."""
    return b"\x17\x00\x00\x00\x00" + avc_decoder_record(sps, pps)


def flv_avc_tag(avcc: bytes, keyframe: bool, composition_time: int = 0) -> bytes:
    """The FLV video tag body of an AVC coded frame."""
    return bytes((0x17 if keyframe else 0x27, 1)) + (composition_time & 0xFFFFFF).to_bytes(3, "big") + avcc


def flv_aac_sequence_header(asc: bytes) -> bytes:
    """The FLV audio tag body of an AAC sequence header (44.1 kHz stereo in the flags, as FLV wants for AAC)."""
    return b"\xaf\x00" + asc


def flv_aac_tag(raw: bytes) -> bytes:
    return b"\xaf\x01" + raw
