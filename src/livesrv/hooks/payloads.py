"""The JSON bodies of SRS's HTTP callbacks, field for field.

Hook receivers written for SRS (v5-v7) parse these bodies, so the field names, their types (``client_id`` is a
string, ``send_bytes`` an integer, ``duration`` a float in seconds) and which hook carries which field follow
SRS's ``srs_app_http_hooks.cpp``; the key order is SRS's too, so a body can be compared as text. Builders are
pure functions: the protocol servers fill a :class:`HookContext` and the composition root a
:class:`ServerIdentity`; nothing here reads a clock, a socket or the hub.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from livesrv.hub.clients import HookContext

__all__ = [
    "ServerIdentity",
    "HookContext",
    "ConnectPayload",
    "ClosePayload",
    "PublishPayload",
    "PlayPayload",
    "StopPayload",
    "DvrPayload",
    "HlsPayload",
    "ForwardPayload",
    "on_connect",
    "on_close",
    "on_publish",
    "on_unpublish",
    "on_play",
    "on_stop",
    "on_dvr",
    "on_hls",
    "on_forward",
    "hls_segment_url",
]


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Who is calling: the same ``server``/``service`` ids the HTTP API reports, and the directory that
    relative DVR/HLS ``file`` paths are relative to (SRS's ``cwd``)."""

    server_id: str
    service_id: str
    cwd: str


# ----------------------------------------------------------------------------------------------- shapes


class _Common(TypedDict):
    server_id: str
    service_id: str
    action: str
    client_id: str
    ip: str
    vhost: str
    app: str


class ConnectPayload(_Common):
    stream: str
    param: str
    tcUrl: str
    pageUrl: str


class ClosePayload(_Common):
    send_bytes: int
    recv_bytes: int


class PublishPayload(_Common):
    """``on_publish`` and ``on_unpublish``."""

    tcUrl: str
    stream: str
    param: str
    stream_url: str
    stream_id: NotRequired[str]


class PlayPayload(_Common):
    stream: str
    tcUrl: str
    param: str
    pageUrl: str
    stream_url: str
    stream_id: NotRequired[str]


class StopPayload(_Common):
    tcUrl: str
    stream: str
    param: str
    stream_url: str
    stream_id: NotRequired[str]


class DvrPayload(_Common):
    tcUrl: str
    stream: str
    param: str
    cwd: str
    file: str
    stream_url: str
    stream_id: NotRequired[str]


class HlsPayload(_Common):
    tcUrl: str
    stream: str
    param: str
    duration: float
    cwd: str
    file: str
    url: str
    m3u8: str
    m3u8_url: str
    seq_no: int
    stream_url: str
    stream_id: NotRequired[str]


class ForwardPayload(TypedDict):
    """``on_forward`` (the forward ``backend``): SRS builds it with ``action`` first and no ``stream_url``."""

    action: str
    server_id: str
    service_id: str
    client_id: str
    ip: str
    vhost: str
    app: str
    tcUrl: str
    stream: str
    param: str


# ----------------------------------------------------------------------------------------------- builders


def _common(server: ServerIdentity, action: str, ctx: HookContext) -> _Common:
    return {
        "server_id": server.server_id,
        "service_id": server.service_id,
        "action": action,
        "client_id": ctx.client_id,
        "ip": ctx.ip,
        "vhost": ctx.vhost,
        "app": ctx.app,
    }


def on_connect(server: ServerIdentity, ctx: HookContext) -> ConnectPayload:
    """RTMP ``connect``; a rejection refuses the connection."""
    return {
        **_common(server, "on_connect", ctx),
        "stream": ctx.stream,
        "param": ctx.param,
        "tcUrl": ctx.tc_url,
        "pageUrl": ctx.page_url,
    }


def on_close(server: ServerIdentity, ctx: HookContext, send_bytes: int, recv_bytes: int) -> ClosePayload:
    """A connection that passed ``on_connect`` closed (notification)."""
    return {
        **_common(server, "on_close", ctx),
        "send_bytes": int(send_bytes),
        "recv_bytes": int(recv_bytes),
    }


def _publish(server: ServerIdentity, action: str, ctx: HookContext) -> PublishPayload:
    body: PublishPayload = {
        **_common(server, action, ctx),
        "tcUrl": ctx.tc_url,
        "stream": ctx.stream,
        "param": ctx.param,
        "stream_url": ctx.stream_url,
    }
    if ctx.stream_id is not None:
        body["stream_id"] = ctx.stream_id
    return body


