"""Typed configuration model (pydantic v2, frozen).

Field names are SRS directive names, defaults are SRS defaults: a directive
that is absent from the file means what it means in SRS.  Note that SRS's own
defaults for ``http_api.enabled``, ``http_server.enabled`` and
``http_remux.enabled`` are *off*; the shipped default configuration
(:data:`livesrv.config.loader.DEFAULT_CONF_TEXT`, used when no file is given)
turns them on, exactly as SRS's ``conf/srs.conf`` does.

livesrv extensions are marked as such (``rtmp_limits``, ``http_limits``).

Times follow SRS units: ``*_timeout`` in ``publish`` and ``mw_latency`` are in
milliseconds; ``queue_length``, ``hls_*`` durations, ``dvr_duration`` and the
timeouts of ``rtmp_limits`` and ``http_limits`` are in seconds.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

__all__ = [
    "DEFAULT_VHOST",
    "ANY_HOST",
    "Endpoint",
    "parse_bool",
    "parse_endpoint",
    "listen_addresses",
    "RawApiConfig",
    "HttpApiAuthConfig",
    "HttpApiConfig",
    "HttpServerConfig",
    "ExporterConfig",
    "TlsListenerConfig",
    "HttpsConfig",
    "HttpApiHttpsConfig",
    "RtmpsConfig",
    "RtmpLimitsConfig",
    "HttpLimitsConfig",
    "PlayConfig",
    "PublishConfig",
    "HttpRemuxConfig",
    "HlsConfig",
    "HttpHooksConfig",
    "SecurityRule",
    "SecurityConfig",
    "DvrConfig",
    "ForwardDestination",
    "parse_forward_destination",
    "ForwardConfig",
    "ClusterConfig",
    "RegistryConfig",
    "RtcServerConfig",
    "VhostRtcConfig",
    "VhostConfig",
    "Config",
]

DEFAULT_VHOST = "__defaultVhost__"
#: Host used for a bare port (``listen 1935;``): all IPv4 interfaces, as SRS.
ANY_HOST = "0.0.0.0"

# --------------------------------------------------------------------------- scalar types

_TRUE = frozenset({"on", "true", "yes", "1"})
_FALSE = frozenset({"off", "false", "no", "0"})


def parse_bool(value: Any) -> bool:
    """``on/off``, ``true/false``, ``yes/no``, ``1/0`` (any case) to bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError("expected on/off (or true/false, yes/no, 1/0)")


