"""``security { enabled on; allow|deny publish|play all|IP|CIDR; }`` decided as SRS v5-v7 decide it.

SRS's ``SrsSecurity::do_check`` in v5-v7 (SRS 3's code and wiki describe an older order):

1. security disabled: everything is allowed;
2. a ``deny`` rule of the same method matching the client refuses it, wherever it stands in the block;
3. else an ``allow`` rule of the same method matching the client admits it;
4. else the client is refused if the block has any ``allow`` rule (of either method) or no rule at all, and
   admitted otherwise -- so a block of ``deny`` rules only is a deny list, and one ``allow`` rule turns the
   block into an allow list for both methods.

SRS matches ``all``, the exact address text, and IPv4 CIDRs. livesrv also matches IPv6 CIDRs, equal
addresses written differently (``::1`` and ``0::1``) and IPv4 rules against IPv4-mapped IPv6 clients
(``::ffff:10.0.0.1`` from a dual-stack socket), which SRS would miss.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from livesrv.config.model import SecurityConfig

__all__ = ["METHODS", "check", "allows"]

METHODS = ("publish", "play")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check(security: SecurityConfig, method: str, ip: str) -> str | None:
    """None if ``ip`` may ``method`` (publish|play) under ``security``, else the refusal reason for logs."""
    if method not in METHODS:
        raise ValueError(f"method must be publish or play, not {method!r}")
    if not security.enabled:
        return None
    rules = security.rules
    addr = _address(ip)
    for rule in rules:
        if rule.action == "deny" and rule.method == method and _matches(rule.target, ip, addr):
            return f"security: {method} from {ip} denied by rule 'deny {method} {rule.target}'"
    for rule in rules:
        if rule.action == "allow" and rule.method == method and _matches(rule.target, ip, addr):
            return None
    allow_rules = sum(1 for rule in rules if rule.action == "allow")
    if allow_rules or not rules:
        deny_rules = len(rules) - allow_rules
        return (
            f"security: {method} from {ip} not allowed by any of "
            f"{allow_rules} allow/{deny_rules} deny rules"
        )
    return None


def allows(security: SecurityConfig, method: str, ip: str) -> bool:
    """``check`` as a boolean."""
    return check(security, method, ip) is None


def _matches(target: str, ip: str, addr: _Address | None) -> bool:
    if target.lower() == "all" or target == ip:
        return True
    net = _network(target)
    if net is None or addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None and net.version == 4:
        addr = addr.ipv4_mapped
    return addr.version == net.version and addr in net


def _address(ip: str) -> _Address | None:
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


@lru_cache(maxsize=256)
def _network(target: str) -> _Network | None:
    try:
        return ipaddress.ip_network(target.split("%", 1)[0], strict=False)
    except ValueError:
        return None
