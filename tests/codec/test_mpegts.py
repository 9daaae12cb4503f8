"""MPEG-TS muxer: packet layout and PSI bytes, PES timing, codec framing, properties, and real ffprobe/ffmpeg.

A small TS reader below (``read_ts``) checks what the muxer wrote; the FLV payload builders are shared with
the HLS segmenter tests.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesrv.codec import aac, avc, flv, mpegts
from livesrv.codec.avc import AVCError
from livesrv.codec.errors import ProtocolError
from livesrv.codec.flv import FLVDecoder, FLVTag
from livesrv.codec.mpegts import TSMuxer
from tests.codec.test_avc import AVC_RECORD, PPS_320, SPS_320
from tests.helpers import FFMPEG, require_tool

FFPROBE = "ffprobe"

# --------------------------------------------------------------------------- FLV payload builders

ASC_LC_44100_STEREO = b"\x12\x10"


def avc_sh(record: bytes = AVC_RECORD) -> bytes:
    return b"\x17\x00\x00\x00\x00" + record


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def avc_frame(*nals: bytes, key: bool = False, cts: int = 0) -> bytes:
    return bytes((0x17 if key else 0x27, 1)) + cts.to_bytes(3, "big", signed=True) + avcc(*nals)


IDR = b"\x65\x88\x84\x00\x33"
SLICE = b"\x41\x9a\x02\x04"


def key_frame(cts: int = 0, size: int = 0) -> bytes:
    return avc_frame(IDR + bytes(size), key=True, cts=cts)


def inter_frame(cts: int = 0, size: int = 0) -> bytes:
    return avc_frame(SLICE + bytes(size), cts=cts)


def aac_sh(asc: bytes = ASC_LC_44100_STEREO) -> bytes:
    return b"\xaf\x00" + asc


def aac_frame(raw: bytes = b"\x21\x10\x05") -> bytes:
    return b"\xaf\x01" + raw


def hevc_sh(record: bytes) -> bytes:
    """Enhanced RTMP: IsExHeader | keyframe | SequenceStart, FourCC hvc1."""
    return b"\x90hvc1" + record


def hevc_frame(data: bytes, key: bool, cts: int = 0) -> bytes:
    return bytes(((0x90 if key else 0xA0) | 1,)) + b"hvc1" + cts.to_bytes(3, "big", signed=True) + data


@dataclass(slots=True)
class Pkt:
    kind: int
    timestamp: int
    payload: bytes


def V(ts: int, payload: bytes) -> Pkt:
    return Pkt(flv.VIDEO, ts, payload)


def A(ts: int, payload: bytes) -> Pkt:
    return Pkt(flv.AUDIO, ts, payload)


# --------------------------------------------------------------------------- a small TS reader


@dataclass(slots=True)
class TSPacket:
    pid: int
    pusi: bool
    cc: int
    has_payload: bool
    payload: bytes
    pcr: int | None = None
    random_access: bool = False
    discontinuity: bool = False


@dataclass(slots=True)
class PES:
    pid: int
    stream_id: int
    pts: int | None
    dts: int | None
    length: int
    data: bytes
    random_access: bool
    pcr: int | None


@dataclass(slots=True)
class TS:
    packets: list[TSPacket]
    pes: list[PES] = field(default_factory=list)
    pat: list[dict[str, int]] = field(default_factory=list)
    pmt: list[dict[str, object]] = field(default_factory=list)

    def pes_of(self, pid: int) -> list[PES]:
        return [p for p in self.pes if p.pid == pid]


def _read_timestamp(b: bytes) -> int:
    assert b[0] & 1 and b[2] & 1 and b[4] & 1, "PTS/DTS marker bits"
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def read_section(payload: bytes) -> bytes:
    pointer = payload[0]
    sec = payload[1 + pointer :]
    length = ((sec[1] & 0x0F) << 8) | sec[2]
    section = sec[: 3 + length]
    assert mpegts.crc32_mpeg2(section) == 0, "PSI CRC"
    assert all(b == 0xFF for b in sec[3 + length :]), "PSI stuffing"
    return section


def read_ts(data: bytes, pmt_pid: int = mpegts.PMT_PID) -> TS:
    assert len(data) % 188 == 0, f"{len(data)} bytes is not a whole number of packets"
    packets: list[TSPacket] = []
    for i in range(0, len(data), 188):
        p = data[i : i + 188]
        assert p[0] == 0x47
        pid = (p[1] & 0x1F) << 8 | p[2]
        afc = (p[3] >> 4) & 3
        assert afc in (1, 3), "every packet the muxer writes carries payload"
        pos = 4
        pkt = TSPacket(pid, bool(p[1] & 0x40), p[3] & 0xF, bool(afc & 1), b"")
        if afc & 2:
            af_len = p[4]
            if af_len:
                flags = p[5]
                pkt.discontinuity = bool(flags & 0x80)
                pkt.random_access = bool(flags & 0x40)
                if flags & 0x10:
                    b = p[6:12]
                    pkt.pcr = b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7
                    assert b[4] & 0x7E == 0x7E and b[5] == 0
                stuffing = p[6 + (6 if flags & 0x10 else 0) : 5 + af_len]
                assert all(x == 0xFF for x in stuffing), "adaptation field stuffing"
            pos = 5 + af_len
            assert pos <= 188
        pkt.payload = p[pos:]
        packets.append(pkt)
    ts = TS(packets)
    open_pes: dict[int, tuple[TSPacket, bytearray]] = {}

    def close(pid: int) -> None:
        first, buf = open_pes.pop(pid)
        assert buf[:3] == b"\x00\x00\x01", "PES start code"
        sid = buf[3]
        length = buf[4] << 8 | buf[5]
        assert buf[6] & 0xC0 == 0x80
        flags = buf[7]
        hlen = buf[8]
        pts = dts = None
        if flags & 0x80:
            pts = _read_timestamp(bytes(buf[9:14]))
            assert buf[9] >> 4 == (3 if flags & 0x40 else 2)
            dts = pts
        if flags & 0x40:
            dts = _read_timestamp(bytes(buf[14:19]))
            assert buf[14] >> 4 == 1
        body = bytes(buf[9 + hlen :])
        if length:
            assert length == len(buf) - 6, "PES_packet_length"
        ts.pes.append(PES(pid, sid, pts, dts, length, body, first.random_access, first.pcr))

    for pkt in packets:
        if pkt.pid == 0:
            sec = read_section(pkt.payload)
            assert sec[0] == 0
            ts.pat.append({"tsid": sec[3] << 8 | sec[4], "program": sec[8] << 8 | sec[9],
                           "pmt_pid": (sec[10] & 0x1F) << 8 | sec[11], "version": (sec[5] >> 1) & 0x1F})
        elif pkt.pid == pmt_pid:
            sec = read_section(pkt.payload)
            assert sec[0] == 2
            pil = (sec[10] & 0xF) << 8 | sec[11]
            pos, end = 12 + pil, len(sec) - 4
            streams = []
            while pos < end:
                streams.append((sec[pos], (sec[pos + 1] & 0x1F) << 8 | sec[pos + 2]))
                pos += 5 + ((sec[pos + 3] & 0xF) << 8 | sec[pos + 4])
            ts.pmt.append({"version": (sec[5] >> 1) & 0x1F, "pcr_pid": (sec[8] & 0x1F) << 8 | sec[9],
                           "streams": streams, "program": sec[3] << 8 | sec[4]})
        else:
            if pkt.pusi:
                if pkt.pid in open_pes:
                    close(pkt.pid)
                open_pes[pkt.pid] = (pkt, bytearray())
            assert pkt.pid in open_pes, "payload before a PES start"
            open_pes[pkt.pid][1].extend(pkt.payload)
    for pid in list(open_pes):
        close(pid)
    return ts


def check_continuity(data: bytes, last: dict[int, int] | None = None) -> dict[int, int]:
    """Every PID's continuity counter goes up by one per packet, modulo 16 (all packets carry payload)."""
    last = {} if last is None else last
    for pkt in read_ts(data).packets:
        if pkt.pid in last:
            assert pkt.cc == (last[pkt.pid] + 1) % 16, f"CC jump on PID {pkt.pid:#x}"
        last[pkt.pid] = pkt.cc
    return last