class Endpoint(NamedTuple):
    """A listen address: ``(host, port)``; IPv6 hosts are kept without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_PORT_RE = re.compile(r"[0-9]{1,5}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.\-]*[A-Za-z0-9_])?")


def _port(text: str) -> int:
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        raise ValueError("port must be a number from 0 to 65535")
    return int(text)


def parse_endpoint(value: Any) -> Endpoint:
    """``1935``, ``0.0.0.0:1935``, ``host:1935`` or ``[::]:1935`` to an :class:`Endpoint`."""
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
        return parse_endpoint(f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("expected PORT, IP:PORT or [IPV6]:PORT")
    s = value.strip()
    if s.startswith("["):
        close = s.find("]")
        if close < 0 or s[close + 1 : close + 2] != ":":
            raise ValueError("expected [IPV6]:PORT")
        host = s[1:close]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
        return Endpoint(host, _port(s[close + 2 :]))
    if ":" not in s:
        if not _PORT_RE.fullmatch(s):
            raise ValueError("expected PORT, IP:PORT or [IPV6]:PORT")
        return Endpoint(ANY_HOST, _port(s))
    host, _, port = s.rpartition(":")
    if ":" in host:
        raise ValueError("an IPv6 address must be written in brackets: [IPV6]:PORT")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv4 address {host!r}") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")
    return Endpoint(host, _port(port))


def listen_addresses(listen: Endpoint | tuple[Endpoint, ...] | list[Endpoint]) -> list[tuple[str, int]]:
    """``(host, port)`` pairs of a ``listen`` value, single (``cfg.http_api.listen``)
    or multiple (``cfg.listen``)."""
    if isinstance(listen, Endpoint):
        return [(listen.host, listen.port)]
    return [(ep.host, ep.port) for ep in listen]


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _check_hook_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("a hook must be an http:// or https:// URL")
    return value


SrsBool = Annotated[bool, BeforeValidator(parse_bool)]
ListenAddr = Annotated[Endpoint, BeforeValidator(parse_endpoint)]
HookUrl = Annotated[str, AfterValidator(_check_hook_url)]
ChunkSize = Annotated[int, Field(ge=128, le=65536)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PosSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Millis = Annotated[int, Field(ge=0)]


def _ep(port: int) -> Endpoint:
    return Endpoint(ANY_HOST, port)


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- TLS listeners


class TlsListenerConfig(_Block):
    """What SRS's three TLS blocks share: ``enabled``, ``listen`` (one or more addresses, as SRS 7), and the
    PEM files. ``cert`` may hold a chain (the server's certificate first, then the intermediates); ``key`` is
    the unencrypted private key (RSA or EC). Both are re-read on reload; a missing, unreadable or mismatched
    pair is an error at start (see ``livesrv.servers.tls``). Each block below adds its ``listen``."""

    enabled: SrsBool = False
    key: str = "./conf/server.key"
    cert: str = "./conf/server.crt"


class HttpsConfig(TlsListenerConfig):
    """``http_server { https { ... } }`` (SRS 5+): the HTTP server over TLS (HTTPS-FLV, WSS-FLV, HLS, HTTP-TS,
    files and pages) beside the plain listener. SRS's defaults: off, port 8088."""

    listen: tuple[ListenAddr, ...] = Field(default=(_ep(8088),), min_length=1)


class HttpApiHttpsConfig(TlsListenerConfig):
    """``http_api { https { ... } }`` (SRS 5+): the API over TLS beside the plain listener. SRS's defaults: off,
    port 1990."""

    listen: tuple[ListenAddr, ...] = Field(default=(_ep(1990),), min_length=1)


class RtmpsConfig(TlsListenerConfig):
    """``rtmps { ... }`` (top level, SRS 7.0.56+): RTMP over TLS beside the plain RTMP listener. SRS has no
    default port (its ``conf/rtmps.conf`` uses 1443); livesrv defaults to 1443, so ``enabled on;`` is enough."""

    listen: tuple[ListenAddr, ...] = Field(default=(_ep(1443),), min_length=1)


# --------------------------------------------------------------------------- global blocks


class RawApiConfig(_Block):
    """``http_api { raw_api { ... } }``."""

    enabled: SrsBool = False
    allow_reload: SrsBool = False


class HttpApiAuthConfig(_Block):
    """``http_api { auth { ... } }``: HTTP basic auth for the API."""

    enabled: SrsBool = False
    username: str = ""
    password: str = ""


class HttpApiConfig(_Block):
    """``http_api { ... }``. SRS default: disabled (``conf/srs.conf`` enables it)."""

    enabled: SrsBool = False
    listen: ListenAddr = _ep(1985)
    crossdomain: SrsBool = True
    raw_api: RawApiConfig = RawApiConfig()
    auth: HttpApiAuthConfig = HttpApiAuthConfig()
    https: HttpApiHttpsConfig = HttpApiHttpsConfig()


class HttpServerConfig(_Block):
    """``http_server { ... }``. SRS default: disabled (``conf/srs.conf`` enables it)."""

    enabled: SrsBool = False
    listen: ListenAddr = _ep(8080)
    dir: str = "./objs/nginx/html"
    crossdomain: SrsBool = True
    https: HttpsConfig = HttpsConfig()


class ExporterConfig(_Block):
    """``exporter { ... }``: Prometheus exporter."""

    enabled: SrsBool = False
    listen: ListenAddr = _ep(9972)
    label: str = ""
    tag: str = ""


class RtmpLimitsConfig(_Block):
    """``rtmp_limits { ... }`` -- a **livesrv extension** (SRS has no such block).

    * ``max_message_size``: largest RTMP message accepted, bytes.
    * ``handshake_timeout``: seconds to complete the RTMP handshake.
    * ``idle_timeout``: seconds a connection may neither publish nor play, or a
      viewer not read, before it is closed.
    * ``max_write_buffer``: bytes queued to a viewer before it skips to the next keyframe.
    """

    # The 24-bit length field allows 16 MiB - 1; a video frame above 8 MiB is not live streaming.
    max_message_size: Annotated[int, Field(ge=1)] = 8 * 1024 * 1024
    handshake_timeout: PosSeconds = 10.0
    idle_timeout: PosSeconds = 30.0
    max_write_buffer: Annotated[int, Field(ge=1)] = 4 * 1024 * 1024


class HttpLimitsConfig(_Block):
    """``http_limits { ... }`` -- a **livesrv extension**: slow and idle clients of every HTTP listener
    (``http_server``, ``http_api``, ``exporter``). Live bodies (HTTP-FLV, HTTP-TS, WebSocket) are not
    subject to these timeouts: a viewer that stops reading is ``rtmp_limits.idle_timeout``'s business.

    * ``header_timeout``: seconds for a request head to arrive, from the connection's start or from its
      first byte after an idle keep-alive wait (nginx ``client_header_timeout``, 60 there; 10 here: a
      head is a few hundred bytes, and a slowloris attack holds a descriptor this long per connection).
    * ``idle_timeout``: seconds a keep-alive connection may wait for its next request, or a client take
      nothing of a response still queued for it (nginx ``keepalive_timeout`` 75 and ``send_timeout`` 60;
      60 here: longer than any HLS player's pause between segments).
    * ``body_timeout``: seconds for a whole request body to arrive, from the end of its head (a total,
      unlike nginx's ``client_body_timeout`` between two reads, which a trickle of bytes defeats).
    * ``max_body_size``: largest request body, bytes (nginx ``client_max_body_size`` 1m); more is 413.
    """

    header_timeout: PosSeconds = 10.0
    idle_timeout: PosSeconds = 60.0
    body_timeout: PosSeconds = 10.0
    max_body_size: Annotated[int, Field(ge=0)] = 1024 * 1024


class RtcTcpConfig(_Block):
    """``rtc_server { tcp { ... } }``: WebRTC over TCP. Accepted; livesrv has no ICE over TCP (it is logged)."""

    enabled: SrsBool = False
    listen: Annotated[int, Field(ge=0, le=65535)] = 8000


class RtcBlackHoleConfig(_Block):
    """``rtc_server { black_hole { ... } }``: SRS's packet mirror for debugging. Accepted, not implemented."""

    enabled: SrsBool = False
    addr: str = ""


class RtcServerConfig(_Block):
    """``rtc_server { ... }``: WebRTC (WHIP publish, WHEP play, on the ``http_api`` port). SRS's names.

    ``candidate``: the address announced to peers in the SDP answer (SRS's default ``*``: this machine's
    addresses; ``$NAME`` reads the environment variable NAME; a public IP behind a 1:1 NAT). ``listen`` is
    accepted for compatibility: aiortc cannot share one UDP port between sessions, so every session binds
    its own port chosen by the OS (see the README, "WebRTC"). ``ip_family`` ``ipv4`` (SRS's default),
    ``ipv6`` or ``all``: which of this machine's addresses are offered with ``candidate *``.
    """

    enabled: SrsBool = False
    listen: Annotated[int, Field(ge=0, le=65535)] = 8000
    candidate: str = "*"
    protocol: Annotated[Literal["udp", "tcp", "all"], BeforeValidator(_lower)] = "udp"
    ip_family: Annotated[Literal["ipv4", "ipv6", "all"], BeforeValidator(_lower)] = "ipv4"
    # Accepted for compatibility, no effect in livesrv.
    use_auto_detect_network_ip: SrsBool = True
    api_as_candidates: SrsBool = True
    resolve_api_domain: SrsBool = True
    keep_api_domain: SrsBool = False
    ecdsa: SrsBool = True
    encrypt: SrsBool = True
    reuseport: Annotated[int, Field(ge=0)] = 1
    merge_nalus: SrsBool = False
    tcp: RtcTcpConfig = RtcTcpConfig()
    black_hole: RtcBlackHoleConfig = RtcBlackHoleConfig()


# --------------------------------------------------------------------------- vhost blocks


class PlayConfig(_Block):
    """``vhost { play { ... } }``."""

    gop_cache: SrsBool = True
    gop_cache_max_frames: Annotated[int, Field(ge=0)] = 2500
    queue_length: Seconds = 30.0
    time_jitter: Annotated[Literal["full", "zero", "off"], BeforeValidator(_lower)] = "full"
    atc: SrsBool = False
    mix_correct: SrsBool = False
    mw_latency: Millis = 350
    mw_msgs: Annotated[int, Field(ge=0)] = 8
    # livesrv: seconds a viewer stays attached after its publisher left, waiting for a republish.
    republish_grace: Seconds = 30.0
    # livesrv: seconds a viewer that arrives before any publisher waits for one.
    wait_timeout: Seconds = 30.0


class PublishConfig(_Block):
    """``vhost { publish { ... } }``; timeouts in milliseconds."""

    firstpkt_timeout: Millis = 20000
    normal_timeout: Millis = 5000
    # SRS's merged read: a live publisher's socket is read at most every mr_latency ms, so each read takes what
    # arrived meanwhile, and goes to the viewers as one batch (fewer, larger reads and writes: much less CPU per
    # publisher). livesrv: on by default, over the vhost's mw_latency when mr_latency is not set, so it adds no
    # latency (the viewers' batches wait that long anyway); off with min_latency. SRS's default is off.
    mr: SrsBool = True
    mr_latency: Millis | None = None
    # livesrv: a publisher arriving on a published stream takes it over (the old one is closed). Off: SRS's
    # behaviour, the newcomer is refused with "stream busy".
    takeover: SrsBool = True


class HttpRemuxConfig(_Block):
    """``vhost { http_remux { ... } }``: HTTP-FLV. SRS default: disabled."""

    enabled: SrsBool = False
    mount: str = "[vhost]/[app]/[stream].flv"
    # The FLV header's track flags. With guess_has_av (SRS's default) they follow the stream's real tracks,
    # decided when the viewer's first media goes out; has_audio/has_video off always remove that track.
    # With guess_has_av off they are what is configured, from the first byte.
    has_audio: SrsBool = True
    has_video: SrsBool = True
    guess_has_av: SrsBool = True
    # A track the header did not announce (it appeared later) is not sent to that viewer: players break on it.
    drop_if_not_match: SrsBool = True


class HlsConfig(_Block):
    """``vhost { hls { ... } }``.

    ``enabled`` defaults to off, as SRS's built-in default; SRS's shipped
    ``conf/srs.conf`` turns it on (see ``conf/srs-minimal.conf``).
    """

    enabled: SrsBool = False
    hls_fragment: PosSeconds = 10.0
    hls_window: PosSeconds = 60.0
    hls_td_ratio: PosSeconds = 1.5
    hls_cleanup: SrsBool = True
    hls_dispose: Seconds = 120.0
    hls_wait_keyframe: SrsBool = True
    hls_path: str = "./objs/nginx/html"
    hls_m3u8_file: str = "[app]/[stream].m3u8"
    hls_ts_file: str = "[app]/[stream]-[seq].ts"


class HttpHooksConfig(_Block):
    """``vhost { http_hooks { ... } }``: each hook is a list of URLs."""

    enabled: SrsBool = False
    on_connect: tuple[HookUrl, ...] = ()
    on_close: tuple[HookUrl, ...] = ()
    on_publish: tuple[HookUrl, ...] = ()
    on_unpublish: tuple[HookUrl, ...] = ()
    on_play: tuple[HookUrl, ...] = ()
    on_stop: tuple[HookUrl, ...] = ()
    on_dvr: tuple[HookUrl, ...] = ()
    on_hls: tuple[HookUrl, ...] = ()


class SecurityRule(_Block):
    """One ``allow|deny publish|play all|IP|CIDR;`` line."""

    action: Annotated[Literal["allow", "deny"], BeforeValidator(_lower)]
    method: Annotated[Literal["publish", "play"], BeforeValidator(_lower)]
    target: str

    @model_validator(mode="after")
    def _check_target(self) -> "SecurityRule":
        if self.target.lower() != "all":
            try:
                ipaddress.ip_network(self.target, strict=False)
            except ValueError:
                raise ValueError(
                    f"security target must be 'all', an IP or a CIDR, not {self.target!r}"
                ) from None
        return self

    def matches(self, method: str, ip: str) -> bool:
        """Does this rule apply to ``method`` (publish|play) from ``ip``?"""
        if method != self.method:
            return False
        if self.target.lower() == "all":
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
            net = ipaddress.ip_network(self.target, strict=False)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped and net.version == 4:
            addr = addr.ipv4_mapped
        return addr.version == net.version and addr in net


class SecurityConfig(_Block):
    """``vhost { security { ... } }``; ``rules`` keeps the file order."""

    enabled: SrsBool = False
    rules: tuple[SecurityRule, ...] = ()

    def allows(self, method: str, ip: str) -> bool:
        """SRS 5-7 semantics (``SrsSecurity::do_check``): everything if disabled; a matching ``deny`` refuses;
        else a matching ``allow`` admits; else refused when the block has any ``allow`` rule or no rule at all
        (a block of only ``deny`` rules is a deny list). The servers use :func:`livesrv.hooks.security.check`,
        which adds CIDR matching across address spellings."""
        if not self.enabled:
            return True
        if any(r.action == "deny" and r.matches(method, ip) for r in self.rules):
            return False
        if any(r.action == "allow" and r.matches(method, ip) for r in self.rules):
            return True
        return bool(self.rules) and not any(r.action == "allow" for r in self.rules)


class DvrConfig(_Block):
    """``vhost { dvr { ... } }``: SRS's directives and defaults (see the README, "DVR")."""

    enabled: SrsBool = False
    #: ``all``, or the ``app/stream`` names to record.
    dvr_apply: tuple[str, ...] = ("all",)
    dvr_plan: Annotated[Literal["session", "segment"], BeforeValidator(_lower)] = "session"
    #: A file template ending in ``.flv`` or ``.mp4``; anything else is a directory (``/[stream].[timestamp].flv``
    #: is appended, as SRS).
    dvr_path: str = "./objs/nginx/html/[app]/[stream].[timestamp].flv"
    dvr_duration: PosSeconds = 30.0
    dvr_wait_keyframe: SrsBool = True
    #: ``full`` and ``zero``: each file starts at 0; ``off``: the stream's timestamps.
    time_jitter: Annotated[Literal["full", "zero", "off"], BeforeValidator(_lower)] = "full"


class ForwardDestination(NamedTuple):
    """One ``destination`` of ``forward``: where to push, and the app/stream to push as (empty: the
    publisher's)."""

    host: str
    port: int
    app: str = ""
    stream: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "/".join(p for p in (self.app, self.stream) if p)
        return f"{host}:{self.port}" + (f"/{path}" if path else "")


_DEST_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d+))?(?P<path>/.*)?$")


