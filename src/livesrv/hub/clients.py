"""The registry's contract: what every client of every protocol tells the hub about itself.

A client is anything that publishes, plays or otherwise works on a stream: an RTMP publisher or player, an
HTTP-FLV / WS-FLV / HTTP-TS viewer, an HLS player (a session, no connection), a forwarder, and later edge
pullers and recorders. The API, the metrics and the hook payloads read clients only through this contract, so
a new kind of client shows up everywhere by registering, with no per-protocol code in them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final, Protocol

from livesrv.hub.keys import StreamKey, StreamRequest

#: ``Client.kind`` values.
PUBLISHER: Final = "publisher"
VIEWER: Final = "viewer"
FORWARDER: Final = "forwarder"  # pushes a stream out to another server
PULLER: Final = "puller"  # brings a stream in from another server (edge)
RECORDER: Final = "recorder"  # writes a stream to files (DVR)

_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_client_id() -> str:
    """An 8-character id like SRS's, unique enough to name a client in logs and the API."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a protocol server knows about one client: the hooks' fields, also listed by the API.

    ``param`` is the raw query (``"?token=..."`` or ``""``) exactly as the client sent it: receivers check
    tokens in it. ``stream_id`` is the hub's id of the stream when the stream exists; SRS omits the field
    otherwise, and so do the builders when it is None. ``tc_url`` is the RTMP connect's tcUrl, or for an HTTP
    client ``http://host:port/app`` as SRS reports it.
    """

    client_id: str
    ip: str
    vhost: str
    app: str
    stream: str = ""
    param: str = ""
    tc_url: str = ""
    page_url: str = ""
    stream_id: str | None = None
    swf_url: str = ""

    @classmethod
    def from_request(
        cls,
        client_id: str,
        ip: str,
        request: StreamRequest,
        page_url: str = "",
        stream_id: str | None = None,
        swf_url: str = "",
    ) -> HookContext:
        """The context of a client whose publish/play was resolved by :mod:`livesrv.hub.keys`."""
        key = request.key
        return cls(client_id, ip, key.vhost, key.app, key.stream, request.param, request.tc_url,
                   page_url, stream_id, swf_url)

    @property
    def key(self) -> StreamKey:
        return StreamKey(self.vhost, self.app, self.stream)

    @property
    def stream_url(self) -> str:
        """SRS's ``stream_url``: ``/app/stream``, prefixed by the vhost unless it is the default one."""
        return str(self.key)


class Client(Protocol):
    """One registered client, whatever its protocol.

    ``started`` is the wall-clock time it started publishing or playing. The byte counters include everything
    the client's connection moved (commands too), so they match what the operator's network sees.
    """

    @property
    def cid(self) -> str: ...

    @property
    def kind(self) -> str: ...  # PUBLISHER, VIEWER, FORWARDER, PULLER, RECORDER

    @property
    def protocol(self) -> str: ...  # "rtmp", "flv", "ws-flv", "ts", "hls", ...

    @property
    def ip(self) -> str: ...

    @property
    def context(self) -> HookContext: ...

    @property
    def started(self) -> float: ...

    @property
    def recv_bytes(self) -> int: ...

    @property
    def send_bytes(self) -> int: ...

    def kick(self, reason: str) -> None:
        """End this client at once (its connection closes, or its session ends); every other client goes on.
        The client then unregisters itself, as on any other end."""


def srs_type(client: Client) -> str:
    """SRS's client ``type`` string, which SRS's console shows."""
    if client.kind == PUBLISHER:
        return "fmle-publish"  # what SRS reports for OBS and FFmpeg (FCPublish)
    if client.kind == VIEWER:
        return "flv-play" if client.protocol in ("flv", "ws-flv") else f"{client.protocol}-play"
    return f"{client.protocol}-{client.kind}"
