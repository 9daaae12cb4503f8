"""The API of a whole host under ``workers N``: the worker a request lands on answers with its own figures and
its peers' (each worker's internal API listener, on loopback, advertised in its registry record).

Why merge here and not in the master: the master serves nothing (it only starts, watches and signals the
workers), and the public API port is shared by the workers, so whichever worker the kernel picks must be able
to answer for the host. A peer's answer is asked for with :data:`PEER_TIMEOUT`; a peer that does not answer in
time (restarting, overloaded) is named in ``workers_unreachable`` and the answer goes on without it.

Merged, in SRS's shapes (livesrv adds fields, never changes SRS's):

* ``/api/v1/streams``: one entry per stream of the host (by vhost and URL), the owner's (its publisher is
  there), with ``clients`` and ``viewers`` summed over the workers and ``workers`` saying who has what. A
  worker's pull of a stream counts as a viewer on the owner and as a client on the worker that pulls (they are
  connections).
* ``/api/v1/clients``: every worker's clients, each with its ``worker``.
* ``/api/v1/summaries``: this worker's figures, with the process figures (``self.mem_kbyte``,
  ``self.cpu_percent``) and the server's (``system.conn_srs``, ``srs_send_bytes``, ``srs_recv_bytes``) summed
  over the workers, and ``workers``: each worker's pid and figures.
* ``/api/v1/streams/ID`` and ``/api/v1/clients/ID`` (GET, and DELETE to end or kick): answered by the worker
  that has that id (ids are per worker), asked in turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp

from livesrv.log import event

log = logging.getLogger("livesrv.api")

#: Seconds a peer worker has to answer one request of the host's view.
PEER_TIMEOUT: Final = 2.0
#: The lists and figures answered for the whole host.
HOST_PATHS: Final = frozenset({"/api/v1/streams", "/api/v1/clients", "/api/v1/summaries"})
#: Query parameters a peer is not sent (this worker pages and wraps the merged answer itself).
OWN_QUERY: Final = frozenset({"start", "count", "callback", "method"})

#: (node id, ``host:port`` of its internal API) of every other worker.
Peers = Callable[[], Awaitable[list[tuple[str, str]]]]


class PeerAnswer:
    """One peer's answer: its node id, HTTP status and JSON body (None: it did not answer, see ``error``)."""

    __slots__ = ("node", "status", "body", "error")

    def __init__(self, node: str, status: int = 0, body: dict[str, Any] | None = None, error: str = "") -> None:
        self.node = node
        self.status = status
        self.body = body
        self.error = error


class HostView:
    """Asks the peer workers and merges (see the module doc)."""

    def __init__(self, peers: Peers, timeout: float = PEER_TIMEOUT) -> None:
        self.peers = peers
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ask_all(self, method: str, path: str, query: dict[str, str],
                      headers: dict[str, str]) -> list[PeerAnswer]:
        """``method path`` on every peer at once, each bounded by the timeout."""
        try:
            peers = await asyncio.wait_for(self.peers(), self.timeout)
        except Exception as exc:  # (the registry away or slow, whatever its client raises): this worker alone
            event(log, "api-peers-unknown", logging.WARNING, reason=repr(exc))
            return []
        return list(await asyncio.gather(*(self._ask(node, addr, method, path, query, headers)
                                           for node, addr in peers)))

    async def ask_each(self, method: str, path: str, query: dict[str, str],
                       headers: dict[str, str]) -> PeerAnswer | None:
        """``method path`` on the peers, in turn, until one answers other than 404 (an id lives on one worker)."""
        try:
            peers = await asyncio.wait_for(self.peers(), self.timeout)
        except Exception as exc:  # (as above)
            event(log, "api-peers-unknown", logging.WARNING, reason=repr(exc))
            return None
        for node, addr in peers:
            answer = await self._ask(node, addr, method, path, query, headers)
            if answer.body is not None and answer.status != 404:
                return answer
        return None

    async def _ask(self, node: str, addr: str, method: str, path: str, query: dict[str, str],
                   headers: dict[str, str]) -> PeerAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        url = f"http://{addr}{path}" + (f"?{urlencode(query)}" if query else "")
        try:
            async with self._session.request(method, url, headers=headers) as resp:
                text = await resp.text()
                body = json.loads(text)
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
                return PeerAnswer(node, resp.status, body)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            event(log, "api-peer-unreachable", logging.WARNING, node=node, path=path, reason=repr(exc))
            return PeerAnswer(node, error=repr(exc) or type(exc).__name__)


# ------------------------------------------------------------------------------------------- merging


def _vhost_ids(body: dict[str, Any]) -> dict[str, str]:
    """A worker's vhost ids by name (ids are per process: a peer's are mapped to this worker's)."""
    names = body.get("vhost_names")
    return dict(names) if isinstance(names, dict) else {}


def remap_vhost(entry: dict[str, Any], peer_names: dict[str, str], local_ids: dict[str, str]) -> dict[str, Any]:
    """``entry`` (a peer's stream or client) with its vhost id turned into this worker's id of that vhost."""
    name = peer_names.get(entry.get("vhost", ""))
    if name is not None and name in local_ids:
        return {**entry, "vhost": local_ids[name]}
    return entry


def merge_streams(local: list[dict[str, Any]], peers: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per stream of the host (module doc); entries carry ``worker`` and ``pulled`` already."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in [*local, *(e for entries in peers for e in entries)]:
        groups.setdefault((entry.get("vhost", ""), entry.get("url", "")), []).append(entry)
    out = []
    for entries in groups.values():
        owner = next((e for e in entries if e.get("publish", {}).get("active") and not e.get("pulled")), None)
        primary = dict(owner or next((e for e in entries if e.get("publish", {}).get("active")), entries[0]))
        primary["clients"] = sum(int(e.get("clients", 0)) for e in entries)
        primary["viewers"] = sum(int(e.get("viewers", 0)) for e in entries)
        primary["workers"] = [{"worker": e.get("worker", ""), "id": e.get("id", ""), "clients": e.get("clients", 0),
                               "viewers": e.get("viewers", 0), "pulled": bool(e.get("pulled"))} for e in entries]
        out.append(primary)
    return out


#: Summary figures that add up over the workers.
_SUMMED_SELF: Final = ("mem_kbyte", "mem_percent", "cpu_percent")
_SUMMED_SYSTEM: Final = ("srs_recv_bytes", "srs_send_bytes", "conn_srs")


def merge_summaries(local: dict[str, Any], node: str, peers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """This worker's summary with the process and server figures summed over the workers (module doc)."""
    out = {**local, "self": dict(local.get("self", {})), "system": dict(local.get("system", {}))}
    everyone = [(node, local), *peers]
    for name in _SUMMED_SELF:
        out["self"][name] = sum(d.get("self", {}).get(name, 0) for _, d in everyone)
    for name in _SUMMED_SYSTEM:
        out["system"][name] = sum(d.get("system", {}).get(name, 0) for _, d in everyone)
    out["workers"] = [{"worker": n, "pid": d.get("self", {}).get("pid"),
                       **{k: d.get("self", {}).get(k) for k in _SUMMED_SELF},
                       "conn_srs": d.get("system", {}).get("conn_srs")} for n, d in everyone]
    return out