def parse_forward_destination(value: Any) -> ForwardDestination:
    """``host[:port]`` as SRS (port 1935), or the livesrv extension ``host[:port]/app[/stream]``, which pushes
    under another app (and stream name) than the publisher's."""
    if isinstance(value, ForwardDestination):
        return value
    if isinstance(value, (tuple, list)):
        return ForwardDestination(*value)
    text = str(value).strip()
    if text.lower().startswith("rtmp://"):
        raise ValueError("a forward destination is host[:port][/app[/stream]], not a URL (use backend for URLs)")
    m = _DEST_RE.match(text)
    if m is None:
        raise ValueError(f"forward destination must be host[:port][/app[/stream]], not {text!r}")
    port = int(m.group("port") or 1935)
    if not 1 <= port <= 65535:
        raise ValueError(f"forward destination port out of range: {port}")
    parts = [p for p in (m.group("path") or "").split("/") if p]
    if len(parts) > 2 or any(p in (".", "..") or "?" in p for p in parts):
        raise ValueError(f"forward destination path must be /app or /app/stream, not {m.group('path')!r}")
    return ForwardDestination(m.group("v6") or m.group("host"), port, *parts)


class ForwardConfig(_Block):
    """``vhost { forward { ... } }``: every stream published on the vhost is also pushed to each destination.

    ``backend`` (SRS 5+): at each publish, POST ``on_forward`` to the first URL and push to the RTMP URLs of
    the answer's ``data.urls``; when set, ``destination`` is ignored (as SRS).
    """

    enabled: SrsBool = False
    destination: tuple[Annotated[ForwardDestination, BeforeValidator(parse_forward_destination)], ...] = ()
    backend: tuple[HookUrl, ...] = ()