def mux_all(muxer: TSMuxer, pkts: Iterable[Pkt], flush: bool = True) -> bytes:
    out = b"".join(muxer.mux(p) for p in pkts)
    return out + (muxer.flush() if flush else b"")


# --------------------------------------------------------------------------- PSI


# ffmpeg's PAT for transport_stream_id 1, program 1, PMT PID 0x1000 (as in every ffmpeg-made .ts file).
FFMPEG_PAT = bytes.fromhex("474000100000b00d0001c100000001f0002ab104b2") + b"\xff" * 167


def test_crc32_mpeg2() -> None:
    assert mpegts.crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC catalogue's check value
    assert mpegts.crc32_mpeg2(b"") == 0xFFFFFFFF


def test_pat_matches_ffmpeg() -> None:
    m = TSMuxer()
    mux_all(m, [V(0, avc_sh()), A(0, aac_sh())])
    assert m.psi()[:188] == FFMPEG_PAT


def test_pmt_lists_tracks_and_pcr_pid() -> None:
    m = TSMuxer()
    mux_all(m, [V(0, avc_sh()), A(0, aac_sh())])
    ts = read_ts(m.psi())
    assert ts.pat == [{"tsid": 1, "program": 1, "pmt_pid": 0x1000, "version": 0}]
    assert ts.pmt == [{"version": 0, "pcr_pid": 0x100, "streams": [(0x1B, 0x100), (0x0F, 0x101)], "program": 1}]
    assert m.pcr_pid == 0x100 and m.has_video and m.has_audio

    pure = TSMuxer(pmt_pid=0x200, video_pid=0x300, audio_pid=0x301, program_number=7, transport_stream_id=9)
    mux_all(pure, [A(0, aac_sh())])
    ts = read_ts(pure.psi(), pmt_pid=0x200)
    assert ts.pat[0]["tsid"] == 9 and ts.pat[0]["pmt_pid"] == 0x200
    assert ts.pmt == [{"version": 0, "pcr_pid": 0x301, "streams": [(0x0F, 0x301)], "program": 7}]


def test_invalid_pids() -> None:
    with pytest.raises(ValueError):
        TSMuxer(video_pid=0x101, audio_pid=0x101)
    with pytest.raises(ValueError):
        TSMuxer(pmt_pid=0x1FFF)


def test_psi_is_written_before_the_first_pes_and_when_tracks_change() -> None:
    m = TSMuxer()
    out = mux_all(m, [V(0, avc_sh()), V(0, key_frame())])
    ts = read_ts(out)
    assert ts.packets[0].pid == 0 and ts.packets[1].pid == 0x1000
    assert ts.pmt[0]["streams"] == [(0x1B, 0x100)]
    # Audio shows up later: a new PMT version precedes its first PES.
    out = mux_all(m, [A(10, aac_sh()), A(10, aac_frame()), V(40, inter_frame())])
    ts = read_ts(out)
    assert [p.pid for p in ts.packets[:3]] == [0, 0x1000, 0x101]
    assert ts.pmt[0]["version"] == 1 and ts.pmt[0]["streams"] == [(0x1B, 0x100), (0x0F, 0x101)]
    # No change, no PSI.
    assert all(p.pid not in (0, 0x1000) for p in read_ts(mux_all(m, [V(80, inter_frame())])).packets)


def test_psi_without_advance_reuses_the_last_counters() -> None:
    m = TSMuxer()
    mux_all(m, [V(0, avc_sh())])
    first = read_ts(m.psi()).packets
    snapshot = read_ts(m.psi(advance=False)).packets
    assert [p.cc for p in snapshot] == [p.cc for p in first]
    nxt = read_ts(m.psi()).packets
    assert [p.cc for p in nxt] == [(p.cc + 1) % 16 for p in first]


# --------------------------------------------------------------------------- video


def test_h264_access_units() -> None:
    m = TSMuxer()
    out = mux_all(m, [V(0, avc_sh()), V(0, key_frame(cts=80)), V(40, inter_frame(cts=40))])
    ts = read_ts(out)
    video = ts.pes_of(0x100)
    assert len(video) == 2
    k, i = video
    assert k.stream_id == 0xE0 and k.random_access and not i.random_access
    assert avc.split_annexb(k.data) == [avc.AUD_H264, SPS_320, PPS_320, IDR]
    assert avc.split_annexb(i.data) == [avc.AUD_H264, SLICE]
    assert (k.dts, k.pts) == (0, 80 * 90)
    assert (i.dts, i.pts) == (40 * 90, 80 * 90)
    assert k.pcr == 0 and i.pcr == 40 * 90  # PCR rides on every video PES and equals its DTS
    assert m.avc_config is not None and m.avc_config.sps == (SPS_320,)


