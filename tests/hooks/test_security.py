"""``security`` rules, as SRS v5-v7 decide them (``SrsSecurity::do_check``), written as config text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livesrv.config import parse_text
from livesrv.config.model import SecurityConfig, SecurityRule
from livesrv.hooks.security import allows, check


def security(block: str) -> SecurityConfig:
    result = parse_text(f"vhost __defaultVhost__ {{ {block} }}", "<test>")
    assert not result.warnings, result.warnings
    return result.config.vhost(None).security


ON = "security { enabled on; %s }"

# (security block, method, client ip, allowed)
CASES = [
    # disabled: everything is allowed, whatever the rules say
    ("", "publish", "1.2.3.4", True),
    ("security { enabled off; deny publish all; deny play all; }", "publish", "1.2.3.4", True),
    ("security { enabled off; deny publish all; deny play all; }", "play", "1.2.3.4", True),
    # enabled without rules: nothing is allowed
    (ON % "", "publish", "127.0.0.1", False),
    (ON % "", "play", "127.0.0.1", False),
    # deny rules only: a deny list, per method
    (ON % "deny publish 1.2.3.4;", "publish", "1.2.3.4", False),
    (ON % "deny publish 1.2.3.4;", "publish", "5.6.7.8", True),
    (ON % "deny publish 1.2.3.4;", "play", "1.2.3.4", True),
    (ON % "deny play all;", "play", "5.6.7.8", False),
    (ON % "deny play all;", "publish", "5.6.7.8", True),
    # allow rules: an allow list; one allow rule of either method makes the block an allow list for both
    (ON % "allow publish 127.0.0.1;", "publish", "127.0.0.1", True),
    (ON % "allow publish 127.0.0.1;", "publish", "10.0.0.1", False),
    (ON % "allow publish 127.0.0.1;", "play", "127.0.0.1", False),
    (ON % "allow play all;", "play", "10.0.0.1", True),
    (ON % "allow play all;", "publish", "10.0.0.1", False),
    (ON % "allow play all; allow publish 127.0.0.1;", "play", "8.8.8.8", True),
    (ON % "allow play all; allow publish 127.0.0.1;", "publish", "127.0.0.1", True),
    (ON % "allow play all; allow publish 127.0.0.1;", "publish", "8.8.8.8", False),
    (ON % "deny publish 1.2.3.4; allow play all;", "publish", "5.6.7.8", False),
    # a matching deny wins over a matching allow, wherever each stands
    (ON % "allow publish all; deny publish 1.2.3.4;", "publish", "1.2.3.4", False),
    (ON % "allow publish all; deny publish 1.2.3.4;", "publish", "1.2.3.5", True),
    (ON % "deny publish 1.2.3.4; allow publish all;", "publish", "1.2.3.4", False),
    (ON % "deny publish all; allow publish 127.0.0.1;", "publish", "127.0.0.1", False),
    (ON % "deny play all; allow publish all;", "publish", "1.2.3.4", True),
    (ON % "deny play all; allow publish all;", "play", "1.2.3.4", False),
    # IPv4 CIDR (host bits in the rule are ignored, as SRS's mask test does)
    (ON % "allow publish 192.168.1.0/24;", "publish", "192.168.1.77", True),
    (ON % "allow publish 192.168.1.0/24;", "publish", "192.168.2.1", False),
    (ON % "allow publish 192.168.1.5/24;", "publish", "192.168.1.200", True),
    (ON % "allow publish 10.1.2.3/32;", "publish", "10.1.2.3", True),
    (ON % "allow publish 10.1.2.3/32;", "publish", "10.1.2.4", False),
    (ON % "allow publish 0.0.0.0/0;", "publish", "203.0.113.9", True),
    (ON % "deny play 10.0.0.0/8; allow play all;", "play", "10.200.0.1", False),
    (ON % "deny play 10.0.0.0/8; allow play all;", "play", "11.0.0.1", True),
    # IPv6 addresses and CIDRs (livesrv; SRS matches IPv6 by exact text only)
    (ON % "allow publish 2001:db8::/32;", "publish", "2001:db8:1::5", True),
    (ON % "allow publish 2001:db8::/32;", "publish", "2001:db9::1", False),
    (ON % "allow publish ::1;", "publish", "::1", True),
    (ON % "allow publish ::1;", "publish", "0:0:0:0:0:0:0:1", True),
    (ON % "allow publish ::1;", "publish", "127.0.0.1", False),
    (ON % "deny play fe80::/10; allow play all;", "play", "fe80::1%eth0", False),
    (ON % "deny play fe80::/10; allow play all;", "play", "2001:db8::1", True),
    (ON % "allow publish 0.0.0.0/0;", "publish", "::1", False),
    # IPv4 rules match IPv4-mapped IPv6 clients (dual-stack sockets)
    (ON % "allow publish 127.0.0.0/8;", "publish", "::ffff:127.0.0.1", True),
    (ON % "deny publish 1.2.3.4; allow publish all;", "publish", "::ffff:1.2.3.4", False),
    # all matches even an address that cannot be parsed; nothing else does
    (ON % "allow play all;", "play", "?", True),
    (ON % "allow play 1.2.3.4;", "play", "?", False),
    (ON % "deny play all;", "play", "?", False),
]


@pytest.mark.parametrize(("block", "method", "ip", "allowed"), CASES)
def test_rule_table(block: str, method: str, ip: str, allowed: bool) -> None:
    sec = security(block)
    why = check(sec, method, ip)
    assert (why is None) is allowed, why
    assert allows(sec, method, ip) is allowed
    if why is not None:
        assert why.startswith(f"security: {method} from {ip} ")


def test_reasons() -> None:
    sec = security(ON % "allow publish all; deny publish 10.0.0.0/8; allow play 127.0.0.1;")
    assert check(sec, "publish", "10.1.1.1") == (
        "security: publish from 10.1.1.1 denied by rule 'deny publish 10.0.0.0/8'"
    )
    assert check(sec, "play", "10.1.1.1") == (
        "security: play from 10.1.1.1 not allowed by any of 2 allow/1 deny rules"
    )
    assert check(security(ON % ""), "play", "1.1.1.1") == (
        "security: play from 1.1.1.1 not allowed by any of 0 allow/0 deny rules"
    )


def test_unknown_method_is_a_bug() -> None:
    with pytest.raises(ValueError):
        check(security(ON % ""), "publsh", "1.2.3.4")


_TARGETS = st.sampled_from(["all", "1.2.3.4", "1.2.3.0/24", "10.0.0.0/8", "::1", "2001:db8::/32"])
_RULES = st.lists(
    st.builds(SecurityRule, action=st.sampled_from(["allow", "deny"]),
              method=st.sampled_from(["publish", "play"]), target=_TARGETS),
    max_size=6,
)
_IPS = st.sampled_from(["1.2.3.4", "1.2.3.9", "10.9.8.7", "::1", "2001:db8::7", "::ffff:1.2.3.4", "8.8.8.8"])


@given(_RULES, st.sampled_from(["publish", "play"]), _IPS, st.randoms(use_true_random=False))
def test_rule_order_does_not_matter(rules: list[SecurityRule], method: str, ip: str, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(rules)
    rnd.shuffle(shuffled)
    a = SecurityConfig(enabled=True, rules=tuple(rules))
    b = SecurityConfig(enabled=True, rules=tuple(shuffled))
    assert (check(a, method, ip) is None) == (check(b, method, ip) is None)


@given(_RULES, st.sampled_from(["publish", "play"]), _IPS)
def test_deny_all_always_wins(rules: list[SecurityRule], method: str, ip: str) -> None:
    sec = SecurityConfig(enabled=True, rules=(*rules, SecurityRule(action="deny", method=method, target="all")))
    assert check(sec, method, ip) is not None