def _origins(value: Any) -> Any:
    """SRS accepts ``origin`` as one directive with several ``host[:port]`` arguments, separated by spaces."""
    if isinstance(value, str):
        return tuple(value.split())
    return value


def _origin(value: Any) -> str:
    text = str(value).strip()
    m = _DEST_RE.match(text)
    if m is None or m.group("path"):
        raise ValueError(f"an origin is host[:port], not {text!r}")
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"origin port out of range: {port}")
    return text


class ClusterConfig(_Block):
    """``vhost { cluster { ... } }``: ``mode remote`` makes the vhost an edge (see the README, "Edge").

    ``origin``: ``host[:port]`` entries, tried round robin; the port defaults to 1935 for ``protocol rtmp`` and
    80 for ``protocol flv`` (SRS's defaults: with ``flv`` the origins are HTTP servers). ``vhost``: the vhost to
    ask the origin for (``[vhost]``: the edge's). ``linger`` (livesrv): seconds a pull outlives its last viewer,
    so a viewer coming back at once keeps it (SRS stops at once and refuses viewers while it stops).
    ``token_traverse`` and ``follow_client`` are accepted for compatibility and not implemented.
    """

    mode: Annotated[Literal["local", "remote"], BeforeValidator(_lower)] = "local"
    origin: Annotated[tuple[Annotated[str, AfterValidator(_origin)], ...], BeforeValidator(_origins)] = ()
    protocol: Annotated[Literal["rtmp", "flv"], BeforeValidator(_lower)] = "rtmp"
    vhost: str = "[vhost]"
    debug_srs_upnode: SrsBool = True
    token_traverse: SrsBool = False
    follow_client: SrsBool = False
    linger: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0

    @property
    def edge(self) -> bool:
        return self.mode == "remote" and bool(self.origin)


