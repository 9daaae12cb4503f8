"""What the server counts, for the HTTP API and Prometheus: totals of closed connections by protocol.

Totals that must outlive a connection (bytes, connections, errors) are added once, when the connection closes
(:func:`connection_closed`, called from each protocol's close path); the share of clients still there is read
from the hub's registry at the moment someone asks (:func:`traffic`). Nothing here runs per packet.

The closed totals are process-wide (one server per process in production; tests may run several apps, which
then share them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from livesrv.hub.clients import Client


@dataclass(slots=True)
class Totals:
    """Counters of one protocol ("rtmp", "flv", "ws-flv", ...)."""

    connections: int = 0
    errors: int = 0
    recv_bytes: int = 0
    send_bytes: int = 0


CLOSED: dict[str, Totals] = {}
"""Totals of the connections that have closed, by protocol."""


def connection_closed(protocol: str, recv_bytes: int, send_bytes: int, error: bool = False) -> None:
    """Called exactly once per connection, when it closes."""
    t = CLOSED.get(protocol)
    if t is None:
        t = CLOSED[protocol] = Totals()
    t.connections += 1
    t.recv_bytes += recv_bytes
    t.send_bytes += send_bytes
    if error:
        t.errors += 1


def traffic(clients: Iterable[Client]) -> dict[str, Totals]:
    """Totals by protocol over every connection so far: the closed ones plus the clients registered now.

    A client moves from "registered" to "closed" in one synchronous step (its close path unregisters it and
    calls :func:`connection_closed`), so these sums only grow. A connection that is not a client yet (an RTMP
    connection before publish or play) counts once it closes. Consumers that need strictly monotonic counters
    clamp (see ``servers/metrics.py``).
    """
    out = {name: Totals(t.connections, t.errors, t.recv_bytes, t.send_bytes) for name, t in CLOSED.items()}
    for c in clients:
        t = out.get(c.protocol)
        if t is None:
            t = out[c.protocol] = Totals()
        t.connections += 1
        t.recv_bytes += c.recv_bytes
        t.send_bytes += c.send_bytes
    return out