def test_h264_keeps_inband_parameter_sets_and_aud_once() -> None:
    m = TSMuxer()
    sps2 = SPS_320[:-1] + b"\xa9"
    frame = avc_frame(avc.AUD_H264, sps2, PPS_320, b"\x06\x05\x01\x80", IDR, key=True)
    ts = read_ts(mux_all(m, [V(0, avc_sh()), V(0, frame)]))
    assert avc.split_annexb(ts.pes_of(0x100)[0].data) == [avc.AUD_H264, sps2, PPS_320, b"\x06\x05\x01\x80", IDR]


def test_h264_frames_without_sequence_header_still_mux() -> None:
    m = TSMuxer()
    ts = read_ts(mux_all(m, [V(0, avc_frame(SPS_320, PPS_320, IDR, key=True))]))
    assert ts.pmt[0]["streams"] == [(0x1B, 0x100)]
    assert avc.split_annexb(ts.pes_of(0x100)[0].data) == [avc.AUD_H264, SPS_320, PPS_320, IDR]


def test_large_video_frame_uses_unbounded_pes_and_stuffing() -> None:
    m = TSMuxer()
    out = mux_all(m, [V(0, avc_sh()), V(0, key_frame(size=70000)), V(40, inter_frame(size=5))])
    ts = read_ts(out)
    big, small = ts.pes_of(0x100)
    assert big.length == 0 and len(big.data) == 6 + 4 + len(SPS_320) + 4 + len(PPS_320) + 4 + len(IDR) + 70000
    assert small.length == 3 + 5 + len(small.data)
    assert len(small.data) == 6 + 4 + len(SLICE) + 5


def test_negative_cts_is_clamped_to_dts() -> None:
    m = TSMuxer()
    ts = read_ts(mux_all(m, [V(0, avc_sh()), V(100, key_frame(cts=-40))]))
    pes = ts.pes_of(0x100)[0]
    assert pes.pts == pes.dts == 9000


def test_timestamps_wrap_at_33_bits() -> None:
    m = TSMuxer()
    ts_ms = (1 << 33) // 90 + 10  # beyond 2**33 ticks
    pes = read_ts(mux_all(m, [V(0, avc_sh()), V(ts_ms, key_frame())])).pes_of(0x100)[0]
    assert pes.dts == (ts_ms * 90) & mpegts.MASK_33


def test_hevc_access_units() -> None:
    from tests.codec.test_avc import HEVC_SPS, _hevc_record

    vps, sps, pps = b"\x40\x01\x0c\x01", bytes.fromhex(HEVC_SPS["main_1080p"][0]), b"\x44\x01\xc1\x72"
    idr = b"\x26\x01\xaf\x1d\x80"  # IDR_W_RADL (19)
    trail = b"\x02\x01\xd0\x29"  # TRAIL_R (1)
    m = TSMuxer()
    out = mux_all(
        m,
        [V(0, hevc_sh(_hevc_record(vps, sps, pps))), V(0, hevc_frame(avcc(idr), True, 40)), V(40, hevc_frame(avcc(trail), False))],
    )
    ts = read_ts(out)
    assert ts.pmt[0]["streams"] == [(0x24, 0x100)]
    k, i = ts.pes_of(0x100)
    assert avc.split_annexb(k.data) == [avc.AUD_HEVC, vps, sps, pps, idr] and k.random_access
    assert avc.split_annexb(i.data) == [avc.AUD_HEVC, trail] and not i.random_access
    assert k.pts == 40 * 90 and k.dts == 0
    assert m.hevc_config is not None and m.avc_config is None
    # The legacy (codec id 12) HEVC framing works the same way.
    legacy = TSMuxer()
    out = mux_all(legacy, [V(0, b"\x1c\x00\x00\x00\x00" + _hevc_record(vps, sps, pps)),
                           V(0, b"\x1c\x01\x00\x00\x00" + avcc(idr))])
    assert avc.split_annexb(read_ts(out).pes_of(0x100)[0].data) == [avc.AUD_HEVC, vps, sps, pps, idr]


def test_unsupported_codecs_are_skipped() -> None:
    m = TSMuxer()
    out = mux_all(m, [
        V(0, b"\x90av01" + b"\x81\x00\x0c\x00"),  # AV1 sequence start
        V(0, b"\x91av01" + b"\x12\x00"),  # AV1 coded frame
        A(0, b"\x91Opus" + b"\xfc\xff\xfe"),  # Enhanced audio Opus frame
        A(0, b"\x72\x00"),  # G.711 A-law
        A(0, aac_frame()),  # raw AAC before its sequence header
        Pkt(flv.SCRIPT, 0, b"\x02\x00\x0aonMetaData"),
        V(0, b"\x57\x00"),  # command frame
        V(0, b"\x17\x02\x00\x00\x00"),  # end of sequence
    ])
    assert out == b"" and m.skipped == 5 and not m.has_video and not m.has_audio


def test_malformed_input_raises_and_muxer_goes_on() -> None:
    m = TSMuxer()
    good = mux_all(m, [V(0, avc_sh()), V(0, key_frame())])
    with pytest.raises(AVCError):
        m.mux(V(40, b"\x27\x01\x00\x00\x00\x00\x00\x00\x09\x41"))  # NAL length runs past the end
    with pytest.raises(ProtocolError):
        m.mux(V(40, b"\x17\x00\x00\x00\x00\x01\x42"))  # truncated configuration record
    with pytest.raises(ProtocolError):
        m.mux(A(40, b"\xaf\x00\x12"))  # truncated ASC
    with pytest.raises(mpegts.TSError):
        m.mux(A(40, b"\x2f" + bytes(70000)))  # an "MP3 frame" larger than a PES can hold
    assert not m.has_audio
    after = m.mux(V(40, inter_frame()))
    check_continuity(good + after)
    assert m.avc_config is not None and m.avc_config.sps == (SPS_320,)


# --------------------------------------------------------------------------- audio