class VhostRtcConfig(_Block):
    """``vhost { rtc { ... } }``: WebRTC on the vhost (see the README, "WebRTC"). SRS's names and defaults.

    ``rtmp_to_rtc``: streams published over RTMP (or any protocol but WebRTC) play over WHEP, their AAC
    transcoded to Opus (``opus_bitrate``); off refuses such WHEP viewers, as SRS ("Disabled rtmp_to_rtc").
    ``rtc_to_rtmp``: accepted for compatibility; livesrv always bridges a WHIP publish into the stream, so it
    plays over RTMP, HTTP-FLV and HLS (Opus transcoded to AAC, ``aac_bitrate``). ``keep_bframe off`` drops
    B-frames before WebRTC (SRS's ``bframe discard``). ``stun_timeout``: seconds a peer may stay silent
    (failed ICE consent checks, or no connection at all) before it is closed. ``pli_for_rtmp``: seconds between
    two keyframe requests (PLI) to a WHIP publisher. SRS's legacy ``aac transcode|discard`` and ``bframe
    keep|discard`` are read as ``rtmp_to_rtc on|off`` and ``keep_bframe on|off``.
    """

    enabled: SrsBool = False
    rtmp_to_rtc: SrsBool = False
    rtc_to_rtmp: SrsBool = False
    keep_bframe: SrsBool = False
    keep_avc_nalu_sei: SrsBool = True
    stun_timeout: PosSeconds = 30.0
    pli_for_rtmp: Annotated[float, Field(ge=0.5, le=30, allow_inf_nan=False)] = 6.0
    opus_bitrate: Annotated[int, Field(ge=6000, le=510000)] = 48000
    aac_bitrate: Annotated[int, Field(ge=8000, le=320000)] = 48000
    # Accepted for compatibility, no effect in livesrv (aiortc negotiates them itself).
    nack: SrsBool = True
    nack_no_copy: SrsBool = True
    twcc: SrsBool = True
    stun_strict_check: SrsBool = False
    dtls_role: Annotated[Literal["passive", "active"], BeforeValidator(_lower)] = "passive"
    dtls_version: Annotated[Literal["auto", "dtls1.0", "dtls1.2"], BeforeValidator(_lower)] = "auto"
    drop_for_pt: Annotated[int, Field(ge=0)] = 0
    init_rate_from_sdp: SrsBool = False
    # SRS's legacy spellings (moved into rtmp_to_rtc / keep_bframe).
    aac: Annotated[Literal["transcode", "discard"] | None, BeforeValidator(_lower)] = None
    bframe: Annotated[Literal["keep", "discard"] | None, BeforeValidator(_lower)] = None

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            aac = data.get("aac")
            if isinstance(aac, str) and "rtmp_to_rtc" not in data:
                data["rtmp_to_rtc"] = aac.strip().lower() == "transcode"
            bframe = data.get("bframe")
            if isinstance(bframe, str) and "keep_bframe" not in data:
                data["keep_bframe"] = bframe.strip().lower() == "keep"
        return data


