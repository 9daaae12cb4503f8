"""The API's JSON objects (SRS's shapes) for vhosts, streams and clients, read from the hub and its registry.

Clients come only from the hub's registry (:mod:`livesrv.hub.clients`): every kind and protocol is listed
with the same fields, and a new kind appears here by registering.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from livesrv.codec.inspect import audio_info, video_info
from livesrv.config import Config
from livesrv.hub.clients import PUBLISHER, VIEWER, Client, srs_type
from livesrv.hub.hub import Hub
from livesrv.hub.keys import StreamKey
from livesrv.hub.stream import Stream
from livesrv.media.packet import AUDIO, MediaPacket
from livesrv.servers.api.sampling import NO_RATE, Sampler, stream_id, stream_send_bytes

#: Extra per-stream details another service reports (HLS: playlist, segments), or None.
StreamDetails = Callable[[StreamKey], "dict[str, Any] | None"]


class Views:
    def __init__(self, hub: Hub, config: Callable[[], Config], sampler: Sampler, hls_info: StreamDetails) -> None:
        self.hub = hub
        self._config = config
        self.sampler = sampler
        self.hls_info = hls_info

    # ------------------------------------------------------------------------------------------ lookup

    def clients_of(self) -> dict[StreamKey, list[Client]]:
        """Registered clients by the stream they work on."""
        out: dict[StreamKey, list[Client]] = {}
        for c in tuple(self.hub.clients.values()):
            out.setdefault(c.context.key, []).append(c)
        return out

    def find_stream(self, sid: str) -> Stream | None:
        for stream in tuple(self.hub.streams.values()):
            if stream_id(stream) == sid:
                return stream
        return None

    def vhost_names(self) -> list[str]:
        names = list(self._config().vhosts)
        for stream in tuple(self.hub.streams.values()):
            if stream.key.vhost not in names:
                names.append(stream.key.vhost)
        return names

    # ------------------------------------------------------------------------------------------ shapes

    def vhost_json(self, name: str, by_key: dict[StreamKey, list[Client]]) -> dict[str, Any]:
        cfg = self._config().vhost(name)
        vh = self.sampler.vhost_account(name)
        streams = [s for s in tuple(self.hub.streams.values()) if s.key.vhost == name]
        hls: dict[str, Any] = {"enabled": cfg.hls.enabled}
        if cfg.hls.enabled:
            hls["fragment"] = cfg.hls.hls_fragment
        return {
            "id": vh.id,
            "name": name,
            "enabled": cfg.enabled,
            "clients": sum(len(cs) for key, cs in by_key.items() if key.vhost == name),
            "streams": sum(1 for s in streams if s.publisher is not None),
            "send_bytes": vh.retired_send + sum(stream_send_bytes(s) for s in streams),
            "recv_bytes": vh.retired_recv + sum(s.stats.recv_bytes for s in streams),
            "kbps": vh.meter.kbps(),
            "hls": hls,
        }

    def stream_json(self, stream: Stream, by_key: dict[StreamKey, list[Client]]) -> dict[str, Any]:
        key = stream.key
        publisher = stream.publisher
        active = publisher is not None
        clients = by_key.get(key, [])
        viewers = sum(1 for c in clients if c.kind == VIEWER)
        publish: dict[str, Any] = {"active": active}
        if publisher is not None:
            publish["cid"] = publisher.cid
        video = audio = None
        if active:
            gop = stream.gop
            if gop.video_header is not None:
                video = _cached(stream, "api.video", gop.video_header,
                                lambda p: video_info(p.payload, stream.metadata))
            apkt = gop.audio_header or next((p for p in gop.gop if p.kind == AUDIO), None)
            if apkt is not None:
                audio = _cached(stream, "api.audio", apkt, lambda p: audio_info(p.payload))
        s = stream.stats
        acct = stream.extra.get("api")
        return {
            "id": stream_id(stream),
            "name": key.stream,
            "vhost": self.sampler.vhost_account(key.vhost).id,
            "app": key.app,
            "tcUrl": publisher.context.tc_url if publisher is not None else "",
            "url": key.path,
            "live_ms": int((stream.live_since or stream.created) * 1000),  # when it went live (SRS: now)
            "clients": len(clients),
            "frames": s.video_frames + s.audio_frames,
            "video_frames": s.video_frames,
            "audio_frames": s.audio_frames,
            "send_bytes": stream_send_bytes(stream),
            "recv_bytes": s.recv_bytes,
            "kbps": acct.meter.kbps() if acct is not None else dict(NO_RATE),
            "publish": publish,
            "video": video,
            "audio": audio,
            # livesrv: beyond SRS
            "state": stream.state.value,
            "generation": stream.generation,
            "viewers": viewers,
            "hls": self.hls_info(key),
            "dvr": _dvr_info(stream),
        }

    def client_json(self, c: Client) -> dict[str, Any]:
        ctx = c.context
        key = ctx.key
        stream = self.hub.get(key)
        return {
            "id": c.cid,
            "vhost": self.sampler.vhost_account(key.vhost).id,
            "stream": stream_id(stream) if stream is not None else "",
            "ip": c.ip,
            "pageUrl": ctx.page_url,
            "swfUrl": ctx.swf_url,
            "tcUrl": ctx.tc_url,
            "url": key.path,
            "name": key.stream,
            "type": srs_type(c),
            "publish": c.kind == PUBLISHER,
            "alive": round(max(0.0, time.time() - c.started), 3),
            "send_bytes": c.send_bytes,
            "recv_bytes": c.recv_bytes,
            "kbps": self.sampler.client_kbps(c.cid),
            "protocol": c.protocol,  # livesrv: rtmp, flv, ws-flv, ts, hls...
            "kind": c.kind,  # livesrv: publisher, viewer, forwarder (later puller, recorder)
        } | _extra(c)


def _extra(c: Client) -> dict[str, Any]:
    """What a kind of client adds (a forwarder: its destination URL, state and counters), read by duck typing
    so the API needs no per-kind import."""
    dest = getattr(c, "destination", None)
    if dest is None:
        return {}
    return {"destination": dest, "state": getattr(c, "state", ""), "reason": getattr(c, "reason", ""),
            "attempts": getattr(c, "attempts", 0), "connects": getattr(c, "connects", 0),
            "dropped": getattr(c, "dropped", 0)}


def _cached(stream: Stream, slot: str, pkt: MediaPacket, parse: Callable[[MediaPacket], Any]) -> Any:
    """Parse a sequence header once per header packet (a new publisher brings a new one)."""
    hit = stream.extra.get(slot)
    if hit is not None and hit[0] is pkt:
        return hit[1]
    value = parse(pkt)
    stream.extra[slot] = (pkt, value)
    return value


def _dvr_info(stream: Stream) -> dict[str, Any] | None:
    """The stream's active recording (the DVR output keeps itself in ``stream.extra``), or None."""
    output = stream.extra.get("dvr")
    info = getattr(output, "info", None)
    return info() if callable(info) else None