def test_aac_frames_get_adts_and_are_grouped() -> None:
    m = TSMuxer(audio_max_delay_ms=100)
    raws = [bytes([i]) * (10 + i) for i in range(10)]
    out = mux_all(m, [A(0, aac_sh())] + [A(round(i * 23.22), aac_frame(r)) for i, r in enumerate(raws)])
    ts = read_ts(out)
    audio = ts.pes_of(0x101)
    # 0..92 ms in the first PES (5 frames: 0, 23, 46, 70, 93), the rest in the second.
    assert [p.pts for p in audio] == [0, 116 * 90]
    assert all(p.stream_id == 0xC0 and p.dts == p.pts and p.random_access for p in audio)
    assert audio[0].pcr == 0  # pure audio: the PCR is on the audio PID
    es = b"".join(p.data for p in audio)
    pos, frames = 0, []
    while pos < len(es):
        hdr = aac.parse_adts_header(es[pos:])
        assert (hdr.profile, hdr.sample_rate_index, hdr.channel_config) == (1, 4, 2)
        frames.append(es[pos + 7 : pos + hdr.frame_length])
        pos += hdr.frame_length
    assert frames == raws
    assert audio[0].length == 3 + 5 + len(audio[0].data)


def test_audio_is_flushed_before_video_and_can_be_unbuffered() -> None:
    m = TSMuxer()
    out = mux_all(m, [V(0, avc_sh()), A(0, aac_sh()), V(0, key_frame()), A(10, aac_frame()), A(30, aac_frame()),
                      V(40, inter_frame())], flush=False)
    pids = [p.pid for p in read_ts(out).packets if p.pusi and p.pid in (0x100, 0x101)]
    assert pids == [0x100, 0x101, 0x100]
    assert m.flush() == b""

    unbuffered = TSMuxer(audio_max_delay_ms=0)
    out = mux_all(unbuffered, [A(0, aac_sh()), A(0, aac_frame()), A(23, aac_frame())], flush=False)
    assert [p.pts for p in read_ts(out).pes_of(0x101)] == [0, 23 * 90]


def test_audio_pes_never_exceeds_its_length_field() -> None:
    m = TSMuxer(audio_max_delay_ms=10_000)
    raw = bytes(5000)
    out = mux_all(m, [A(0, aac_sh())] + [A(i, aac_frame(raw)) for i in range(30)])
    audio = read_ts(out).pes_of(0x101)
    assert len(audio) == 3 and all(0 < p.length <= 0xFFFF for p in audio)
    assert sum(len(p.data) for p in audio) == 30 * 5007


@pytest.mark.parametrize(("frame", "flv_byte", "stream_type"), [
    (b"\xff\xfb\x90\x64", 0x2F, 0x03),  # MPEG-1 layer 3, 44.1 kHz
    (b"\xff\xf3\x90\x64", 0x2B, 0x04),  # MPEG-2 layer 3 (22.05 kHz)
    (b"\x00\x00\x00\x00", 0x2B, 0x04),  # no frame header: FLV says 22 kHz
    (b"\x00\x00\x00\x00", 0xEE, 0x04),  # MP3 8 kHz sound format
])
def test_mp3_passthrough(frame: bytes, flv_byte: int, stream_type: int) -> None:
    m = TSMuxer()
    ts = read_ts(mux_all(m, [A(0, bytes((flv_byte,)) + frame), A(26, bytes((flv_byte,)) + frame)]))
    assert ts.pmt[0]["streams"] == [(stream_type, 0x101)]
    assert b"".join(p.data for p in ts.pes_of(0x101)) == frame * 2


# --------------------------------------------------------------------------- discontinuity / reset


def test_discontinuity_flags_the_next_pcr_and_keeps_counters() -> None:
    m = TSMuxer()
    first = mux_all(m, [V(0, avc_sh()), A(0, aac_sh()), V(0, key_frame()), A(5, aac_frame())], flush=False)
    tail = m.discontinuity()
    assert read_ts(tail).pes_of(0x101)[0].pts == 5 * 90  # buffered audio is not lost
    after = mux_all(m, [V(0, key_frame()), V(40, inter_frame())])
    pcr_packets = [p for p in read_ts(after).packets if p.pcr is not None]
    assert pcr_packets[0].discontinuity and not pcr_packets[1].discontinuity
    check_continuity(first + tail + after)
    # The configuration survived: SPS/PPS still go before the IDR.
    assert avc.split_annexb(read_ts(after).pes_of(0x100)[0].data)[1] == SPS_320


def test_reset_codecs_forgets_tracks() -> None:
    m = TSMuxer()
    mux_all(m, [V(0, avc_sh()), A(0, aac_sh())])
    m.reset_codecs()
    assert not m.has_video and not m.has_audio and m.pcr_pid == 0x1FFF
    mux_all(m, [A(0, aac_sh())])
    assert read_ts(m.psi()).pmt[0]["streams"] == [(0x0F, 0x101)]


# --------------------------------------------------------------------------- properties

_events = st.lists(
    st.one_of(
        st.tuples(st.just("v"), st.booleans(), st.lists(st.integers(1, 3000), min_size=1, max_size=3),
                  st.integers(0, 80), st.integers(0, 200)),
        st.tuples(st.just("a"), st.integers(1, 1500), st.integers(0, 60)),
        st.tuples(st.just("psi")),
        st.tuples(st.just("flush")),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events, st.integers(0, 200))
def test_property_packets_counters_and_timestamps(events: list[tuple], audio_delay: int) -> None:
    m = TSMuxer(audio_max_delay_ms=audio_delay)
    out = bytearray(mux_all(m, [V(0, avc_sh()), A(0, aac_sh())], flush=False))
    ts_ms = 0
    video_frames = audio_bytes = 0
    for ev in events:
        if ev[0] == "v":
            _, key, sizes, dt, cts = ev
            ts_ms += dt
            nals = [(IDR if key and i == 0 else SLICE) + bytes(s) for i, s in enumerate(sizes)]
            out += m.mux(V(ts_ms, avc_frame(*nals, key=key, cts=cts)))
            video_frames += 1
        elif ev[0] == "a":
            _, size, dt = ev
            ts_ms += dt
            out += m.mux(A(ts_ms, aac_frame(bytes(size))))
            audio_bytes += 7 + size
        elif ev[0] == "psi":
            out += m.psi()
        else:
            out += m.flush()
    out += m.flush()
    data = bytes(out)

    assert len(data) % 188 == 0
    assert all(data[i] == 0x47 for i in range(0, len(data), 188))
    check_continuity(data)
    ts = read_ts(data)
    video = ts.pes_of(0x100)
    audio = ts.pes_of(0x101)
    assert len(video) == video_frames
    assert sum(len(p.data) for p in audio) == audio_bytes
    for track in (video, audio):
        dts = [p.dts for p in track]
        assert dts == sorted(dts), "DTS monotonic per PID"
        assert all(p.pts is not None and p.dts is not None and p.pts >= p.dts for p in track)
    assert all(avc.split_annexb(p.data)[0] == avc.AUD_H264 for p in video)
    pcrs = [p.pcr for p in ts.packets if p.pcr is not None]
    assert pcrs == sorted(pcrs) and all(p.pid == 0x100 for p in ts.packets if p.pcr is not None)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([flv.AUDIO, flv.VIDEO, flv.SCRIPT]), st.binary(max_size=64), st.booleans())
