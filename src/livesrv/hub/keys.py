"""Stream identity and SRS's URL conventions.

A stream is named by (vhost, app, stream). RTMP clients spread that over the ``tcUrl`` of ``connect``
(``rtmp://host[:port]/app[?vhost=v&k=v]``) and the stream name of ``publish``/``play``
(``stream[?token=...]``); HTTP clients put it in the path (``/app/stream.flv?token=...``). Everything after
``?`` is kept as ``param`` for hooks and auth, and never used to name the stream.

Names are checked where they enter (:func:`request_problem`, :func:`path_problem`), by one rule: no control
characters, valid UTF-8, and short enough to become file names (see the README, "Stream names").
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from livesrv.names import MAX_NAME_BYTES, MAX_URL_BYTES, MAX_VHOST_BYTES, name_problem

DEFAULT_VHOST = "__defaultVhost__"


@dataclass(frozen=True, slots=True)
class StreamKey:
    vhost: str
    app: str
    stream: str

    @property
    def path(self) -> str:
        """SRS's stream url: ``/app/stream`` (the vhost is not part of it)."""
        return f"/{self.app}/{self.stream}"

    def __str__(self) -> str:
        if self.vhost == DEFAULT_VHOST:
            return self.path
        return f"{self.vhost}{self.path}"


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Where a client wants to publish or play, as it asked for it."""

    key: StreamKey
    param: str  # "?a=b&c=d" or "" - the raw query (tokens), for hooks
    tc_url: str

    def masked_param(self) -> str:
        """The query with every value hidden, for logs: tokens must not leak."""
        return mask_query(self.param)


def mask_query(param: str) -> str:
    """``?a=1&b=2`` as ``?a=***&b=***``: which keys were sent, never their values (tokens)."""
    if not param:
        return ""
    pairs = parse_qsl(param.lstrip("?"), keep_blank_values=True)
    return "?" + "&".join(f"{k}=***" for k, _ in pairs)


def mask_url(url: str) -> str:
    """A URL fit for logs: scheme, host and path kept as sent; query values and any password hidden.

    Split by hand rather than with ``urlsplit``, which silently drops tabs and line breaks: the log must show
    what the client sent (escaped), not a cleaned-up version of it.
    """
    head, sep, query = url.partition("#")[0].partition("?")
    head = _USERINFO.sub(lambda mt: f"{mt[1]}{mt[2].split(':', 1)[0]}:***@", head, count=1)
    return head + (mask_query(sep + query) if sep else "")


_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*)@")


def request_problem(req: StreamRequest) -> str | None:
    """Why a publish or play names no acceptable stream (None when the names are fine)."""
    key = req.key
    checks = (
        (key.vhost, "vhost", MAX_VHOST_BYTES),
        (key.app, "app", MAX_NAME_BYTES),
        (key.stream, "stream name", MAX_NAME_BYTES),
        (req.param, "query", MAX_URL_BYTES),
        (req.tc_url, "tcUrl", MAX_URL_BYTES),
    )
    for value, what, limit in checks:
        problem = name_problem(value, what, limit)
        if problem is not None:
            return problem
    return None


def _split_query(s: str) -> tuple[str, str]:
    head, sep, query = s.partition("?")
    return head, (sep + query) if sep else ""


def _vhost_from_query(query: str) -> str | None:
    for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=True):
        if k in ("vhost", "domain") and v:
            return v
    return None


def _resolve_vhost(query: str, host: str | None, vhosts: Collection[str]) -> str:
    """As SRS: ``?vhost=`` wins, then the host name; a name that is not a configured vhost (an IP address,
    localhost, anything unknown) means the default vhost."""
    for name in (_vhost_from_query(query), host):
        if name and name in vhosts:
            return name
    return DEFAULT_VHOST


def parse_rtmp_request(
    tc_url: str, app: str, stream_name: str, vhosts: Collection[str] = ()
) -> StreamRequest:
    """Resolve an RTMP publish/play to a stream.

    ``app`` is the connect command's ``app`` (which may carry ``?vhost=``), ``stream_name`` the publish or
    play argument (which may carry ``?token=``). Query strings from both are merged into ``param``.
    """
    app_path, app_query = _split_query(app or "")
    stream, stream_query = _split_query(stream_name or "")
    if not app_path and tc_url:
        app_path, app_query = _split_query(urlsplit(tc_url).path.lstrip("/"))
    host = None
    if tc_url:
        try:
            host = urlsplit(tc_url).hostname
        except ValueError:
            host = None
    # "rtmp://host/app/sub/stream": keep everything but the last path element as the app.
    app_path = app_path.strip("/")
    stream = stream.strip("/")
    if "/" in stream:
        extra, stream = stream.rsplit("/", 1)
        app_path = f"{app_path}/{extra}" if app_path else extra
    queries = [q for q in (app_query, stream_query) if q]
    param = "?" + "&".join(q.lstrip("?") for q in queries) if queries else ""
    vhost = _resolve_vhost(param, host, vhosts)
    return StreamRequest(StreamKey(vhost, app_path, stream), param, tc_url)


def parse_http_path(
    host: str | None, target: str, suffix: str, vhosts: Collection[str] = ()
) -> StreamRequest | None:
    """Resolve ``/[vhost/]app/stream<suffix>[?query]`` (SRS's mount ``[vhost]/[app]/[stream].flv``).

    The path is percent-decoded (as :attr:`Request.path` is, and as HLS file names are looked up), so
    ``%20`` names a space and ``%0a`` a newline, which :func:`request_problem` then refuses. The query stays
    raw: it is passed on to hooks as the client sent it. Returns None when the path does not end with
    ``suffix`` or has no app.
    """
    raw_path, query = _split_query(target)
    path = unquote(raw_path)
    if not path.endswith(suffix):
        return None
    parts = [p for p in path[: -len(suffix)].split("/") if p]
    if len(parts) < 2:
        return None
    stream = parts[-1]
    app = "/".join(parts[:-1])
    hostname = (host or "").rsplit(":", 1)[0] or None
    vhost = _resolve_vhost(query, hostname, vhosts)
    # SRS reports an HTTP client's tcUrl as the URL of its app, as an RTMP client would have sent it.
    return StreamRequest(StreamKey(vhost, app, stream), query, f"http://{host}/{app}" if host else "")
