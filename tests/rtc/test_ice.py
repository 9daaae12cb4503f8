"""What rtc_server { candidate; } makes aioice offer, and what the answer announces."""

from __future__ import annotations

import aioice.ice
import pytest

from livesrv.servers.rtc import ice


def test_plans() -> None:
    assert ice.plan("127.0.0.1") == ice.IcePlan(("127.0.0.1",), None)
    assert ice.plan("127.0.0.1").loopback_only
    assert ice.plan("::1").loopback_only
    assert ice.plan("*") == ice.IcePlan(None, None) and not ice.plan("*").loopback_only
    assert ice.plan("203.0.113.7") == ice.IcePlan(None, "203.0.113.7")  # not ours: announced (1:1 NAT)
    assert ice.plan("rtc.example.com") == ice.IcePlan(None, "rtc.example.com")
    assert ice.plan("*", eip="198.51.100.1:8000") == ice.IcePlan(None, "198.51.100.1")


def test_candidate_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDIDATE", "127.0.0.1")
    assert ice.plan("$CANDIDATE").bind == ("127.0.0.1",)
    monkeypatch.delenv("CANDIDATE")
    assert ice.plan("$CANDIDATE") == ice.IcePlan(None, None)


def test_install_makes_aioice_offer_only_the_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice, "_bind", ice._bind)
    monkeypatch.setattr(ice, "_family", ice._family)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    ice.install(ice.plan("127.0.0.1"))
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    ice.install(ice.plan("*"), "ipv4")
    assert all(":" not in a for a in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))


ANSWER = ("v=0\r\nc=IN IP4 10.0.0.5\r\na=candidate:1 1 udp 2130706431 10.0.0.5 50123 typ host\r\n"
          "a=candidate:2 1 udp 2130706431 10.0.0.6 50124 typ host\r\n")


def test_announce_rewrites_host_candidates() -> None:
    out = ice.announce(ANSWER, "203.0.113.7")
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 50123 typ host" in out
    assert "c=IN IP4 203.0.113.7" in out and "10.0.0." not in out
    assert ice.announce(ANSWER, None) == ANSWER


def test_loopback_offer_keeps_only_loopback_candidates() -> None:
    offer = ("v=0\na=candidate:1 1 udp 1 192.0.2.2 5000 typ host\na=candidate:2 1 udp 1 127.0.0.1 5001 typ host\n"
             "a=candidate:3 1 udp 1 abc.local 5002 typ host\na=candidate:4 1 udp 1 ::1 5003 typ host\n")
    assert ice.loopback_offer(offer).splitlines() == [
        "v=0", "a=candidate:2 1 udp 1 127.0.0.1 5001 typ host", "a=candidate:4 1 udp 1 ::1 5003 typ host"]
