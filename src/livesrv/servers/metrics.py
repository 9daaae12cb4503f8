"""Prometheus ``/metrics``: SRS's metric names plus livesrv's per-stream and per-protocol series.

A custom collector reads the live state (hub, connections, closed-connection totals) when Prometheus scrapes,
so nothing is updated per packet on the hot path. Served on the API port and, with ``exporter { enabled on;
listen 9972; }``, on the exporter's own port (SRS's layout).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from livesrv import __version__, stats
from livesrv.config import Config
from livesrv.hub.clients import PUBLISHER, VIEWER
from livesrv.hub.hub import Hub
from livesrv.servers.http import HTTPConnection, Request, Response

from livesrv.servers.api.sampling import Sampler, stream_send_bytes


class LivesrvCollector(Collector):
    """Reads everything at scrape time. Counters are clamped so that they never go back (a protocol whose
    close path does not report to :mod:`livesrv.stats` would otherwise lose its share when it closes)."""

    def __init__(self, hub: Hub, config: Callable[[], Config], sampler: Sampler, server_id: Callable[[], str],
                 service_id: str) -> None:
        self.hub = hub
        self._config = config
        self.sampler = sampler
        self.server_id = server_id
        self.service_id = service_id
        self._high: dict[tuple[str, ...], float] = {}

    def _mono(self, key: tuple[str, ...], value: float) -> float:
        high = self._high.get(key, 0.0)
        if value < high:
            return high
        self._high[key] = value
        return value

    def collect(self) -> Iterator[Metric]:
        sampler = self.sampler
        cfg = self._config()

        labels = ["server", "service", "pid", "version", "major", "code"]
        values = [self.server_id(), self.service_id, str(os.getpid()), __version__,
                  __version__.split(".")[0], "livesrv"]
        if cfg.exporter.label:
            labels.append("label")
            values.append(cfg.exporter.label)
        if cfg.exporter.tag:
            labels.append("tag")
            values.append(cfg.exporter.tag)
        info = GaugeMetricFamily("srs_build_info", "A metric with a constant '1' value labeled by version.", labels=labels)
        info.add_metric(values, 1)
        yield info
        uname = platform.uname()
        node = GaugeMetricFamily("srs_node_uname_info", "Labeled system information as provided by uname.",
                                 labels=["sysname", "nodename", "release", "version", "machine"])
        node.add_metric([uname.system, uname.node, uname.release, uname.version, uname.machine], 1)
        yield node
        yield GaugeMetricFamily("srs_cpu_percent", "Process CPU use, percent of one core.", value=sampler.cpu_percent)
        yield GaugeMetricFamily("srs_memory", "Process resident memory, kilobytes.", value=sampler.rss_kbyte())

        clients = tuple(self.hub.clients.values())  # every kind and protocol, HLS sessions included
        totals = stats.traffic(clients)
        streams = list(self.hub.streams.values())
        by_key: dict[object, list[int]] = {}  # stream key -> [clients, viewers]
        for c in clients:
            n = by_key.setdefault(c.context.key, [0, 0])
            n[0] += 1
            n[1] += c.kind == VIEWER
        recv = sum(t.recv_bytes for t in totals.values())
        send = sum(t.send_bytes for t in totals.values())
        yield _counter("srs_send_bytes_total", "Bytes sent by the server.", self._mono(("send",), send))
        yield _counter("srs_receive_bytes_total", "Bytes received by the server.", self._mono(("recv",), recv))
        yield GaugeMetricFamily("srs_streams", "Streams with a publisher.",
                                value=sum(1 for s in streams if s.publisher is not None))
        yield GaugeMetricFamily("srs_clients", "Publishers and viewers connected.", value=len(clients))
        yield _counter("srs_clients_total", "Connections accepted so far.",
                       self._mono(("conns",), sum(t.connections for t in totals.values())))
        yield _counter("srs_clients_errs_total", "Connections that ended on an error.",
                       self._mono(("errs",), sum(t.errors for t in totals.values())))

        by_role = GaugeMetricFamily("livesrv_clients", "Clients connected, by protocol and role.",
                                    labels=["protocol", "role"])
        counts: dict[tuple[str, str], int] = {("rtmp", "publish"): 0, ("rtmp", "play"): 0, ("flv", "play"): 0,
                                              ("hls", "play"): 0}
        for c in clients:
            k = (c.protocol, "publish" if c.kind == PUBLISHER else "play" if c.kind == VIEWER else c.kind)
            counts[k] = counts.get(k, 0) + 1
        for (protocol, role), n in sorted(counts.items()):
            by_role.add_metric([protocol, role], n)
        yield by_role
        conns = CounterMetricFamily("livesrv_connections_total", "Connections so far, by protocol.", labels=["protocol"])
        errs = CounterMetricFamily("livesrv_connection_errors_total", "Connections that ended on an error, by protocol.",
                                   labels=["protocol"])
        psend = CounterMetricFamily("livesrv_send_bytes_total", "Bytes sent, by protocol.", labels=["protocol"])
        precv = CounterMetricFamily("livesrv_receive_bytes_total", "Bytes received, by protocol.", labels=["protocol"])
        for protocol, t in sorted(totals.items()):
            conns.add_metric([protocol], self._mono(("conns", protocol), t.connections))
            errs.add_metric([protocol], self._mono(("errs", protocol), t.errors))
            psend.add_metric([protocol], self._mono(("send", protocol), t.send_bytes))
            precv.add_metric([protocol], self._mono(("recv", protocol), t.recv_bytes))
        yield from (conns, errs, psend, precv)

        s_clients = GaugeMetricFamily("livesrv_stream_clients", "Publisher and viewers of a stream.", labels=["stream"])
        s_viewers = GaugeMetricFamily("livesrv_stream_viewers", "Viewers of a stream.", labels=["stream"])
        s_live = GaugeMetricFamily("livesrv_stream_live", "1 while a publisher's media flows.", labels=["stream"])
        s_recv = CounterMetricFamily("livesrv_stream_receive_bytes_total", "Media bytes received by a stream.",
                                     labels=["stream"])
        s_send = CounterMetricFamily("livesrv_stream_send_bytes_total",
                                     "Bytes sent to a stream's viewers (sampled every second).", labels=["stream"])
        s_frames = CounterMetricFamily("livesrv_stream_frames_total", "Frames received by a stream.",
                                       labels=["stream", "kind"])
        for s in streams:
            name = str(s.key)
            n_clients, n_viewers = by_key.get(s.key, (0, 0))
            s_clients.add_metric([name], n_clients)
            s_viewers.add_metric([name], n_viewers)
            s_live.add_metric([name], 1 if s.live else 0)
            s_recv.add_metric([name], s.stats.recv_bytes)
            s_send.add_metric([name], stream_send_bytes(s))
            s_frames.add_metric([name, "video"], s.stats.video_frames)
            s_frames.add_metric([name, "audio"], s.stats.audio_frames)
        yield from (s_clients, s_viewers, s_live, s_recv, s_send, s_frames)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc)
    c.add_metric([], value)
    return c


class Metrics:
    """The registry of one server: livesrv's collector and the standard process metrics."""

    def __init__(self, hub: Hub, config: Callable[[], Config], sampler: Sampler, server_id: Callable[[], str],
                 service_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LivesrvCollector(hub, config, sampler, server_id, service_id))
        ProcessCollector(registry=self.registry)

    def render(self) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    async def handle_exporter(self, req: Request, conn: HTTPConnection) -> Response:
        """The exporter's own port: ``/metrics`` and nothing else."""
        path = req.path.rstrip("/")
        if path == "/metrics":
            if req.method not in ("GET", "HEAD"):
                return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
            return self.render()
        if path == "":
            return Response(200, b'<html><body><a href="/metrics">metrics</a></body></html>\n', "text/html")
        return Response(404, b"not found\n")
