"""The bench's source stream: an FLV file made once with ffmpeg, cached, then published in a loop.

Noise over testsrc2 keeps x264 at its target bitrate (a clean test pattern compresses far below it), so the
stream carries what a real 720p camera feed would: ~2 Mbit/s of video in 2 s GOPs plus 128 kbit/s AAC.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceProfile:
    name: str
    size: str
    fps: int
    gop_s: int
    video_kbps: int
    audio_kbps: int
    seconds: int

    @property
    def filename(self) -> str:
        return (f"src-{self.size}-{self.fps}fps-g{self.gop_s}s-{self.video_kbps}k-a{self.audio_kbps}k"
                f"-{self.seconds}s.flv")


PROFILES = {
    # The performance targets' stream: 1280x720 30 fps H.264, 2 s GOP, ~2 Mbit/s + AAC 128k (2.15 Mbit/s).
    "720p": SourceProfile("720p", "1280x720", 30, 2, 2000, 128, 30),
    # The publisher-side probe: what parsing an 8 Mbit/s stream costs (1080p30, 2 s GOP, 8 Mbit/s + AAC 128k).
    "1080p8m": SourceProfile("1080p8m", "1920x1080", 30, 2, 8000, 128, 20),
    # For the smoke test: cheap to make and to serve, same structure.
    "small": SourceProfile("small", "320x240", 25, 1, 300, 64, 6),
}

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"


def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise SystemExit("bench: ffmpeg is not installed (apt-get install -y ffmpeg)")
    return path


def source_file(profile: SourceProfile, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The cached source file for ``profile``, made now if missing (atomically: a killed run leaves none)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / profile.filename
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.flv")
    gop = profile.fps * profile.gop_s
    subprocess.run(
        [
            ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={profile.size}:rate={profile.fps},noise=alls=12:allf=t",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(profile.seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-b:v", f"{profile.video_kbps}k", "-maxrate", f"{profile.video_kbps}k",
            "-bufsize", f"{2 * profile.video_kbps}k",
            "-c:a", "aac", "-b:a", f"{profile.audio_kbps}k", "-ac", "2",
            "-f", "flv", str(tmp),
        ],
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    tmp.rename(path)
    return path


def publish_args(src: Path, url: str) -> list[str]:
    """ffmpeg publishing ``src`` in real time, looped forever, without re-encoding."""
    return [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
        "-i", str(src), "-c", "copy", "-f", "flv", url,
    ]
