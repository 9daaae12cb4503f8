"""TLS listeners (livesrv.servers.tls) in process, on OS-chosen loopback ports: certificates that cannot serve are
refused at start with the file and the reason; a chain is sent whole; HTTPS and the API over HTTPS answer beside
the plain listeners; TLS 1.2 is the minimum; plain-text bytes, garbage, a half and a stalled handshake on each
TLS port are each closed with one logged reason while a viewer over TLS plays on and nothing is left behind; a
handshake holds a slot of max_connections; a certificate swapped on disk is what the next connection gets after a
reload while an open one plays on, and a broken one is refused by the reload; --self-signed's certificate.

RTMPS with real clients (ffmpeg, ffprobe) and a SIGHUP to a real process: tests/e2e/test_tls_ffmpeg.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from livesrv.app import App
from livesrv.config import parse_text
from livesrv.servers import tls
from livesrv.servers.tls import HandshakeFailures, TlsError, server_context
from tests.helpers import LogLines, Procs, ffmpeg_publish_args, wait_until
from tests.servers.tls_certs import (Pair, ca_chain, insecure_context, peer_fingerprint, self_signed_pair,
                                     tls_connect)

#: Seconds a client has for its TLS handshake in these tests (rtmp_limits / http_limits).
HANDSHAKE = 1


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    d = tmp_path_factory.mktemp("certs")
    return {"a": self_signed_pair(d, "a"), "b": self_signed_pair(d, "b")}


def tls_config(pair: Pair, *, rtmps: bool = True, https: bool = True, api_https: bool = True,
               max_connections: int = 100, handshake: float = HANDSHAKE) -> str:
    files = f"key {pair.key}; cert {pair.cert};"

    def block(on: bool) -> str:
        return f"https {{ enabled on; listen 127.0.0.1:0; {files} }}" if on else ""

    return f"""
    listen 127.0.0.1:0;
    max_connections {max_connections};
    rtmp_limits {{ handshake_timeout {handshake}; }}
    http_limits {{ header_timeout {handshake}; }}
    http_server {{ enabled on; listen 127.0.0.1:0; dir ./objs/nginx/html; {block(https)} }}
    http_api {{ enabled on; listen 127.0.0.1:0; {block(api_https)} }}
    {f"rtmps {{ enabled on; listen 127.0.0.1:0; {files} }}" if rtmps else ""}
    vhost __defaultVhost__ {{ http_remux {{ enabled on; }} }}
    """


@pytest.fixture
async def make_tls_server() -> AsyncIterator:  # type: ignore[type-arg]
    apps: list[App] = []

    async def start(text: str) -> App:
        result = parse_text(text, "<test>")
        assert not result.warnings, result.warnings
        app = App(result.config)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


# ------------------------------------------------------------------------------------------ certificates


def test_a_pair_that_cannot_serve_is_refused_with_the_file_and_the_reason(certs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = certs["a"], certs["b"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    encrypted = tmp_path / "encrypted.key"
    from tests.servers.tls_certs import _openssl

    _openssl("pkey", "-in", str(a.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted))
    cases = {
        "missing cert": (tmp_path / "nothing.crt", a.key, r"cert .*nothing\.crt: ENOENT"),
        "missing key": (a.cert, tmp_path / "nothing.key", r"key .*nothing\.key: ENOENT"),
        "unreadable key": (a.cert, tmp_path, r"key .*: EISDIR"),  # (root reads any file: a directory it cannot)
        "cert not PEM": (garbage, a.key, r"no PEM certificate"),
        "key not PEM": (a.cert, garbage, r"no PEM private key"),
        "encrypted key": (a.cert, encrypted, r"encrypted with a passphrase.*openssl pkey"),
        "mismatched pair": (a.cert, b.key, rf"key .*b\.key does not belong to cert .*a\.crt"),
        "cert for key": (a.key, a.key, r"no PEM certificate"),
    }
    for what, (cert, key) in ((k, v[:2]) for k, v in cases.items()):
        with pytest.raises(TlsError, match=cases[what][2]):
            server_context(str(cert), str(key))
    ctx = server_context(str(a.cert), str(a.key))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION


def test_the_server_does_not_start_with_a_mismatched_pair(certs) -> None:  # type: ignore[no-untyped-def]
    bad = Pair(certs["a"].cert, certs["b"].key)
    with pytest.raises(TlsError, match="does not belong"):
        App(parse_text(tls_config(bad, https=False, api_https=False)).config)


async def test_livesrv_refuses_to_start_and_minus_t_says_why(certs, procs: Procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "tls.conf"
    conf.write_text(tls_config(Pair(tmp_path / "missing.crt", certs["a"].key)))
    env_python = [sys.executable, "-m", "livesrv"]
    code, _, err = await procs.run(*env_python, "-t", "-c", str(conf))
    assert code == 1 and re.search(rb"TLS error: rtmps: cert .*missing\.crt: ENOENT", err), err
    code, _, err = await procs.run(*env_python, "-c", str(conf))
    assert code == 1 and b"livesrv: TLS error: cert " in err and b"missing.crt: ENOENT" in err, err
    assert b"event=ready" not in err


async def test_a_chain_is_sent_whole(make_tls_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A client that trusts only the root verifies the server: the intermediate came with the certificate."""
    chain = ca_chain(tmp_path / "ca")
    app = await make_tls_server(tls_config(chain.chain, rtmps=False))
    verifying = ssl.create_default_context(cafile=str(chain.root))
    _, writer = await tls_connect(app.port("https"), verifying)
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    writer.close()
    only_leaf = Pair(tmp_path / "leaf.crt", chain.chain.key)
    only_leaf.cert.write_text((tmp_path / "ca" / "leaf.crt").read_text())
    app2 = await make_tls_server(tls_config(only_leaf, rtmps=False))
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_connect(app2.port("https"), verifying)


