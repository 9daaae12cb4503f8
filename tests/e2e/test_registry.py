"""The hub's client registry from outside: every kind of client (an ffmpeg RTMP publisher, an RTMP player, HTTP-FLV,
WS-FLV and HTTP-TS viewers, an HLS player) is listed by /api/v1/clients with the same fields and counted by the
metrics under its protocol; each one kicked is gone from the registry, the API and the metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livesrv.app import App
from tests.helpers import FlvViewer, ffmpeg_publish_args, wait_until
from tests.servers.rtmp_client import RTMPClient

pytestmark = pytest.mark.e2e


async def api(app: App, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://127.0.0.1:{app.port('api')}{path}") as r:
            return r.status, json.loads(await r.text())


async def clients_by_protocol(app: App) -> dict[str, int]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('api')}/metrics") as r:
            text = await r.text()
    out: dict[str, int] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "livesrv_clients":
            for sample in fam.samples:
                out[sample.labels["protocol"]] = out.get(sample.labels["protocol"], 0) + int(sample.value)
    return out


async def test_every_client_kind_is_listed_counted_and_kicked_the_same_way(make_server, procs, sample_flv,  # type: ignore[no-untyped-def]
                                                                          tmp_path) -> None:
    app = await make_server(vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 10; hls_path {tmp_path}; }}")
    port = app.port("rtmp")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{port}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    base = f"http://127.0.0.1:{app.port('http')}/live/test"

    player = await RTMPClient.open(port)
    await player.play("test", port=port)
    flv = FlvViewer(base + ".flv").start()
    ws = FlvViewer(base + ".flv", ws=True).start()
    ts_bytes = bytearray()
    session = aiohttp.ClientSession()

    async def read_ts() -> None:
        async with session.get(base + ".ts") as r:
            async for chunk in r.content.iter_any():
                ts_bytes.extend(chunk)

    ts = asyncio.ensure_future(read_ts())
    try:
        async def hls_playlist() -> int:
            async with session.get(base + ".m3u8") as r:  # follows the hls_ctx redirect: a counted player
                await r.read()
                return r.status

        deadline = asyncio.get_running_loop().time() + 30
        while await hls_playlist() != 200:
            assert asyncio.get_running_loop().time() < deadline, "no HLS playlist"
            await asyncio.sleep(0.2)
        protocols = {"rtmp", "flv", "ws-flv", "ts", "hls"}
        await wait_until(lambda: {c.protocol for c in app.hub.clients.values()} == protocols
                         and len(app.hub.clients) == 6 and len(ts_bytes) > 1000, 20, "every kind of client")

        _, body = await api(app, "/api/v1/clients")
        listed = body["clients"]
        assert body["total"] == 6 and len(listed) == 6
        fields = set(listed[0])
        assert all(set(c) == fields for c in listed), [sorted(c) for c in listed]  # the same shape for every kind
        by_protocol: dict[str, list[dict[str, Any]]] = {}
        for c in listed:
            by_protocol.setdefault(c["protocol"], []).append(c)
        assert sorted((c["kind"], c["type"]) for c in by_protocol["rtmp"]) == [("publisher", "fmle-publish"),
                                                                               ("viewer", "rtmp-play")]
        stream_id = by_protocol["rtmp"][0]["stream"]
        for c in listed:
            assert c["stream"] == stream_id and c["url"] == "/live/test" and c["ip"] == "127.0.0.1"
            assert c["tcUrl"].endswith(f":{app.port('rtmp') if c['protocol'] == 'rtmp' else app.port('http')}/live")
        counted = await clients_by_protocol(app)
        assert {p: counted.get(p, 0) for p in protocols} == {"rtmp": 2, "flv": 1, "ws-flv": 1, "ts": 1, "hls": 1}

        # Kick every viewer, one kind after the other: each is gone from the registry, the API and the metrics.
        for protocol in ("rtmp", "flv", "ws-flv", "ts", "hls"):
            (victim,) = [c for c in by_protocol[protocol] if c["kind"] == "viewer"]
            status, _ = await api(app, f"/api/v1/clients/{victim['id']}", "DELETE")
            assert status == 200, protocol
            await wait_until(lambda v=victim: v["id"] not in app.hub.clients, 10, f"the {protocol} viewer to go")
            status, _ = await api(app, f"/api/v1/clients/{victim['id']}")
            assert status == 404
            assert (await clients_by_protocol(app)).get(protocol, 0) == (1 if protocol == "rtmp" else 0)
        await asyncio.wait_for(asyncio.gather(flv.ended.wait(), ws.ended.wait(), ts), 10)  # their bodies ended
        await wait_until(lambda: player.eof, 10, "the RTMP player's connection to close")
        (publisher,) = app.hub.clients.values()
        assert publisher.kind == "publisher"
    finally:
        await player.close()
        await flv.close()
        await ws.close()
        ts.cancel()
        await asyncio.gather(ts, return_exceptions=True)
        await session.close()
