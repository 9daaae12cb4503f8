"""Glass-to-glass latency without OCR: a live source that burns the wall clock into every frame as a barcode,
and the in-page reader (``glass.js``) that decodes it from the frames the browser presents.

The publisher is ffmpeg encoding a test picture in real time (``-re``); a filter stamps each frame with the
wall clock when it is made (``setpts=RTCTIME``) and draws ``BITS`` white-or-black boxes along the bottom:
bit k of ``floor(t * 100)`` (t in epoch seconds), so the code counts 10 ms steps and wraps every 2**20 of them
(2.9 hours). The page reads the boxes back at each presented frame (``requestVideoFrameCallback``) and compares
with the time that frame is displayed: ``((floor(display_ms / 10) - code) mod 2**20) * 10`` ms. It includes
encoding, the server, the network, the player's buffer and decoding, but not the screen; the encoder and the
browser must share one clock (one machine). Results: docs/performance.md.
"""

from __future__ import annotations

from pathlib import Path

BITS = 20
BOX = 16  # pixels per bit
WIDTH, HEIGHT, FPS = 640, 360, 25
JS = Path(__file__).resolve().with_name("glass.js")


def filter_script() -> str:
    """The video filter: wall-clock timestamps, the barcode strip, then a regular timeline again."""
    y = HEIGHT - 20
    parts = ["settb=AVTB", "setpts=RTCTIME",
             f"drawbox=x=0:y={y}:w={2 + BOX * BITS + 2}:h=20:color=black:t=fill"]
    for k in range(BITS):
        parts.append(f"drawbox=x={2 + BOX * k}:y={y + 2}:w={BOX}:h={BOX}:color=white:t=fill:"
                     f"enable='eq(mod(floor(floor(t*100)/{2 ** k}),2),1)'")
    parts.append(f"setpts=N/({FPS}*TB)")
    return ",\n".join(parts) + "\n"


def publisher_args(ffmpeg: str, url: str, workdir: Path, bitrate: str = "800k") -> list[str]:
    """ffmpeg encoding the barcode source live (H.264 baseline, 2 s GOP, zerolatency; AAC) to ``url``."""
    script = workdir / "glass-vf.txt"
    script.write_text(filter_script())
    return [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-filter_script:v", str(script),
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
        "-pix_fmt", "yuv420p", "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
        "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
        "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2", "-f", "flv", url,
    ]