# ------------------------------------------------------------------------------------------ serving


async def test_https_and_the_api_over_https_beside_the_plain_listeners(make_tls_server, certs, log_lines) -> None:  # type: ignore[no-untyped-def]
    app = await make_tls_server(tls_config(certs["a"]))
    assert set(app.addresses) >= {"rtmp", "http", "api", "rtmps", "https", "api_https"}
    connector = aiohttp.TCPConnector(ssl=insecure_context())
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(f"https://127.0.0.1:{app.port('api_https')}/api/v1/versions") as r:
            assert r.status == 200 and (await r.json())["code"] == 0
        async with s.get(f"http://127.0.0.1:{app.port('api')}/api/v1/versions") as r:
            assert r.status == 200
        async with s.get(f"https://127.0.0.1:{app.port('https')}/livesrv/config.json") as r:
            ports = (await r.json())["ports"]
        assert ports == {name: app.port(name) for name in ("rtmp", "http", "api", "rtmps", "https", "api_https")}
        async with s.get(f"https://127.0.0.1:{app.port('https')}/console/") as r:
            assert r.status == 200 and b"console.js" in await r.read()
    assert "event=tls-cert listener=rtmps" in log_lines.buffer.getvalue() and "event=tls-cert-self-signed" in log_lines.buffer.getvalue()
    # TLS 1.3 and 1.2 are served; below 1.2 is refused, with the reason logged.
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = insecure_context()
        ctx.maximum_version = version
        _, writer = await tls_connect(app.port("https"), ctx)
        assert writer.get_extra_info("ssl_object").version() == version.name.replace("v1_", "v1.")
        writer.close()
    old = insecure_context()
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await tls_connect(app.port("https"), old)
    await wait_until(lambda: "no TLS version from 1.2 on" in log_lines.buffer.getvalue(), 5, "the refused TLS 1.1 client's line")


