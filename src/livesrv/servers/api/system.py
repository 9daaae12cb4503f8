"""The figures of ``/api/v1/summaries``: this process and the machine, read on request (cheap /proc reads)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from livesrv import __version__, stats
from livesrv.hub.hub import Hub
from livesrv.servers.api.sampling import Sampler


class SystemFigures:
    """SRS's ``summaries`` object. ``connections`` counts this server's open connections (every listener)."""

    def __init__(self, hub: Hub, sampler: Sampler, connections: Callable[[], int]) -> None:
        self.hub = hub
        self.sampler = sampler
        self.connections = connections
        self._io_prev: tuple[float, Any] | None = None
        self._io_sample()

    def summaries(self) -> dict[str, Any]:
        """Process, machine and traffic figures, as SRS reports them."""
        now = time.time()
        sampler = self.sampler
        proc = sampler.process
        with proc.oneshot():
            mem = proc.memory_info()
            ppid = proc.ppid()
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        try:
            cpus_online = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus_online = psutil.cpu_count() or 1
        io = self._io_sample()
        totals = stats.traffic(tuple(self.hub.clients.values()))
        tcp, tcp_tw, udp = _sockstat()
        conn_srs = self.connections()
        return {
            "ok": True,
            "now_ms": int(now * 1000),
            "self": {
                "version": __version__,
                "pid": os.getpid(),
                "ppid": ppid,
                "argv": " ".join(sys.argv),
                "cwd": os.getcwd(),
                "mem_kbyte": mem.rss // 1024,
                "mem_percent": mem.rss / vm.total if vm.total else 0.0,  # SRS: a fraction, 0.153 is 15.3%
                "cpu_percent": sampler.cpu_percent / 100,
                "srs_uptime": int(now - sampler.started),
            },
            "system": {
                "cpu_percent": sampler.sys_cpu_percent / 100,
                "disk_read_KBps": io["disk_read_KBps"],
                "disk_write_KBps": io["disk_write_KBps"],
                "disk_busy_percent": io["disk_busy_percent"],
                "mem_ram_kbyte": vm.total // 1024,
                "mem_ram_percent": vm.percent / 100,
                "mem_swap_kbyte": swap.total // 1024,
                "mem_swap_percent": swap.percent / 100,
                "cpus": psutil.cpu_count() or 1,
                "cpus_online": cpus_online,
                "uptime": round(now - psutil.boot_time(), 1),
                "ilde_time": 0,  # sic: SRS's spelling; not measured
                "load_1m": load[0],
                "load_5m": load[1],
                "load_15m": load[2],
                "net_sample_time": int(now * 1000),
                "net_recv_bytes": io["net_recv_bytes"],
                "net_send_bytes": io["net_send_bytes"],
                "net_recvi_bytes": io["net_recvi_bytes"],
                "net_sendi_bytes": io["net_sendi_bytes"],
                "srs_sample_time": int(now * 1000),
                "srs_recv_bytes": sum(t.recv_bytes for t in totals.values()),
                "srs_send_bytes": sum(t.send_bytes for t in totals.values()),
                "conn_sys": tcp,
                "conn_sys_et": tcp,
                "conn_sys_tw": tcp_tw,
                "conn_sys_udp": udp,
                "conn_srs": conn_srs,
            },
        }

    def _io_sample(self) -> dict[str, Any]:
        """Network totals, and disk rates since the previous call (cheap /proc reads, on request only)."""
        now = time.monotonic()
        try:
            disk = psutil.disk_io_counters()
        except (OSError, RuntimeError):
            disk = None
        try:
            nics = psutil.net_io_counters(pernic=True)
        except (OSError, RuntimeError):
            nics = {}
        out: dict[str, Any] = {"disk_read_KBps": 0, "disk_write_KBps": 0, "disk_busy_percent": 0.0,
                               "net_recv_bytes": 0, "net_send_bytes": 0, "net_recvi_bytes": 0, "net_sendi_bytes": 0}
        for name, c in nics.items():
            if name == "lo":
                out["net_recvi_bytes"] += c.bytes_recv
                out["net_sendi_bytes"] += c.bytes_sent
            else:
                out["net_recv_bytes"] += c.bytes_recv
                out["net_send_bytes"] += c.bytes_sent
        prev = self._io_prev
        if prev is not None and disk is not None and prev[1] is not None and now > prev[0]:
            dt = now - prev[0]
            out["disk_read_KBps"] = int((disk.read_bytes - prev[1].read_bytes) / 1024 / dt)
            out["disk_write_KBps"] = int((disk.write_bytes - prev[1].write_bytes) / 1024 / dt)
            busy = getattr(disk, "busy_time", None)
            if busy is not None:
                out["disk_busy_percent"] = min(1.0, (busy - prev[1].busy_time) / 1000 / dt)
        self._io_prev = (now, disk)
        return out

def _sockstat() -> tuple[int, int, int]:
    """TCP sockets in use and in TIME_WAIT, UDP sockets in use (Linux /proc/net/sockstat; zeros elsewhere)."""
    tcp = tw = udp = 0
    try:
        with open("/proc/net/sockstat", encoding="ascii") as f:
            for line in f:
                words = line.split()
                if not words:
                    continue
                fields = dict(zip(words[1::2], words[2::2]))
                if words[0] == "TCP:":
                    tcp = int(fields.get("inuse", 0))
                    tw = int(fields.get("tw", 0))
                elif words[0] == "UDP:":
                    udp = int(fields.get("inuse", 0))
    except (OSError, ValueError):
        pass
    return tcp, tw, udp

