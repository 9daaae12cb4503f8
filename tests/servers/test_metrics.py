"""Prometheus ``/metrics``: parsed with prometheus-client's own text parser, with real ffmpeg traffic, on the API
port and on the exporter's port; counters move with traffic and never go back when connections close."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livesrv import stats
from livesrv.servers.metrics import LivesrvCollector
from tests.helpers import FlvViewer, Procs, ffmpeg_publish_args, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 200
            text = await r.text()
            ctype = r.headers["Content-Type"]
    out: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            types[sample.name] = fam.type
    assert ctype.startswith("text/plain")
    return out, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


SRS_NAMES = {
    "srs_build_info": "gauge", "srs_cpu_percent": "gauge", "srs_memory": "gauge",
    "srs_send_bytes_total": "counter", "srs_receive_bytes_total": "counter", "srs_streams": "gauge",
    "srs_clients": "gauge", "srs_clients_total": "counter", "srs_clients_errs_total": "counter",
}


@pytest.mark.e2e
async def test_metrics_follow_the_traffic(make_server, procs: Procs, sample_flv) -> None:  # type: ignore[no-untyped-def]
    app = await make_server(extra="exporter { enabled on; listen 127.0.0.1:0; }")
    api = f"http://127.0.0.1:{app.port('api')}/metrics"
    exporter = f"http://127.0.0.1:{app.port('exporter')}/metrics"
    idle, types = await scrape(api)
    for name, kind in SRS_NAMES.items():
        assert types[name] == kind, name
    assert value(idle, "srs_streams") == 0 and value(idle, "srs_clients") == 0
    assert value(idle, "srs_memory") > 10_000  # kilobytes of a Python process
    assert ("process_resident_memory_bytes", ()) in idle  # the standard process collector

    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    viewers = [FlvViewer(f"http://127.0.0.1:{app.port('http')}/live/test.flv").start() for _ in range(2)]
    await wait_until(lambda: all(v.keyframes_after(0) for v in viewers), 20, "the viewers to get media")
    first, _ = await scrape(api)
    assert value(first, "srs_streams") == 1 and value(first, "srs_clients") == 3
    assert value(first, "livesrv_stream_clients", stream="/live/test") == 3
    assert value(first, "livesrv_stream_viewers", stream="/live/test") == 2
    assert value(first, "livesrv_stream_live", stream="/live/test") == 1
    assert value(first, "livesrv_clients", protocol="rtmp", role="publish") == 1
    assert value(first, "livesrv_clients", protocol="flv", role="play") == 2
    assert value(first, "livesrv_stream_frames_total", stream="/live/test", kind="video") > 0

    received = app.hub.streams[next(iter(app.hub.streams))].stats.recv_bytes
    await wait_until(lambda: app.hub.streams[next(iter(app.hub.streams))].stats.recv_bytes > received + 50_000, 20,
                     "more media")
    second, _ = await scrape(exporter)  # the exporter's port serves the same registry
    for name in ("srs_receive_bytes_total", "srs_send_bytes_total"):
        assert value(second, name) > value(first, name) + 10_000, name
    assert value(second, "livesrv_stream_receive_bytes_total", stream="/live/test") > \
        value(first, "livesrv_stream_receive_bytes_total", stream="/live/test")
    assert value(second, "livesrv_receive_bytes_total", protocol="rtmp") > value(first, "livesrv_receive_bytes_total",
                                                                                  protocol="rtmp")

    # A viewer leaves: the gauges go down, the counters keep what it did.
    before_close, _ = await scrape(api)
    await viewers[0].close()
    await wait_until(lambda: sum(len(s.viewers) for s in app.hub.streams.values()) == 1, 10, "the viewer to leave")
    after, _ = await scrape(api)
    assert value(after, "srs_clients") == 2
    assert value(after, "livesrv_clients", protocol="flv", role="play") == 1
    for name in ("srs_send_bytes_total", "srs_clients_total", "srs_receive_bytes_total"):
        assert value(after, name) >= value(before_close, name), name
    assert value(after, "livesrv_connections_total", protocol="flv") >= 2

    # The publisher goes: the stream's series go with it, the totals stay.
    pub.kill()
    await viewers[1].close()
    await wait_until(lambda: not app.hub.streams, 15, "the stream to be removed")
    gone, _ = await scrape(api)
    assert value(gone, "srs_streams") == 0 and value(gone, "srs_clients") == 0
    assert ("livesrv_stream_clients", (("stream", "/live/test"),)) not in gone
    assert value(gone, "srs_send_bytes_total") >= value(after, "srs_send_bytes_total")
    assert value(gone, "srs_receive_bytes_total") >= value(after, "srs_receive_bytes_total")
    assert value(gone, "srs_clients_total") >= 3

    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('exporter')}/api/v1/versions") as r:
            assert r.status == 404  # the exporter's port serves metrics only


def test_closed_totals_and_monotonic_counters() -> None:
    before = stats.CLOSED.get("test-proto")
    stats.connection_closed("test-proto", 10, 20)
    stats.connection_closed("test-proto", 1, 2, error=True)
    t = stats.CLOSED["test-proto"]
    base = before or stats.Totals()
    assert (t.connections, t.errors, t.recv_bytes, t.send_bytes) == (
        base.connections + 2, base.errors + 1, base.recv_bytes + 11, base.send_bytes + 22)

    collector = LivesrvCollector(None, None, None, None, "")  # type: ignore[arg-type]
    assert collector._mono(("x",), 5) == 5
    assert collector._mono(("x",), 3) == 5  # a share that vanished does not make a counter go back
    assert collector._mono(("x",), 8) == 8