class VhostConfig(_Block):
    """``vhost NAME { ... }``."""

    name: str = DEFAULT_VHOST
    enabled: SrsBool = True
    min_latency: SrsBool = False
    tcp_nodelay: SrsBool = False
    #: None: use the global ``chunk_size`` (see :meth:`Config.vhost_chunk_size`).
    chunk_size: ChunkSize | None = None
    play: PlayConfig = PlayConfig()
    publish: PublishConfig = PublishConfig()
    http_remux: HttpRemuxConfig = HttpRemuxConfig()
    hls: HlsConfig = HlsConfig()
    http_hooks: HttpHooksConfig = HttpHooksConfig()
    security: SecurityConfig = SecurityConfig()
    dvr: DvrConfig = DvrConfig()
    forward: ForwardConfig = ForwardConfig()
    cluster: ClusterConfig = ClusterConfig()
    rtc: VhostRtcConfig = VhostRtcConfig()

    @model_validator(mode="before")
    @classmethod
    def _rtc_min_latency(cls, data: Any) -> Any:
        """As SRS: a vhost with WebRTC on gets ``min_latency on`` (no merged read or write, every message at
        once) unless the file says otherwise: a browser over WebRTC sits at the live edge, where a merged read
        would add its whole interval to the picture's delay."""
        if isinstance(data, dict) and "min_latency" not in data:
            rtc = data.get("rtc")
            enabled = rtc.get("enabled") if isinstance(rtc, dict) else getattr(rtc, "enabled", False)
            try:
                on = parse_bool(enabled) if enabled is not None else False
            except ValueError:
                on = False
            if on:
                data = {**data, "min_latency": True}
        return data