def on_publish(server: ServerIdentity, ctx: HookContext) -> PublishPayload:
    """Before a publish is accepted; a rejection refuses it."""
    return _publish(server, "on_publish", ctx)


def on_unpublish(server: ServerIdentity, ctx: HookContext) -> PublishPayload:
    """A publisher left (notification)."""
    return _publish(server, "on_unpublish", ctx)


def on_play(server: ServerIdentity, ctx: HookContext) -> PlayPayload:
    """Before a viewer (RTMP, HTTP-FLV, HLS) is attached; a rejection refuses it."""
    body: PlayPayload = {
        **_common(server, "on_play", ctx),
        "stream": ctx.stream,
        "tcUrl": ctx.tc_url,
        "param": ctx.param,
        "pageUrl": ctx.page_url,
        "stream_url": ctx.stream_url,
    }
    if ctx.stream_id is not None:
        body["stream_id"] = ctx.stream_id
    return body


def on_stop(server: ServerIdentity, ctx: HookContext) -> StopPayload:
    """A viewer left (notification). SRS sends no ``pageUrl`` here."""
    body: StopPayload = {
        **_common(server, "on_stop", ctx),
        "tcUrl": ctx.tc_url,
        "stream": ctx.stream,
        "param": ctx.param,
        "stream_url": ctx.stream_url,
    }
    if ctx.stream_id is not None:
        body["stream_id"] = ctx.stream_id
    return body


def on_dvr(server: ServerIdentity, ctx: HookContext, file: str) -> DvrPayload:
    """A DVR file was closed; ``file`` as written (relative to ``cwd`` unless absolute)."""
    body: DvrPayload = {
        **_common(server, "on_dvr", ctx),
        "tcUrl": ctx.tc_url,
        "stream": ctx.stream,
        "param": ctx.param,
        "cwd": server.cwd,
        "file": file,
        "stream_url": ctx.stream_url,
    }
    if ctx.stream_id is not None:
        body["stream_id"] = ctx.stream_id
    return body


def hls_segment_url(ts_url: str, m3u8_url: str) -> str:
    """The ``url`` field of ``on_hls``: as SRS, a segment URL that is not absolute http(s) is put in the
    directory of ``m3u8_url`` (``live/s.m3u8`` + ``s-3.ts`` -> ``live/s-3.ts``)."""
    if ts_url.lower().startswith(("http://", "https://")):
        return ts_url
    prefix = posixpath.dirname(m3u8_url)
    if not prefix:
        return ts_url
    return prefix.rstrip("/") + "/" + ts_url


def on_hls(
    server: ServerIdentity,
    ctx: HookContext,
    *,
    duration: float,
    file: str,
    url: str,
    m3u8: str,
    m3u8_url: str,
    seq_no: int,
) -> HlsPayload:
    """A segment was completed. ``duration`` in seconds (SRS sends millisecond precision), ``file`` the
    segment's path, ``url`` the segment URL as the playlist writes it, ``m3u8`` the playlist's path,
    ``m3u8_url`` its URL path, ``seq_no`` the media sequence number."""
    body: HlsPayload = {
        **_common(server, "on_hls", ctx),
        "tcUrl": ctx.tc_url,
        "stream": ctx.stream,
        "param": ctx.param,
        "duration": round(float(duration), 3),
        "cwd": server.cwd,
        "file": file,
        "url": hls_segment_url(url, m3u8_url),
        "m3u8": m3u8,
        "m3u8_url": m3u8_url,
        "seq_no": int(seq_no),
        "stream_url": ctx.stream_url,
    }
    if ctx.stream_id is not None:
        body["stream_id"] = ctx.stream_id
    return body


def on_forward(server: ServerIdentity, ctx: HookContext) -> ForwardPayload:
    """The forward ``backend`` call at publish time (``SrsHttpHooks::on_forward_backend``), with the
    publisher's context; the answer's ``data.urls`` are the RTMP URLs to push to."""
    return {
        "action": "on_forward",
        "server_id": server.server_id,
        "service_id": server.service_id,
        "client_id": ctx.client_id,
        "ip": ctx.ip,
        "vhost": ctx.vhost,
        "app": ctx.app,
        "tcUrl": ctx.tc_url,
        "stream": ctx.stream,
        "param": ctx.param,
    }
