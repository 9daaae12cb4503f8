"""What every protocol server shares: client ids and the per-vhost settings a stream is created with."""

from __future__ import annotations

import secrets

from livesrv.config import Config
from livesrv.hub.stream import StreamSettings

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_client_id() -> str:
    """An 8-character id like SRS's, unique enough to name a client in logs and the API."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


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