def _redis_url(value: Any) -> str:
    text = str(value).strip()
    if not re.match(r"^(redis|rediss|unix|livesrv\+unix)://", text):
        raise ValueError(f"registry must be a redis:// (or rediss://, unix://) URL, not {text!r}")
    return text


class RegistryConfig(_Block):
    """livesrv: the top-level ``cluster { registry redis://host:6379/0; }`` block: nodes that share a Redis
    registry serve every stream published on any of them (see the README, "Cluster").

    ``advertise``: the host the other nodes reach this one at (default: the RTMP listen host, which must then
    not be a wildcard). ``node_id``: this node's name in the registry (default: ``host:rtmp_port``).
    ``ttl``: seconds a node's and its streams' registry entries live without a heartbeat (sent every ttl/3);
    a dead node's streams are free after it (at once with takeover).
    """

    registry: Annotated[str, AfterValidator(_redis_url)] | None = None
    advertise: str | None = None
    node_id: str | None = None
    ttl: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 10.0
    #: Prefix of every Redis key and channel, so several clusters can share one Redis.
    prefix: str = "livesrv"


def _workers(value: Any) -> Any:
    """``workers auto``: one worker per core this machine has."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    return value


#: Most worker processes one master starts (a typo such as ``workers 1000`` must not fork a thousand).
MAX_WORKERS = 256


# --------------------------------------------------------------------------- root


class Config(_Block):
    """The whole configuration.  ``vhosts`` always holds ``__defaultVhost__``."""

    listen: tuple[ListenAddr, ...] = Field(default=(_ep(1935),), min_length=1)
    max_connections: Annotated[int, Field(ge=1)] = 1000
    daemon: SrsBool = True  # accepted for SRS compatibility, ignored by livesrv
    pid: str = "./objs/srs.pid"
    chunk_size: ChunkSize = 60000
    # SRS defaults to file (console in docker); livesrv never daemonizes: console.
    srs_log_tank: Annotated[Literal["console", "file"], BeforeValidator(_lower)] = "console"
    srs_log_level: Annotated[
        Literal["verbose", "trace", "debug", "info", "warn", "error"], BeforeValidator(_lower)
    ] = "trace"
    srs_log_file: str = "./objs/srs.log"
    ff_log_dir: str = "./objs"
    server_id: str | None = None
    http_server: HttpServerConfig = HttpServerConfig()
    http_api: HttpApiConfig = HttpApiConfig()
    exporter: ExporterConfig = ExporterConfig()
    rtmps: RtmpsConfig = RtmpsConfig()
    rtmp_limits: RtmpLimitsConfig = RtmpLimitsConfig()
    http_limits: HttpLimitsConfig = HttpLimitsConfig()
    rtc_server: RtcServerConfig = RtcServerConfig()
    # livesrv: seconds a hook server may take to answer one callback (SRS: 30, not configurable), and how many
    # callbacks may be in flight at once.
    hooks_timeout: PosSeconds = 5.0
    hooks_max_concurrent: Annotated[int, Field(ge=1)] = 64
    #: Graceful quit (SIGQUIT, or SIGTERM with ``force_grace_quit``): milliseconds to go on accepting before
    #: the listeners close (a load balancer stops sending new clients meanwhile), then until every client has
    #: left, then ``grace_final_wait`` more. SRS's defaults.
    grace_start_wait: Millis = 2300
    grace_final_wait: Millis = 3200
    force_grace_quit: SrsBool = False
    cluster: RegistryConfig = RegistryConfig()
    #: livesrv: worker processes on this host sharing the public ports (``auto``: one per core); 1 is one
    #: process and no master (see the README, "Workers on one host").
    workers: Annotated[int, BeforeValidator(_workers), Field(ge=1, le=MAX_WORKERS)] = 1
    vhosts: dict[str, VhostConfig] = Field(
        default_factory=lambda: {DEFAULT_VHOST: VhostConfig(name=DEFAULT_VHOST)}
    )

    @model_validator(mode="before")
    @classmethod
    def _add_default_vhost(cls, data: Any) -> Any:
        if isinstance(data, dict) and "vhosts" in data:
            vhosts = dict(data["vhosts"] or {})
            if DEFAULT_VHOST not in vhosts:
                vhosts[DEFAULT_VHOST] = {"name": DEFAULT_VHOST}
            data = {**data, "vhosts": vhosts}
        return data

    @model_validator(mode="after")
    def _check_vhost_names(self) -> "Config":
        for key, vhost in self.vhosts.items():
            if key != vhost.name:
                raise ValueError(f"vhost stored as {key!r} is named {vhost.name!r}")
        return self

    @model_validator(mode="after")
    def _check_workers(self) -> "Config":
        """What ``workers N`` cannot do, refused here rather than found out by a corrupt file later."""
        if self.workers == 1:
            return self
        if self.cluster.registry is not None:
            raise ValueError(
                "workers > 1 runs its own registry (in the master process): remove cluster { registry ...; }, "
                "or set workers 1 and run one livesrv per core on the Redis registry (docs/scaling.md)")
        listeners = {"listen": self.listen, "http_server": self.http_server, "http_api": self.http_api,
                     "exporter": self.exporter, "rtmps": self.rtmps, "http_server.https": self.http_server.https,
                     "http_api.https": self.http_api.https}
        for name, block in listeners.items():
            if getattr(block, "enabled", True):
                listen = block if name == "listen" else block.listen  # type: ignore[union-attr]
                if any(port == 0 for _, port in listen_addresses(listen)):  # type: ignore[arg-type]
                    # Port 0 would give each worker a port of its own: nothing shared, clients reach one worker.
                    raise ValueError(f"{name}: workers > 1 share their ports: a port of 0 (any free port) gives "
                                     f"each worker its own; set the port")
        for vhost in self.vhosts.values():
            if vhost.cluster.edge and (vhost.hls.enabled or vhost.dvr.enabled):
                # Each worker pulls an edge vhost's streams from the origin on its own: two writers of one file.
                raise ValueError(f"vhost {vhost.name}: an edge vhost (cluster {{ mode remote; }}) cannot write HLS "
                                 f"or DVR with workers > 1 (each worker pulls on its own)")
        return self

    def vhost(self, name: str | None) -> VhostConfig:
        """The vhost called ``name``, else ``__defaultVhost__`` (as SRS)."""
        if name and name in self.vhosts:
            return self.vhosts[name]
        return self.vhosts[DEFAULT_VHOST]

    def has_vhost(self, name: str) -> bool:
        """True if ``name`` is configured explicitly (or is ``__defaultVhost__``)."""
        return name in self.vhosts

    def listen_endpoints(self) -> list[tuple[str, int]]:
        """RTMP listen addresses as ``(host, port)`` pairs."""
        return listen_addresses(self.listen)

    def vhost_chunk_size(self, name: str | None) -> int:
        """The vhost's ``chunk_size``, falling back to the global one."""
        size = self.vhost(name).chunk_size
        return self.chunk_size if size is None else size