async def live_https_viewer(port: int, path: str = "/live/test.flv") -> tuple[asyncio.Task[None], list[int], str]:
    """An HTTPS-FLV viewer that counts what it receives; its task, the byte count (a one-item list), and the
    fingerprint of the certificate its connection was shown."""
    reader, writer = await tls_connect(port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = [0]

    async def run() -> None:
        try:
            while chunk := await reader.read(65536):
                received[0] += len(chunk)
        finally:
            writer.close()

    return asyncio.get_running_loop().create_task(run()), received, peer_fingerprint(writer)


def client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello), made without a network."""
    ctx = insecure_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def closed_within(port: int, send: bytes, timeout: float, *, vanish: bool = False) -> float:
    """Connect, send ``send`` (and with ``vanish`` close at once), and return how long the server took to close
    the connection."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()
    if send:
        writer.write(send)
    if vanish:
        await writer.drain()
        writer.close()
        return 0.0
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return loop.time() - start


async def test_bad_clients_on_each_tls_port_are_closed_with_one_reason_and_nothing_leaks(  # type: ignore[no-untyped-def]
        make_tls_server, certs, procs: Procs, sample_flv: Path, log_lines: LogLines) -> None:
    app = await make_tls_server(tls_config(certs["a"]))
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live for s in app.hub.streams.values()), 20, "the stream to go live")
    viewer, received, _ = await live_https_viewer(app.port("https"))
    await wait_until(lambda: received[0] > 10_000, 10, "the HTTPS-FLV viewer's first media")
    baseline = app.budget.open
    hello = client_hello()
    clients = {
        "plain-text": (b"GET /live/test.flv HTTP/1.1\r\nHost: x\r\n\r\n", "plain HTTP on a TLS port"),
        "rtmp": (b"\x03" + bytes(1536), "not TLS: plain-text or garbage bytes"),
        "garbage": (bytes(range(256)) * 4, "not TLS: plain-text or garbage bytes"),
        "half handshake": (hello[: len(hello) // 2], f"TLS handshake not done after {HANDSHAKE}s"),
        "stalled": (b"", f"TLS handshake not done after {HANDSHAKE}s"),
        "vanished": (hello[:100], "client closed the connection during the TLS handshake"),
    }
    for listener in ("rtmps", "https", "api_https"):
        port = app.port(listener)
        for what, (data, reason) in clients.items():
            before = log_lines.buffer.getvalue().count("event=tls-handshake-failed")
            took = await closed_within(port, data, HANDSHAKE + 5, vanish=what == "vanished")
            # one line per connection, with its reason (the line is written as the connection is dropped)
            await wait_until(lambda: log_lines.buffer.getvalue().count("event=tls-handshake-failed") == before + 1, 5,
                             f"the line about {what} on {listener}")
            last = [line for line in log_lines.buffer.getvalue().splitlines() if "event=tls-handshake-failed" in line][-1]
            assert f"listener={listener} ip=127.0.0.1" in last and reason in last, (what, last)
            assert took < HANDSHAKE + 2, (what, listener, took)
    # Nothing left behind: no handshake under way, every slot of max_connections given back.
    assert all(not e.pending for e in app.tls.endpoints.values())
    await wait_until(lambda: app.budget.open == baseline, 5, "the budget back to the viewer and the publisher")
    # The viewer played on all along, and a new TLS viewer is served.
    at = received[0]
    await wait_until(lambda: received[0] > at + 10_000, 10, "the HTTPS-FLV viewer to go on receiving")
    assert not viewer.done()
    second, received2, _ = await live_https_viewer(app.port("https"))
    await wait_until(lambda: received2[0] > 10_000, 10, "a new HTTPS-FLV viewer's media")
    for task in (viewer, second):
        task.cancel()
    await asyncio.gather(viewer, second, return_exceptions=True)
    clients_ = [c for c in app.hub.clients.values() if c.protocol == "flv"]
    assert all(c.context.tc_url.startswith("https://") for c in clients_), [c.context.tc_url for c in clients_]


async def test_a_handshake_holds_a_slot_of_max_connections(make_tls_server, certs, log_lines) -> None:  # type: ignore[no-untyped-def]
    app = await make_tls_server(tls_config(certs["a"], max_connections=2, handshake=5))
    stalled = [await asyncio.open_connection("127.0.0.1", app.port("https")) for _ in range(2)]
    await wait_until(lambda: app.budget.open == 2, 5, "two handshakes under way")
    _, writer = await asyncio.open_connection("127.0.0.1", app.port("rtmp"))  # a third connection: refused
    await wait_until(lambda: "event=reject listener=rtmp" in log_lines.buffer.getvalue(), 5, "the rejection")
    writer.close()
    for _, w in stalled:
        w.close()
    await wait_until(lambda: app.budget.open == 0, 5, "the slots given back when the clients left")
    _, writer = await tls_connect(app.port("https"))  # a handshake that completes: the connection has one slot
    await wait_until(lambda: app.budget.open == 1 and len(app.http.connections) == 1, 5, "one slot, one connection")
    writer.close()


async def test_a_certificate_swapped_on_disk_is_what_new_connections_get_after_a_reload(  # type: ignore[no-untyped-def]
        make_tls_server, certs, procs: Procs, sample_flv: Path, tmp_path: Path, log_lines: LogLines) -> None:
    live = Pair(tmp_path / "server.crt", tmp_path / "server.key")
    shutil.copy(certs["a"].cert, live.cert)
    shutil.copy(certs["a"].key, live.key)
    app = await make_tls_server(tls_config(live))
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live for s in app.hub.streams.values()), 20, "the stream to go live")
    old, received, shown = await live_https_viewer(app.port("https"))
    assert shown == certs["a"].fingerprint
    await wait_until(lambda: received[0] > 10_000, 10, "the old viewer's media")

    # The renewed certificate lands (as certbot writes it), then the reload.
    for src, dst in ((certs["b"].cert, live.cert), (certs["b"].key, live.key)):
        shutil.copy(src, dst.with_suffix(".new"))
        os.replace(dst.with_suffix(".new"), dst)
    _, writer = await tls_connect(app.port("https"))
    assert peer_fingerprint(writer) == certs["a"].fingerprint  # not before the reload
    writer.close()
    assert app.reload(app.config) == []  # (no restart needed)
    for listener in ("https", "api_https", "rtmps"):
        _, writer = await tls_connect(app.port(listener))
        assert peer_fingerprint(writer) == certs["b"].fingerprint, listener
        writer.close()
    at = received[0]
    await wait_until(lambda: received[0] > at + 10_000, 10, "the old viewer to play on after the reload")
    assert not old.done()
    assert log_lines.buffer.getvalue().count("event=tls-reload listener=") == 3

    # A broken pair on disk: the reload says so and keeps the certificate in use.
    live.key.write_bytes(certs["a"].key.read_bytes())  # b's certificate with a's key
    app.reload(app.config)
    assert "event=tls-reload-failed listener=https" in log_lines.buffer.getvalue() and "does not belong" in log_lines.buffer.getvalue()
    _, writer = await tls_connect(app.port("https"))
    assert peer_fingerprint(writer) == certs["b"].fingerprint
    writer.close()
    old.cancel()
    await asyncio.gather(old, return_exceptions=True)