def test_fuzz_mux_raises_only_protocol_errors(kind: int, payload: bytes, configured: bool) -> None:
    m = TSMuxer()
    if configured:
        mux_all(m, [V(0, avc_sh()), A(0, aac_sh())])
    try:
        out = m.mux(Pkt(kind, 0, payload)) + m.flush()
    except ProtocolError:
        return
    assert len(out) % 188 == 0


# --------------------------------------------------------------------------- real tools


def flv_packets(path: Path) -> list[Pkt]:
    return [Pkt(e.tag_type, e.timestamp, e.payload) for e in FLVDecoder().feed(path.read_bytes()) if isinstance(e, FLVTag)]


def ffprobe(path: Path | str, *extra: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [require_tool(FFPROBE), "-v", "error", "-show_streams", "-show_format", "-of", "json", *extra, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)


def ffmpeg_decode_errors(path: Path | str, *extra: str) -> str:
    """Everything ffmpeg says at -v error while decoding the whole input (empty = clean)."""
    proc = subprocess.run(
        [require_tool(FFMPEG), "-hide_banner", "-nostdin", "-v", "error", *extra, "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_sample_flv_to_ts_plays_in_ffmpeg(sample_flv: Path, tmp_path: Path) -> None:
    m = TSMuxer()
    data = mux_all(m, flv_packets(sample_flv))
    check_continuity(data)
    out = tmp_path / "sample.ts"
    out.write_bytes(data)
    info = ffprobe(out)
    streams = {s["codec_type"]: s for s in info["streams"]}
    v, a = streams["video"], streams["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["profile"]) == ("h264", 320, 240, "Constrained Baseline")
    assert (a["codec_name"], a["sample_rate"], a["channels"], a["profile"]) == ("aac", "44100", 2, "LC")
    assert Fraction(v["r_frame_rate"]) == 25
    assert 0 <= float(v["start_time"]) < 0.2 and 0 <= float(a["start_time"]) < 0.2
    assert 5.8 < float(info["format"]["duration"]) < 6.3
    assert ffmpeg_decode_errors(out) == ""
    # The API's view of the stream, from the SPS.
    assert m.avc_config is not None
    sps = avc.parse_sps(m.avc_config.sps[0])
    assert (sps.width, sps.height, sps.profile_idc) == (320, 240, 66)


def _mp4_to_flv_packets(path: Path) -> list[Pkt]:
    """Demux an MP4 with PyAV into FLV-level packets (hvcC/avcC + AVCC samples, ms timestamps, CTS)."""
    import av

    pkts: list[Pkt] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        hevc = stream.codec_context.name == "hevc"
        extradata = bytes(stream.codec_context.extradata)
        pkts.append(V(0, hevc_sh(extradata) if hevc else avc_sh(extradata)))
        packets = [p for p in container.demux(stream) if p.size]
        first_dts = min(p.dts for p in packets)
        for p in packets:
            dts = round((p.dts - first_dts) * tb * 1000)
            cts = round((p.pts - first_dts) * tb * 1000) - dts
            body = bytes(p)
            pkts.append(V(dts, hevc_frame(body, p.is_keyframe, cts) if hevc else
                          bytes((0x17 if p.is_keyframe else 0x27, 1)) + cts.to_bytes(3, "big", signed=True) + body))
    return pkts


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_b_frames_with_composition_time_play_in_ffmpeg(codec: str, tmp_path: Path) -> None:
    """Real encoder output with B-frames (so CTS > 0), H.264 and H.265, through the muxer into ffprobe."""
    src = tmp_path / "src.mp4"
    params = ["-x265-params", "log-level=error:keyint=25:bframes=3"] if codec == "libx265" else ["-bf", "3", "-g", "25"]
    subprocess.run(
        [require_tool(FFMPEG), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2",
         "-c:v", codec, "-preset", "ultrafast" if codec == "libx264" else "fast", *params, "-pix_fmt", "yuv420p",
         str(src)],
        check=True, timeout=120,
    )
    pkts = _mp4_to_flv_packets(src)
    m = TSMuxer()
    out = tmp_path / "out.ts"
    out.write_bytes(mux_all(m, pkts))
    info = ffprobe(out, "-count_frames")
    v = info["streams"][0]
    assert (v["codec_name"], v["width"], v["height"]) == ("h264" if codec == "libx264" else "hevc", 320, 240)
    assert int(v["nb_read_frames"]) == 50
    assert ffmpeg_decode_errors(out) == ""
    ts = read_ts(out.read_bytes())
    assert any(p.pts != p.dts for p in ts.pes_of(0x100))


def test_mp3_flv_plays_in_ffmpeg(tmp_path: Path) -> None:
    src = tmp_path / "mp3.flv"
    subprocess.run(
        [require_tool(FFMPEG), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
         "-c:a", "libmp3lame", "-b:a", "64k", "-f", "flv", str(src)],
        check=True, timeout=60,
    )
    m = TSMuxer()
    out = tmp_path / "mp3.ts"
    out.write_bytes(mux_all(m, flv_packets(src)))
    a = ffprobe(out)["streams"][0]
    assert (a["codec_name"], a["sample_rate"]) == ("mp3", "44100")
    assert read_ts(out.read_bytes()).pmt[0]["streams"] == [(0x03, 0x101)]
    assert ffmpeg_decode_errors(out) == ""


# --------------------------------------------------------------------------- the fast paths against the reference


def _ref_timestamp(prefix: int, t: int) -> bytes:
    t &= mpegts.MASK_33
    return bytes((prefix << 4 | (t >> 29) & 0x0E | 1, (t >> 22) & 0xFF, (t >> 14) & 0xFE | 1, (t >> 7) & 0xFF,
                  (t << 1) & 0xFE | 1))


def _ref_pcr(base: int) -> bytes:
    base &= mpegts.MASK_33
    return bytes((base >> 25 & 0xFF, base >> 17 & 0xFF, base >> 9 & 0xFF, base >> 1 & 0xFF, (base & 1) << 7 | 0x7E, 0))


class ReferenceTSMuxer(TSMuxer):
    """The muxer's byte-producing paths as they were before they were made fast: one transport packet at a
    time in a Python loop, the PES built by repeated concatenation, every tag through parse_video/parse_audio
    and every ADTS header through adts_header. Kept here, not in src, as the definition the fast paths must
    match byte for byte (PSI, tracks and configurations are shared: they did not change). bench/mux.py
    measures it as "old".
    """

    def mux(self, pkt: Pkt) -> bytes:
        return self.mux_tag(pkt.kind, pkt.timestamp, pkt.payload)

    def mux_tag(self, kind: int, timestamp: int, payload: bytes | bytearray | memoryview) -> bytes:
        if kind == flv.VIDEO:
            return self._ref_mux_video(timestamp, payload)
        if kind == flv.AUDIO:
            return self._ref_mux_audio(timestamp, payload)
        return b""

    def mux_into(self, pkt: Pkt, out: list[bytes | bytearray]) -> int:
        data = self.mux(pkt)
        if data:
            out.append(data)
        return len(data)

    def _ref_mux_video(self, timestamp: int, payload: bytes | bytearray | memoryview) -> bytes:
        info = flv.parse_video(payload)
        if info.command is not None or info.packet_type == flv.PACKET_METADATA or info.sequence_end:
            return b""
        codec = info.codec
        if info.multitrack or codec not in (flv.CODEC_AVC, flv.CODEC_HEVC):
            self.skipped += 1
            return b""
        body = memoryview(payload)[info.data_offset :]
        if info.sequence_header:
            self._video_config(codec, body, info.packet_type)
            return b""
        if info.packet_type not in (flv.PACKET_CODED_FRAMES, flv.PACKET_CODED_FRAMES_X) or not body:
            return b""
        track = self._video
        if track is None or track.codec != codec:
            track = self._set_video(mpegts._VideoTrack(
                codec, mpegts.STREAM_TYPE_H264 if codec == flv.CODEC_AVC else mpegts.STREAM_TYPE_HEVC))
        nals = avc.split_avcc(body, track.length_size)
        if not nals:
            return b""
        if codec == flv.CODEC_AVC:
            types = [nal[0] & 0x1F for nal in nals]
            random_access = avc.NAL_IDR in types
            has_ps = avc.NAL_SPS in types
            aud, aud_type = mpegts._AUD_H264, avc.NAL_AUD
        else:
            types = [(nal[0] >> 1) & 0x3F for nal in nals]
            random_access = any(avc.HEVC_NAL_BLA_W_LP <= t <= avc.HEVC_NAL_RSV_IRAP_23 for t in types)
            has_ps = avc.HEVC_NAL_SPS in types
            aud, aud_type = mpegts._AUD_HEVC, avc.HEVC_NAL_AUD
        parts: list[bytes | memoryview] = [aud]
        if random_access and not has_ps:
            parts.append(track.param_sets)
        for nal, t in zip(nals, types):
            if t != aud_type:
                parts.append(avc.START_CODE)
                parts.append(nal)
        dts = timestamp * mpegts.CLOCK_KHZ
        pts = max(dts, (timestamp + info.composition_time) * mpegts.CLOCK_KHZ)
        out = self._ref_flush_audio() if self._abuf else b""
        es = b"".join(parts)
        return out + self._ref_write_pes(self.video_pid, mpegts.STREAM_ID_VIDEO, pts, dts, es, random_access, False)

    def _ref_mux_audio(self, timestamp: int, payload: bytes | bytearray | memoryview) -> bytes:
        info = flv.parse_audio(payload)
        codec = info.codec
        if info.multitrack or codec not in (flv.CODEC_AAC, flv.CODEC_MP3):
            self.skipped += 1
            return b""
        body = memoryview(payload)[info.data_offset :]
        if codec == flv.CODEC_AAC:
            if info.sequence_header:
                self._set_audio(mpegts._AudioTrack(codec, mpegts.STREAM_TYPE_AAC, aac.parse_asc(body)))
                return b""
            if info.packet_type != flv.AUDIO_PACKET_CODED_FRAMES or not body:
                return b""
            track = self._audio
            if track is None or track.asc is None or track.codec != codec:
                self.skipped += 1
                return b""
            frame = aac.adts_header(track.asc, len(body)) + body
        else:
            if info.packet_type != flv.AUDIO_PACKET_CODED_FRAMES or not body:
                return b""
            if len(body) > mpegts._MAX_AUDIO_PES:
                raise mpegts.TSError(f"audio frame of {len(body)} bytes does not fit a PES packet")
            stream_type = mpegts._mp3_stream_type(body, info.sample_rate)
            if self._audio is None or self._audio.stream_type != stream_type:
                self._set_audio(mpegts._AudioTrack(codec, stream_type))
            frame = bytes(body)
        pts = timestamp * mpegts.CLOCK_KHZ
        out = b""
        if self._abuf and (
            pts - self._abuf_pts >= self.audio_max_delay_ms * mpegts.CLOCK_KHZ
            or pts < self._abuf_pts
            or self._abuf_size + len(frame) > mpegts._MAX_AUDIO_PES
        ):
            out = self._ref_flush_audio()
        if not self._abuf:
            self._abuf_pts = pts
        self._abuf.append(frame)
        self._abuf_size += len(frame)
        if self.audio_max_delay_ms <= 0:
            out += self._ref_flush_audio()
        return out

    def flush(self) -> bytes:
        return self._ref_flush_audio() if self._abuf else b""

    def _ref_flush_audio(self) -> bytes:
        es = b"".join(self._abuf)
        self._abuf.clear()
        self._abuf_size = 0
        return self._ref_write_pes(
            self.audio_pid, mpegts.STREAM_ID_AUDIO, self._abuf_pts, self._abuf_pts, es, self._video is None, True
        )

    def _ref_write_pes(
        self, pid: int, stream_id: int, pts: int, dts: int, es: bytes, random_access: bool, bounded: bool
    ) -> bytes:
        out = self.psi() if self._psi_dirty else b""
        if pts != dts:
            header = b"\xc0\x0a" + _ref_timestamp(3, pts) + _ref_timestamp(1, dts)
        else:
            header = b"\x80\x05" + _ref_timestamp(2, pts)
        length = 1 + len(header) + len(es)
        if length > 0xFFFF:
            assert not bounded
            length = 0
        pes = b"".join((b"\x00\x00\x01", bytes((stream_id, length >> 8, length & 0xFF, 0x84)), header, es))
        af = 0
        fields = b""
        if pid == self.pcr_pid:
            af = 0x10
            fields = _ref_pcr(dts)
            if self._discontinuity:
                af |= 0x80
                self._discontinuity = False
        if random_access:
            af |= 0x40
        return out + self._ref_packetize(pid, pes, bytes((af,)) + fields if af else None)

    def _ref_packetize(self, pid: int, data: bytes, first_af: bytes | None) -> bytes:
        out = bytearray()
        mv = memoryview(data)
        n = len(data)
        cc = self._cc.get(pid, 0)
        hi = pid >> 8
        lo = pid & 0xFF
        pos = 0
        body = first_af
        pusi = 0x40
        while pos < n:
            af_len = 0 if body is None else 1 + len(body)
            chunk = min(184 - af_len, n - pos)
            stuff = 184 - af_len - chunk
            if body is not None:
                af = bytes((len(body) + stuff,)) + body + b"\xff" * stuff
            elif stuff == 1:
                af = b"\x00"
            elif stuff:
                af = bytes((stuff - 1, 0)) + b"\xff" * (stuff - 2)
            else:
                af = b""
            out += bytes((0x47, pusi | hi, lo, (0x30 if af else 0x10) | cc))
            if af:
                out += af
            out += mv[pos : pos + chunk]
            pos += chunk
            cc = (cc + 1) & 0xF
            body = None
            pusi = 0
        self._cc[pid] = cc
        return bytes(out)


# A 251-byte period (prime, so never a multiple of 184 or 188): a payload slice cut at the wrong offset shows.
_PATTERN = bytes((i * 37 + 11) % 251 for i in range(251)) * 600


def body_of(size: int, seed: int = 0) -> bytes:
    off = seed % 251
    return _PATTERN[off : off + size]


def _call(muxer: TSMuxer, op: str, pkt: Pkt | None) -> bytes | tuple[str, str]:
    """One operation on a muxer: its bytes, or the error it raised (type and message)."""
    try:
        if op == "mux":
            assert pkt is not None
            return muxer.mux(pkt)
        if op == "psi":
            return muxer.psi()
        if op == "psi0":
            return muxer.psi(advance=False)
        if op == "flush":
            return muxer.flush()
        if op == "disc":
            return muxer.discontinuity()
        assert op == "reset"
        return muxer.reset_codecs()
    except ProtocolError as exc:
        return type(exc).__name__, str(exc)


def _call_into(muxer: TSMuxer, op: str, pkt: Pkt | None) -> bytes | tuple[str, str]:
    """:func:`_call`, with ``mux`` through ``mux_into``: its pieces joined, checked against the size it gave."""
    if op != "mux":
        return _call(muxer, op, pkt)
    assert pkt is not None
    pieces: list[bytes | bytearray] = [b"before"]
    try:
        size = muxer.mux_into(pkt, pieces)
    except ProtocolError as exc:
        return type(exc).__name__, str(exc)
    assert pieces[0] == b"before"  # appended, never replaced
    data = b"".join(pieces[1:])
    assert size == len(data)
    return data


def assert_same_output(ops: Iterable[tuple[str, Pkt | None]], **kwargs: int) -> int:
    """Run the same operations through TSMuxer (``mux`` and ``mux_into``) and the reference; every result must
    be identical."""
    new, ref, into = TSMuxer(**kwargs), ReferenceTSMuxer(**kwargs), TSMuxer(**kwargs)
    total = 0
    for i, (op, pkt) in enumerate(ops):
        got, want = _call(new, op, pkt), _call(ref, op, pkt)
        assert got == want, f"operation {i} ({op}, {pkt and (pkt.kind, pkt.timestamp, len(pkt.payload))}) differs"
        assert _call_into(into, op, pkt) == want, f"operation {i} ({op}) differs through mux_into"
        assert (new.has_video, new.has_audio, new.pcr_pid) == (ref.has_video, ref.has_audio, ref.pcr_pid)
        total += len(got) if isinstance(got, bytes) else 0
    assert new.skipped == ref.skipped
    return total


def _mux_ops(pkts: Iterable[Pkt]) -> list[tuple[str, Pkt | None]]:
    return [("mux", p) for p in pkts]


@pytest.mark.parametrize("case", ["video", "audio", "audio-only"])
def test_fast_packetizer_matches_reference_at_every_packet_boundary(case: str) -> None:
    """ES sizes 1..600: every remainder modulo 184, for a first packet with a PCR (video, audio alone), with
    no adaptation field (audio next to video), with a one-packet PES and with an exactly full last packet."""
    if case == "video":
        ops = _mux_ops([V(0, avc_sh())]) + [
            ("mux", V(40 * n, avc_frame((SLICE if n % 3 else IDR) + body_of(n, n), key=n % 3 == 0, cts=n % 2 * 40)))
            for n in range(1, 601)
        ]
    else:
        head = [V(0, avc_sh()), A(0, aac_sh())] if case == "audio" else [A(0, aac_sh())]
        ops = _mux_ops(head) + [("mux", A(23 * n, aac_frame(body_of(n, n)))) for n in range(1, 601)]
    assert assert_same_output(ops, audio_max_delay_ms=0) > 600 * 188


def test_fast_packetizer_matches_reference_on_huge_frames() -> None:
    """Around the struct block (64 payloads) and beyond the prebuilt counter run (8192 packets, 1.5 MB)."""
    big = _PATTERN * 12
    sizes = [64 * 184 - 200, 64 * 184 + 1, 65 * 184, 129 * 184 + 7, 8192 * 184 - 150, 8192 * 184 + 500, 8300 * 184]
    ops = _mux_ops([V(0, avc_sh()), A(0, aac_sh())])
    for n, size in enumerate(sizes):
        ops.append(("mux", V(40 * n, avc_frame(SLICE + big[n : n + size], cts=40 * (n % 2)))))
        ops.append(("mux", A(40 * n, aac_frame(b"\x21" * 300))))
    assert assert_same_output(ops) > sum(sizes)


def test_fast_paths_match_reference_on_a_long_synthetic_stream() -> None:
    """The HLS tests' publisher for 60 s, with everything HLS and HTTP-TS do between packets: PAT/PMT per
    segment and for joining viewers, a discontinuity, a publisher leaving and coming back."""
    from tests.remux.test_hls_segmenter import av_stream

    ops: list[tuple[str, Pkt | None]] = []
    for n, pkt in enumerate(av_stream(30)):
        ops.append(("mux", pkt))
        if n % 50 == 0:
            ops.append(("psi", None))
        if n % 70 == 0:
            ops.append(("psi0", None))
    ops += [("flush", None), ("disc", None), ("reset", None)]
    ops += _mux_ops(av_stream(30, start_ms=5000, gop_ms=2000))
    ops += [("disc", None), ("reset", None)]
    ops += _mux_ops(av_stream(5, video=False))  # audio alone: the PCR moves to the audio PID
    ops += [("flush", None)]
    assert assert_same_output(ops) > 1000 * 188


def test_fast_paths_match_reference_on_real_encoder_output(sample_flv: Path) -> None:
    pkts = flv_packets(sample_flv)
    ops = _mux_ops(pkts) + [("disc", None)] + _mux_ops(pkts) + [("flush", None)]
    assert assert_same_output(ops) > 100_000
    assert assert_same_output(_mux_ops(pkts), audio_max_delay_ms=0) > 100_000


_AVC_NALS = [0x65, 0x41, 0x06, 0x67, 0x09]  # IDR, slice, SEI, SPS, AUD
_HEVC_NALS = [19 << 1, 1 << 1, 39 << 1, 33 << 1, 35 << 1]  # IDR_W_RADL, TRAIL_R, SEI, SPS, AUD
_sizes = st.integers(0, 600) | st.integers(0, 4000) | st.integers(45_000, 130_000)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("v"), st.lists(st.tuples(st.integers(0, 4), _sizes), min_size=1, max_size=3),
                  st.integers(-10, 80), st.integers(-50, 200), st.sampled_from(["legacy", "enhanced"])),
        st.tuples(st.just("a"), st.integers(1, 1600) | st.integers(1500, 8184) | st.just(8185), st.integers(-10, 60)),
        st.tuples(st.sampled_from(["psi", "psi0", "flush", "disc", "reset", "headers"])),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_ops, st.sampled_from([0, 20, 100, 1000]), st.booleans(), st.integers(0, 250))
def test_property_fast_paths_match_reference(events: list[tuple], audio_delay: int, hevc: bool, seed: int) -> None:
    """Random frame and NAL sizes (up to PES far above 64 KiB), B-frame offsets, out-of-order timestamps,
    oversized AAC frames, and PSI, flushes, discontinuities and resets in between: same bytes, same errors."""
    from tests.codec.test_avc import HEVC_SPS, _hevc_record

    vps, sps, pps = b"\x40\x01\x0c\x01", bytes.fromhex(HEVC_SPS["main_1080p"][0]), b"\x44\x01\xc1\x72"
    headers = [V(0, hevc_sh(_hevc_record(vps, sps, pps)) if hevc else avc_sh()), A(0, aac_sh())]
    ops = _mux_ops(headers)
    ts_ms = 1000
    for n, ev in enumerate(events):
        if ev[0] == "v":
            _, nal_specs, dt, cts, framing = ev
            ts_ms = max(0, ts_ms + dt)
            kinds = _HEVC_NALS if hevc else _AVC_NALS
            data = avcc(*(bytes((kinds[k], 1)) + body_of(size, seed + n) for k, size in nal_specs))
            key = nal_specs[0][0] == 0
            if not hevc:
                payload = avc_frame(key=key, cts=cts) + data
            elif framing == "legacy":
                payload = bytes((0x1C if key else 0x2C, 1)) + cts.to_bytes(3, "big", signed=True) + data
            else:
                payload = hevc_frame(data, key, cts)
            ops.append(("mux", V(ts_ms, payload)))
        elif ev[0] == "a":
            _, size, dt = ev
            ts_ms = max(0, ts_ms + dt)
            ops.append(("mux", A(ts_ms, aac_frame(body_of(size, seed - n)))))
        elif ev[0] == "headers":
            ops += _mux_ops(headers)
        else:
            ops.append((ev[0], None))
    ops.append(("flush", None))
    assert_same_output(ops, audio_max_delay_ms=audio_delay)


@pytest.mark.parametrize("configured", [False, True])
@pytest.mark.parametrize("kind", [flv.VIDEO, flv.AUDIO])
def test_every_tag_header_is_handled_as_by_the_reference(kind: int, configured: bool) -> None:
    """Every first byte with every small second byte, before short and real bodies: the fast paths (legacy
    AVC/HEVC coded frames, legacy AAC raw frames) accept, skip and reject exactly what the full parse does."""
    bodies = [b"", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00" + avcc(IDR), b"\x00\x00\x00\x00\x00\x09\x65"]
    ops = _mux_ops([V(0, avc_sh()), A(0, aac_sh())]) if configured else []
    for b0 in range(256):
        for b1 in range(5):
            for body in bodies:
                ops.append(("mux", Pkt(kind, 40, bytes((b0, b1)) + body)))
    ops.append(("flush", None))
    assert_same_output(ops)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([flv.AUDIO, flv.VIDEO]), st.integers(0, 255), st.integers(0, 4), st.binary(max_size=64),
       st.booleans())
def test_fuzz_fast_paths_match_reference(kind: int, b0: int, b1: int, rest: bytes, configured: bool) -> None:
    ops = _mux_ops([V(0, avc_sh()), A(0, aac_sh())]) if configured else []
    payload = bytes((b0, b1)) + rest
    assert_same_output([*ops, ("mux", Pkt(kind, 0, payload)), ("mux", Pkt(kind, 40, payload)), ("flush", None)])
