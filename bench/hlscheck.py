"""HLS output of the ingest bench: which segments a server finished during the window, and whether they are right.

A segment is *finished* when its playlist lists it (every server writes a segment completely before listing it).
:class:`PlaylistWatch` reads every playlist under the server's ``hls_path`` at the window's start, during it and
at its end; the segments that appear in a playlist inside the window are the window's, and each one is
hard-linked into a directory of the bench's own the moment it is seen, so the server's clean-up (a sliding
window, or the files removed on unpublish or shutdown) cannot take it away before it is checked.

:func:`check_segments` then checks every kept segment (or those of a sample of streams): the transport stream's
framing (188-byte packets, sync bytes, continuity counters, a PAT) read here, then ``ffprobe``: it parses, has
H.264 video and AAC audio, starts with a video keyframe, holds as many video frames and audio frames as its
duration says, its duration agrees with the playlist's ``#EXTINF`` and is close to the configured fragment, and
each stream's consecutive segments follow each other without a gap or an overlap.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TS_PACKET = 188
#: ``#EXTINF`` and what ffprobe measures may differ by this much (the last frame's duration, audio vs video).
DURATION_TOLERANCE_S = 0.25
#: Consecutive segments of one stream: the next one's first video PTS is the previous one's plus its #EXTINF.
CONTINUITY_TOLERANCE_S = 0.15
#: A segment's duration is "close to the fragment" within [LOW x fragment, HIGH x fragment + 0.1 s]: servers cut
#: at the first keyframe at or after the fragment (SRS and livesrv force a cut at hls_td_ratio, 1.5x).
FRAGMENT_LOW, FRAGMENT_HIGH = 0.75, 1.5
AAC_FRAMES_PER_S = 44100 / 1024
#: Audio may be carried over into the next segment by this much (nginx-rtmp packs audio into PES packets of up
#: to ``hls_max_audio_delay``, 300 ms, so a segment's audio starts and ends up to that much off its video).
AUDIO_SLACK_S = 0.4


@dataclass
class Segment:
    stream: str  # the playlist's path below hls_path, without .m3u8 (livesrv/SRS: live/bench000)
    uri: str
    extinf: float
    seq: int  # media sequence number from the playlist
    in_window: bool
    kept: Path | None = None  # the bench's hard link (None: the file was already gone)
    problems: list[str] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)


def parse_playlist(text: str) -> tuple[int, list[tuple[float, str, bool]]]:
    """(media sequence of the first entry, [(EXTINF, URI, discontinuity before it)]) of a media playlist."""
    seq = 0
    entries: list[tuple[float, str, bool]] = []
    extinf: float | None = None
    disc = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            try:
                seq = int(line.split(":", 1)[1])
            except ValueError:
                pass
        elif line.startswith("#EXTINF:"):
            try:
                extinf = float(line.split(":", 1)[1].split(",", 1)[0])
            except ValueError:
                extinf = -1.0
        elif line.startswith("#EXT-X-DISCONTINUITY") and not line.startswith("#EXT-X-DISCONTINUITY-"):
            disc = True
        elif not line.startswith("#"):
            if extinf is not None:
                entries.append((extinf, line, disc))
            extinf = None
            disc = False
    return seq, entries


class PlaylistWatch:
    """Follows every playlist under ``root`` and keeps each newly listed segment (hard link into ``keep``)."""

    def __init__(self, root: Path, keep: Path, fragment: float = 10.0) -> None:
        self.root = root
        self.keep = keep
        self.fragment = fragment
        self.segments: dict[tuple[str, str], Segment] = {}
        self.playlists: set[str] = set()
        self.polls = 0
        self.unreadable = 0

    def poll(self, in_window: bool) -> int:
        """Read every playlist; returns how many new segments it found."""
        self.polls += 1
        new = 0
        if not self.root.is_dir():
            return 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".m3u8"):
                    continue
                path = Path(dirpath) / name
                stream = str(path.relative_to(self.root))[: -len(".m3u8")]
                self.playlists.add(stream)
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    self.unreadable += 1
                    continue
                seq, entries = parse_playlist(text)
                for i, (extinf, uri, _disc) in enumerate(entries):
                    key = (stream, uri)
                    if key in self.segments:
                        continue
                    seg = Segment(stream, uri, extinf, seq + i, in_window)
                    seg.kept = self._keep(path.parent, uri, stream)
                    self.segments[key] = seg
                    new += 1
        return new

    def _keep(self, base: Path, uri: str, stream: str) -> Path | None:
        if "://" in uri:
            return None  # an absolute URL: not a file we can reach
        src = base / uri.split("?", 1)[0]
        dst = self.keep / stream.replace("/", "__") / Path(uri.split("?", 1)[0]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except FileExistsError:
            pass
        except OSError:
            return None
        return dst

    def covered(self) -> dict[str, float]:
        """Per stream (its name, the playlist's last path element): seconds of media in its finished segments
        (#EXTINF of every segment seen, plus the fragment for each one that left the playlist before the first
        read). The open segment is not counted."""
        out: dict[str, float] = {}
        first: dict[str, int] = {}
        for seg in self.segments.values():
            name = seg.stream.rsplit("/", 1)[-1]
            out[name] = out.get(name, 0.0) + seg.extinf
            first[name] = min(first.get(name, seg.seq), seg.seq)
        return {name: total + first[name] * self.fragment for name, total in out.items()}

    def window_segments(self) -> list[Segment]:
        return [s for s in self.segments.values() if s.in_window]


# ----------------------------------------------------------------------------------------------- checks


def check_ts(data: bytes) -> list[str]:
    """Transport-stream framing: size, sync bytes, a PAT, continuity counters of every PID with payload."""
    n = len(data)
    if n == 0:
        return ["empty file"]
    problems = []
    if n % TS_PACKET:
        problems.append(f"size {n} is not a multiple of 188")
    count = n // TS_PACKET
    if data[: count * TS_PACKET : TS_PACKET] != b"\x47" * count:
        problems.append("lost sync: a packet does not start with 0x47")
        return problems
    last: dict[int, int] = {}
    cc_errors = 0
    pat = False
    for off in range(0, count * TS_PACKET, TS_PACKET):
        b1 = data[off + 1]
        pid = ((b1 & 0x1F) << 8) | data[off + 2]
        b3 = data[off + 3]
        if pid == 0:
            pat = True
        if not b3 & 0x10 or pid == 0x1FFF:  # no payload (or null packet): the counter does not advance
            continue
        cc = b3 & 0x0F
        prev = last.get(pid)
        if prev is not None and cc != (prev + 1) & 0x0F and cc != prev:
            cc_errors += 1
        last[pid] = cc
    if not pat:
        problems.append("no PAT")
    if cc_errors:
        problems.append(f"{cc_errors} continuity counter errors")
    return problems


def _ffprobe(args: list[str], timeout: float = 60.0) -> tuple[dict[str, Any], str]:
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args], capture_output=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"ffprobe: {exc}"
    err = out.stderr.decode(errors="replace").strip()
    if out.returncode != 0:
        return {}, f"ffprobe exited with {out.returncode}: {err[:200]}"
    try:
        return json.loads(out.stdout or b"{}"), err[:200]
    except ValueError:
        return {}, "ffprobe printed no JSON"


def probe_segment(path: Path) -> dict[str, Any]:
    """What ffprobe says: codecs, packet counts (the whole file is demuxed), duration, first video packet."""
    info, err = _ffprobe(["-count_packets", "-show_entries",
                          "stream=codec_type,codec_name,nb_read_packets,r_frame_rate:format=duration,start_time",
                          str(path)])
    result: dict[str, Any] = {"error": err}
    for st in info.get("streams", []):
        kind = st.get("codec_type")
        if kind in ("video", "audio") and kind not in result:
            result[kind] = {"codec": st.get("codec_name"), "packets": int(st.get("nb_read_packets") or 0),
                            "rate": st.get("r_frame_rate", "0/0")}
    fmt = info.get("format", {})
    result["duration"] = float(fmt["duration"]) if "duration" in fmt else None
    first, err2 = _ffprobe(["-select_streams", "v", "-read_intervals", "%+#1",
                            "-show_entries", "packet=pts_time,flags", str(path)])
    packets = first.get("packets", [])
    if packets:
        result["first_video_pts"] = float(packets[0].get("pts_time", "nan"))
        result["first_video_key"] = "K" in packets[0].get("flags", "")
    if err2 and not result["error"]:
        result["error"] = err2
    return result


def _fps(rate: str) -> float:
    num, _, den = rate.partition("/")
    try:
        return float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return 0.0


def check_segment(seg: Segment, fragment: float) -> None:
    """Fill ``seg.problems`` (empty: the segment is right) and ``seg.probe``."""
    if seg.kept is None:
        seg.problems.append("gone before it could be kept")
        return
    try:
        data = seg.kept.read_bytes()
    except OSError as exc:
        seg.problems.append(f"unreadable: {exc}")
        return
    seg.problems.extend(check_ts(data))
    del data
    p = seg.probe = probe_segment(seg.kept)
    if p["error"]:
        seg.problems.append(p["error"])
    video, audio = p.get("video"), p.get("audio")
    if video is None or video["codec"] != "h264":
        seg.problems.append(f"no H.264 video ({video})")
    if audio is None or audio["codec"] != "aac":
        seg.problems.append(f"no AAC audio ({audio})")
    if not p.get("first_video_key", False):
        seg.problems.append("does not start with a video keyframe")
    d = p.get("duration")
    if d is None or abs(d - seg.extinf) > DURATION_TOLERANCE_S + 0.03 * seg.extinf:
        seg.problems.append(f"duration {d} but #EXTINF {seg.extinf:.3f}")
    if video is not None and (fps := _fps(video["rate"])) > 0:
        want = seg.extinf * fps
        if abs(video["packets"] - want) > 2:
            seg.problems.append(f"{video['packets']} video frames in {seg.extinf:.3f} s at {fps:g} fps")
    if audio is not None and audio["codec"] == "aac":
        want = seg.extinf * AAC_FRAMES_PER_S
        if abs(audio["packets"] - want) > 4 + AUDIO_SLACK_S * AAC_FRAMES_PER_S:
            seg.problems.append(f"{audio['packets']} AAC frames in {seg.extinf:.3f} s")
    if fragment > 0 and not FRAGMENT_LOW * fragment <= seg.extinf <= FRAGMENT_HIGH * fragment + 0.1:
        seg.problems.append(f"#EXTINF {seg.extinf:.3f} far from the {fragment:g} s fragment")


def check_continuity(segments: list[Segment]) -> int:
    """Consecutive checked segments of one stream: no gap, no overlap between their videos, and together as
    many AAC frames as their durations say (each segment alone may be off by :data:`AUDIO_SLACK_S`, not a run of
    them). Adds the problem to the later segment (the run's last); returns how many problems it found."""
    by_stream: dict[str, list[Segment]] = {}
    for seg in segments:
        by_stream.setdefault(seg.stream, []).append(seg)
    bad = 0
    for segs in by_stream.values():
        segs.sort(key=lambda s: s.seq)
        for a, b in zip(segs, segs[1:]):
            if b.seq != a.seq + 1:
                continue
            pa, pb = a.probe.get("first_video_pts"), b.probe.get("first_video_pts")
            if pa is None or pb is None:
                continue
            step = pb - pa
            if abs(step - a.extinf) > CONTINUITY_TOLERANCE_S + 0.02 * a.extinf:
                b.problems.append(f"starts {step:.3f} s after the previous segment, whose #EXTINF is {a.extinf:.3f}")
                bad += 1
        run: list[Segment] = []
        for seg in segs + [None]:  # type: ignore[list-item]
            if seg is not None and (not run or seg.seq == run[-1].seq + 1) and "audio" in seg.probe:
                run.append(seg)
                continue
            if len(run) > 1:
                frames = sum(r.probe["audio"]["packets"] for r in run)
                want = sum(r.extinf for r in run) * AAC_FRAMES_PER_S
                if abs(frames - want) > 4 + AUDIO_SLACK_S * AAC_FRAMES_PER_S:
                    run[-1].problems.append(f"{frames} AAC frames in segments {run[0].seq}-{run[-1].seq}, "
                                            f"{want:.0f} expected")
                    bad += 1
            run = [seg] if seg is not None and "audio" in seg.probe else []
    return bad


def sample_streams(streams: list[str], n: int) -> list[str]:
    """``n`` streams spread evenly over the sorted names (all of them when n <= 0 or n >= len)."""
    streams = sorted(streams)
    if n <= 0 or n >= len(streams):
        return streams
    return [streams[round(i * (len(streams) - 1) / (n - 1))] for i in range(n)] if n > 1 else streams[:1]


def check_segments(watch: PlaylistWatch, fragment: float, streams_to_check: int = 0) -> dict[str, Any]:
    """Check the window's segments of every stream (or of ``streams_to_check`` of them); a JSON-able summary."""
    window = watch.window_segments()
    streams_with = sorted({s.stream for s in window})
    chosen = set(sample_streams(streams_with, streams_to_check))
    checked = [s for s in window if s.stream in chosen]
    for seg in checked:
        check_segment(seg, fragment)
    check_continuity(checked)
    bad = [s for s in checked if s.problems]
    durations = [s.extinf for s in window]
    samples: dict[str, str] = {}
    for seg in bad[:5]:
        samples[f"{seg.stream}/{seg.uri}"] = "; ".join(seg.problems)[:300]
    return {
        "segments_in_window": len(window),
        "playlists": len(watch.playlists),
        "streams_with_segments": len(streams_with),
        "streams_checked": len(chosen),
        "segments_checked": len(checked),
        "segments_bad": len(bad),
        "bad_samples": samples,
        "extinf_min": min(durations, default=None),
        "extinf_median": statistics.median(durations) if durations else None,
        "extinf_max": max(durations, default=None),
        "video_frames_checked": sum(s.probe.get("video", {}).get("packets", 0) for s in checked),
    }


def hls_lag(watch: PlaylistWatch, started: dict[str, float], at: float, gop: float = 2.0) -> dict[str, Any]:
    """How far each stream's finished segments are behind its publisher at ``at`` (time.monotonic()).

    ``started``: stream name -> when its publisher's media time 0 was sent (it then sends in real time). A
    server that keeps up lags by the open segment only: at most a fragment, a GOP more when the GOP does not
    divide the fragment. A stream whose lag is over fragment + GOP + 2 s has a segment overdue: the server's HLS
    is behind the stream."""
    covered = watch.covered()
    lags = sorted((at - t0) - covered.get(name, 0.0) for name, t0 in started.items())
    limit = watch.fragment + gop + 2.0
    return {
        "hls_lag_max_s": lags[-1] if lags else None,
        "hls_lag_p90_s": lags[min(len(lags) - 1, int(0.9 * len(lags)))] if lags else None,
        "hls_lag_median_s": statistics.median(lags) if lags else None,
        "streams_hls_behind": sum(1 for v in lags if v > limit),
        "hls_behind_limit_s": limit,
    }
