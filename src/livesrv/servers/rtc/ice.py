"""ICE addresses: which of this machine's addresses aioice offers, what the answer announces, and which peer
addresses a session talks to.

aioice gathers its host candidates from ``aioice.ice.get_host_addresses`` (every address but 127.0.0.1 and
::1) and binds each on a port the OS picks; it has no option for either. The server replaces that one function
(process-wide, once) by :func:`_host_addresses`, which answers what ``rtc_server { candidate; }`` asks for:

* ``candidate *`` (SRS's default): this machine's addresses of ``ip_family``, as aioice would;
* ``candidate`` an address of this machine (``127.0.0.1`` included): that address only;
* ``candidate`` any other address (a public IP in front of a 1:1 NAT) or a name: the machine's addresses are
  bound and the answer announces the configured one in their place, with the port kept.

When every offered address is loopback, a session also keeps to loopback peers: the offer's other candidates
(LAN addresses, mDNS ``.local`` names) are dropped before aiortc sees them, and connectivity checks from any
other address are ignored, so no packet goes to an address that is not loopback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

import aioice.ice

_original_host_addresses = aioice.ice.get_host_addresses
#: The addresses to bind now (None: aioice's own choice); set by :func:`install`.
_bind: list[str] | None = None
_family = "ipv4"


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _bind is not None:
        return list(_bind)
    return _original_host_addresses(use_ipv4=use_ipv4 and _family in ("ipv4", "all"),
                                    use_ipv6=use_ipv6 and _family in ("ipv6", "all"))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class IcePlan:
    """What ``candidate`` means on this machine."""

    bind: tuple[str, ...] | None  # addresses aioice binds (None: this machine's, by ip_family)
    announce: str | None  # address written into the answer instead of the bound ones (NAT), or None

    @property
    def loopback_only(self) -> bool:
        return self.bind is not None and all(_is_loopback(a) for a in self.bind)


def plan(candidate: str, ip_family: str = "ipv4", eip: str = "") -> IcePlan:
    """Resolve ``rtc_server { candidate; }`` (``$NAME`` reads the environment, as SRS) and a request's
    ``?eip=`` (SRS: the candidate for this session only)."""
    value = (eip or candidate or "*").strip()
    if value.startswith("$"):
        value = os.environ.get(value[1:], "*").strip() or "*"
    if value in ("*", "0.0.0.0", "::"):
        return IcePlan(None, None)
    host = value.split(":")[0] if value.count(":") == 1 else value  # SRS allows ip:port in eip
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return IcePlan(None, host)  # a name: announced as is
    if ip.is_loopback:
        return IcePlan((str(ip),), None)
    local = set(_original_host_addresses(use_ipv4=True, use_ipv6=True))
    if str(ip) in local:
        return IcePlan((str(ip),), None)
    return IcePlan(None, str(ip))


def install(p: IcePlan, ip_family: str = "ipv4") -> None:
    """Make aioice offer what ``p`` says from now on (every session created after this call)."""
    global _bind, _family
    _bind = list(p.bind) if p.bind is not None else None
    _family = ip_family
    aioice.ice.get_host_addresses = _host_addresses


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host)", re.MULTILINE)


def announce(sdp: str, address: str | None) -> str:
    """The answer with its host candidates' addresses replaced by ``address`` (ports kept)."""
    if not address:
        return sdp
    sdp = _CANDIDATE.sub(lambda m: m.group(1) + address + m.group(3), sdp)
    family = "IP6" if ":" in address else "IP4"
    return re.sub(r"^c=IN IP[46] \S+", f"c=IN {family} {address}", sdp, flags=re.MULTILINE)


def loopback_offer(sdp: str) -> str:
    """An offer with only its loopback candidates (the rest could only be reached off loopback)."""
    out = []
    for line in sdp.split("\n"):
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 6 or not _is_loopback(parts[4]):
                continue
        out.append(line)
    return "\n".join(out)


def guard_loopback(pc: Any) -> None:
    """Ignore connectivity checks that come from an address that is not loopback (a browser's LAN socket),
    so aioice never answers, or learns a peer-reflexive candidate, off loopback."""
    seen: set[int] = set()
    for t in pc.getTransceivers():
        dtls = t.receiver.transport if t.receiver is not None else None
        conn = getattr(getattr(getattr(dtls, "transport", None), "iceGatherer", None), "_connection", None)
        if conn is None or id(conn) in seen:
            continue
        seen.add(id(conn))
        original = conn.request_received

        def request_received(message: Any, addr: tuple[Any, ...], protocol: Any, _orig: Any = original) -> None:
            if _is_loopback(str(addr[0])):
                _orig(message, addr, protocol)

        conn.request_received = request_received
