"""Rates and totals the API and the metrics report, from one sampler that reads byte counters once a second.

Nothing here runs per packet: the sampler reads the hub's client registry and streams, and keeps 30 s of
samples per client, stream and vhost (SRS's ``kbps.recv_30s`` / ``send_30s``). Stream and vhost ids are
SRS-style ``vid-xxxxxxx`` strings, stable for the life of the stream (kept in ``stream.extra["id"]``) or the
process (vhosts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import psutil

from livesrv.hub.hub import Hub
from livesrv.hub.stream import Stream
from livesrv.servers.api.ids import new_vid

log = logging.getLogger("livesrv.api")

KBPS_WINDOW = 30.0  # seconds, SRS's ``*_30s``
SAMPLE_INTERVAL = 1.0


class Meter:
    """(time, recv bytes, send bytes) samples over the last 30 s; the rate is the slope across them."""

    __slots__ = ("samples",)

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=max(2, round(KBPS_WINDOW / interval) + 1))

    def add(self, t: float, recv: int, send: int) -> None:
        self.samples.append((t, recv, send))

    def kbps(self) -> dict[str, int]:
        if len(self.samples) < 2:
            return {"recv_30s": 0, "send_30s": 0}
        t0, r0, s0 = self.samples[0]
        t1, r1, s1 = self.samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return {"recv_30s": 0, "send_30s": 0}
        return {"recv_30s": round((r1 - r0) * 8 / 1000 / dt), "send_30s": round((s1 - s0) * 8 / 1000 / dt)}


NO_RATE = {"recv_30s": 0, "send_30s": 0}


class StreamAccount:
    """Per-stream state of the sampler (in ``stream.extra["api"]``): bytes sent to viewers, including viewers
    that have left (counted at the last sample that saw them), and the stream's meter."""

    __slots__ = ("meter", "departed", "last_seen", "send_total")

    def __init__(self, interval: float) -> None:
        self.meter = Meter(interval)
        self.departed = 0
        self.last_seen: dict[str, int] = {}
        self.send_total = 0

    def sample(self, stream: Stream, now: float) -> None:
        seen = {cid: v.send_bytes for cid, v in stream.viewers.items()}
        for cid, sent in self.last_seen.items():
            if cid not in seen:
                self.departed += sent
        self.last_seen = seen
        self.send_total = self.departed + sum(seen.values())
        self.meter.add(now, stream.stats.recv_bytes, self.send_total)


class VhostAccount:
    """Bytes of a vhost's streams, including streams that are gone (their last sampled totals)."""

    __slots__ = ("id", "meter", "retired_recv", "retired_send", "current")

    def __init__(self, interval: float) -> None:
        self.id = new_vid()
        self.meter = Meter(interval)
        self.retired_recv = 0
        self.retired_send = 0
        self.current: dict[str, tuple[int, int]] = {}  # stream id -> (recv, send) at the last sample


class Sampler:
    """Reads every byte counter once per interval: clients (the hub's registry), streams, vhosts, CPU."""

    def __init__(self, hub: Hub, interval: float = SAMPLE_INTERVAL) -> None:
        self.hub = hub
        self.interval = interval
        self.started = time.time()
        self.vhosts: dict[str, VhostAccount] = {}
        self.clients: dict[str, Meter] = {}
        self.cpu_percent = 0.0  # this process, percent of one core, over the last sample interval
        self.sys_cpu_percent = 0.0
        self.process = psutil.Process()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process.cpu_percent(None)  # the first call only sets the reference point
        psutil.cpu_percent(None)
        self._task = asyncio.create_task(self._run(), name="api-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample(time.monotonic())
            except Exception:  # a bug here must not stop the rates of every other stream
                log.exception("event=api-sample-error")

    def sample(self, now: float) -> None:
        self.cpu_percent = self.process.cpu_percent(None)
        self.sys_cpu_percent = psutil.cpu_percent(None)
        clients = self.clients
        seen: set[str] = set()
        for c in tuple(self.hub.clients.values()):
            meter = clients.get(c.cid)
            if meter is None:
                meter = clients[c.cid] = Meter(self.interval)
            meter.add(now, c.recv_bytes, c.send_bytes)
            seen.add(c.cid)
        for cid in [cid for cid in clients if cid not in seen]:
            del clients[cid]
        current: dict[str, dict[str, tuple[int, int]]] = {}
        for stream in tuple(self.hub.streams.values()):
            acct = self.account(stream)
            acct.sample(stream, now)
            current.setdefault(stream.key.vhost, {})[stream_id(stream)] = (stream.stats.recv_bytes, acct.send_total)
        for name in set(self.vhosts) | set(current):
            vh = self.vhost_account(name)
            now_streams = current.get(name, {})
            for sid, (recv, send) in vh.current.items():
                if sid not in now_streams:
                    vh.retired_recv += recv
                    vh.retired_send += send
            vh.current = now_streams
            vh.meter.add(now, vh.retired_recv + sum(r for r, _ in now_streams.values()),
                         vh.retired_send + sum(s for _, s in now_streams.values()))

    def account(self, stream: Stream) -> StreamAccount:
        acct = stream.extra.get("api")
        if acct is None:
            acct = stream.extra["api"] = StreamAccount(self.interval)
        return acct

    def vhost_account(self, name: str) -> VhostAccount:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VhostAccount(self.interval)
        return vh

    def client_kbps(self, cid: str) -> dict[str, int]:
        meter = self.clients.get(cid)
        return meter.kbps() if meter is not None else dict(NO_RATE)

    def rss_kbyte(self) -> int:
        return self.process.memory_info().rss // 1024


def stream_id(stream: Stream) -> str:
    """The stream's SRS-style id, minted once per Stream object."""
    sid = stream.extra.get("id")
    if sid is None:
        sid = stream.extra["id"] = new_vid()
    return sid


def stream_send_bytes(stream: Stream) -> int:
    """Bytes sent to the stream's viewers, including those that left (as of the last sample)."""
    acct = stream.extra.get("api")
    if acct is None:
        return sum(v.send_bytes for v in stream.viewers.values())
    return acct.send_total