async def test_turning_a_tls_listener_on_or_off_needs_a_restart(make_tls_server, certs, log_lines) -> None:  # type: ignore[no-untyped-def]
    app = await make_tls_server(tls_config(certs["a"], rtmps=False))
    changed = parse_text(tls_config(certs["a"]).replace("rtmps { enabled on; listen 127.0.0.1:0;",
                                                        "rtmps { enabled on; listen 127.0.0.1:1;")).config
    assert app.reload(changed) == ["rtmps off -> 127.0.0.1:1"]
    assert "rtmps" not in app.addresses
    # Off in the new config: it goes on serving, with the certificate it has, until the restart.
    assert app.reload(parse_text(tls_config(certs["a"], rtmps=False, https=False)).config) == [
        "rtmps 127.0.0.1:1 -> off", "http_server.https 127.0.0.1:0 -> off"]
    _, writer = await tls_connect(app.port("https"))
    writer.close()
    assert "tls-reload-failed" not in log_lines.buffer.getvalue()


# ------------------------------------------------------------------------------------------ the log


def test_failed_handshakes_are_logged_one_line_each_up_to_a_limit_a_second(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv.tls")
    now = [100.0]
    failures = HandshakeFailures("rtmps", per_second=3, clock=lambda: now[0])
    for i in range(5):
        failures.failed(f"10.0.0.{i}", "why", logging.WARNING)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0] == 'event=tls-handshake-failed listener=rtmps ip=10.0.0.0 reason=why'
    now[0] += 1.0
    failures.failed("10.0.0.9", "why", logging.WARNING)  # a new second: the count of the last one, then the line
    lines = [r.getMessage() for r in caplog.records]
    assert "suppressed=2" in lines[3] and "ip=10.0.0.9" in lines[4] and failures.total == 6


