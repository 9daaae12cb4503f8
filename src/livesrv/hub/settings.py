"""The per-vhost settings a stream is created with, read from the configuration once, when it is created."""

from __future__ import annotations

from livesrv.config import Config
from livesrv.hub.stream import StreamSettings


def stream_settings(config: Config, vhost_name: str) -> StreamSettings:
    vhost = config.vhost(vhost_name)
    play = vhost.play
    return StreamSettings(
        gop_cache=play.gop_cache,
        gop_max_frames=play.gop_cache_max_frames,
        # SRS: min_latency turns merged writes off (mw_latency 0), every message goes out at once.
        flush_interval=0.0 if vhost.min_latency else play.mw_latency / 1000,
        takeover=vhost.publish.takeover,
        republish_grace=play.republish_grace,
        wait_timeout=play.wait_timeout,
        stall_timeout=config.rtmp_limits.idle_timeout,
    )
