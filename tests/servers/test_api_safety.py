"""Safe by default: without ``http_api { auth }``, what changes state (kicks, DELETE, the raw reload) and the
running config answer only loopback clients; reading stays open to everyone.

A peer that is not loopback is simulated without leaving loopback: the request handler is called with a
fake peer address (it reads nothing else from the connection), or the server's "trusted" predicate is
replaced. Every socket in these tests is on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest

from livesrv.app import App
from livesrv.servers.api.service import is_loopback
from livesrv.servers.http import Request
from tests.helpers import wait_until
from tests.servers.rtmp_client import AVC_SEQUENCE_HEADER, RTMPClient, keyframe
from tests.servers.test_api import start_app  # noqa: F401 - a fixture, used by name

REMOTE = "203.0.113.9"  # TEST-NET-3: never a real peer here, only a value handed to the handler




def request(method: str, target: str, ip: str, headers: dict[str, str] | None = None) -> Request:
    path, _, query = target.partition("?")
    q = dict(kv.split("=", 1) for kv in query.split("&") if kv) if query else {}
    return Request(method=method, target=target, path=path, query=q, headers=headers or {}, ip=ip)


async def call(app: App, method: str, target: str, ip: str, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, object]]:
    resp = await app.api_service.handle(request(method, target, ip, headers), None)  # type: ignore[arg-type]
    body = resp.body.decode()
    if body.startswith("f("):  # JSONP
        body = body[2:-1]
    return resp.status, json.loads(body)


async def publisher(app: App) -> RTMPClient:
    pub = await RTMPClient.open(app.port("rtmp"))
    await pub.publish("test")
    pub.send_media(9, 0, AVC_SEQUENCE_HEADER)
    pub.send_media(9, 0, keyframe(0))
    await pub.drain()
    await wait_until(lambda: any(s.live for s in app.hub.streams.values()), 10, "the stream to go live")
    return pub


@pytest.mark.parametrize("ip, expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.5", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False),
    ("0.0.0.0", False), ("?", False), ("", False), ("fe80::1%eth0", False),
])
def test_loopback(ip: str, expected: bool) -> None:
    assert is_loopback(ip) is expected


async def test_without_auth_a_remote_kick_is_refused_and_changes_nothing(server) -> None:  # type: ignore[no-untyped-def]
    pub = await publisher(server)
    try:
        (client,) = server.hub.clients.values()
        (stream,) = server.hub.streams.values()
        _, listing = await call(server, "GET", "/api/v1/streams", REMOTE)
        sid = listing["streams"][0]["id"]  # type: ignore[index]
        refused = [
            ("DELETE", f"/api/v1/clients/{client.cid}"),
            ("DELETE", f"/api/v1/streams/{sid}"),
            ("GET", f"/api/v1/clients/{client.cid}?callback=f&method=DELETE"),  # the SRS console's JSONP kick
            ("POST", "/api/v1/clients"),
            ("PUT", "/api/v1/streams"),
            ("GET", "/api/v1/raw?rpc=reload"),
            ("GET", "/api/v1/config"),
        ]
        for method, target in refused:
            status, body = await call(server, method, target, REMOTE)
            jsonp = "callback=" in target
            assert status == (200 if jsonp else 403), (method, target, status, body)
            assert body["code"] == 403 and body["server"] and body["pid"], body  # SRS's envelope
            assert "http_api" in str(body["error"]) and "auth" in str(body["error"]), body
        assert list(server.hub.clients.values()) == [client] and not pub.eof
        assert list(server.hub.streams.values()) == [stream] and stream.live
        # Reading stays open, for everyone.
        for target in ("/api/v1/versions", "/api/v1/summaries", "/api/v1/streams", "/api/v1/clients",
                       f"/api/v1/clients/{client.cid}", "/api/v1/vhosts", "/metrics"):
            for method in ("GET", "HEAD"):
                resp = await server.api_service.handle(request(method, target, REMOTE), None)
                assert resp.status == 200, (method, target, resp.body)
        resp = await server.api_service.handle(request("OPTIONS", "/api/v1/clients/x", REMOTE), None)
        assert resp.status == 200  # a CORS preflight is no action
        # The same kick from loopback works.
        status, _ = await call(server, "DELETE", f"/api/v1/clients/{client.cid}", "127.0.0.1")
        assert status == 200
        await wait_until(lambda: pub.eof and not server.hub.clients, 10, "the kicked publisher to be gone")
    finally:
        await pub.close()


async def test_with_auth_the_credentials_decide_wherever_the_client_is(start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app("auth { enabled on; username ops; password s3cret; }")
    pub = await publisher(app)
    try:
        (client,) = app.hub.clients.values()
        good = {"authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        status, body = await call(app, "DELETE", f"/api/v1/clients/{client.cid}", REMOTE)
        assert status == 401 and body["code"] == 401 and client.cid in app.hub.clients
        status, body = await call(app, "GET", "/api/v1/config", REMOTE, good)
        assert status == 200 and body["data"]["http_api"]["auth"]["password"] == "***", body  # type: ignore[index]
        status, _ = await call(app, "DELETE", f"/api/v1/clients/{client.cid}", REMOTE, good)
        assert status == 200
        await wait_until(lambda: pub.eof and not app.hub.clients, 10, "the kicked publisher to be gone")
    finally:
        await pub.close()


async def test_over_the_wire_from_loopback_and_with_the_check_replaced(server) -> None:  # type: ignore[no-untyped-def]
    """A real request on 127.0.0.1 acts; with the server told to trust nobody (as a remote peer would be
    treated) the same request is refused with 403 and an SRS-shaped body, and the client stays."""
    pub = await publisher(server)
    try:
        (client,) = server.hub.clients.values()
        url = f"http://127.0.0.1:{server.port('api')}/api/v1/clients/{client.cid}"
        server.api_service.trusted = lambda ip: False
        async with aiohttp.ClientSession() as s:
            async with s.delete(url) as r:
                assert r.status == 403 and r.headers["Access-Control-Allow-Origin"] == "*"
                body = json.loads(await r.text())
        assert body["code"] == 403 and "127.0.0.1" in body["error"], body
        assert client.cid in server.hub.clients and not pub.eof
        server.api_service.trusted = is_loopback
        async with aiohttp.ClientSession() as s:
            async with s.delete(url) as r:
                assert r.status == 200
        await wait_until(lambda: not server.hub.clients, 10, "the kicked publisher to be gone")
    finally:
        await pub.close()


async def test_running_config_masks_secrets(start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app(
        "auth { enabled on; username ops; password s3cret; }",
        "vhost hooked { http_hooks { enabled on; on_publish http://u:pw@127.0.0.1:9/hook?token=abc; } "
        "forward { enabled on; destination 127.0.0.1:19350; } }")
    good = {"authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    status, body = await call(app, "GET", "/api/v1/config", "127.0.0.1", good)
    assert status == 200, body
    text = json.dumps(body)
    assert "s3cret" not in text and "abc" not in text and "pw@" not in text, text
    hooks = body["data"]["vhosts"]["hooked"]["http_hooks"]  # type: ignore[index]
    assert hooks["on_publish"] == ["http://u:***@127.0.0.1:9/hook?token=***"], hooks
    assert body["data"]["http_api"]["auth"] == {"enabled": True, "username": "ops", "password": "***"}  # type: ignore[index]