# ------------------------------------------------------------------------------------------ --self-signed


@pytest.mark.parametrize("maker", ["default", "openssl"])
def test_self_signed_for_testing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, maker: str, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="livesrv.tls")
    if maker == "openssl":  # as where the cryptography package is not installed
        monkeypatch.setattr(tls, "_generate_cryptography", lambda names: None)
    path = tls.self_signed(str(tmp_path / "tls"), names=["10.1.2.3", "media.example"])
    assert os.stat(path).st_mode & 0o777 == 0o600
    server_context(path, path)  # key and certificate in one file, a matching pair
    info = tls.cert_info(path)
    assert info is not None and info.ours and info.self_signed
    assert {"localhost", "127.0.0.1", "10.1.2.3", "media.example"} <= set(info.names)
    assert info.not_after > __import__("time").time() + 29 * 86400
    made = Path(path).read_bytes()
    assert tls.self_signed(str(tmp_path / "tls"), names=["10.1.2.3"]) == path  # used again while valid
    assert Path(path).read_bytes() == made
    tls.self_signed(str(tmp_path / "tls"), names=["another.name"])  # a name it lacks: made again
    assert Path(path).read_bytes() != made
    assert sum("event=tls-self-signed-made" in r.getMessage() for r in caplog.records) == 2
    assert tls.TlsCertificate("https", path, path).context is not None  # every load of it warns
    assert any("event=tls-cert-self-signed" in r.getMessage() and "generated by --self-signed" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------------------------------ TLS viewers' writes


def test_a_tls_viewer_is_given_large_writes_in_pieces() -> None:
    class Transport:
        def __init__(self, tls: bool) -> None:
            self.tls = tls
            self.writes: list[bytes] = []

        def get_extra_info(self, name: str) -> object:
            return object() if name == "sslcontext" and self.tls else None

        def write(self, data: bytes) -> None:
            self.writes.append(bytes(data))

        def get_write_buffer_size(self) -> int:
            return 7

    plain = Transport(tls=False)
    assert tls.viewer_transport(plain) is plain
    raw = Transport(tls=True)
    t = tls.viewer_transport(raw)
    batch, burst = bytes(100_000), bytes(range(256)) * 2100  # a batch; a GOP burst of 537,600 bytes
    t.write(batch)
    assert raw.writes == [batch]
    raw.writes.clear()
    t.write(burst)
    assert [len(w) for w in raw.writes] == [tls.TLS_WRITE_PIECE] * 4 + [len(burst) - 4 * tls.TLS_WRITE_PIECE]
    assert b"".join(raw.writes) == burst
    assert t.get_write_buffer_size() == 7 and t.get_extra_info("sslcontext") is not None
