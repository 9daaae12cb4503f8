"""RTMPS and HTTPS with real clients: ffmpeg publishes over ``rtmps://`` (a self-signed certificate, verification
off: ``-tls_verify 0``), ffprobe plays over ``rtmps://``, ``https://...flv``, ``.ts`` and ``.m3u8``, and verifies a
CA-issued chain with ``-tls_verify 1``; on a real livesrv process, a certificate swapped on disk and a SIGHUP is
what new connections get while a player and the publisher connected before go on."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import FFMPEG, Procs, ffmpeg_publish_args, require_tool, wait_until
from tests.servers.test_tls import certs, make_tls_server, tls_config  # noqa: F401 - fixtures
from tests.servers.tls_certs import Pair, ca_chain, insecure_context, peer_fingerprint, tls_connect

pytestmark = pytest.mark.e2e

HLS = "hls { enabled on; hls_fragment 1; hls_path ./hls; }"


def publish_rtmps(src: Path, url: str) -> list[str]:
    """ffmpeg publishing ``src`` (looped) to an rtmps:// URL without verifying the certificate."""
    args = ffmpeg_publish_args(src, url)
    out = args.index("-f")
    return [*args[:out], "-tls_verify", "0", *args[out:]]


async def probe(procs: Procs, url: str, *extra: str) -> list[str]:
    """The codecs ffprobe finds at ``url`` (it must open it and read its streams)."""
    code, out, err = await procs.run(require_tool("ffprobe"), "-v", "error", "-rw_timeout", "15000000", *extra,
                                     "-show_entries", "stream=codec_name", "-of", "json", url, timeout=60)
    assert code == 0, (url, err.decode(errors="replace"))
    return sorted(s["codec_name"] for s in json.loads(out)["streams"])


async def test_ffmpeg_publishes_over_rtmps_and_ffprobe_plays_every_tls_url(make_tls_server, certs, procs,  # type: ignore[no-untyped-def]
                                                                          sample_flv, tmp_path) -> None:
    app = await make_tls_server(tls_config(certs["a"]).replace("http_remux { enabled on; }",
                                                                f"http_remux {{ enabled on; }} {HLS}"))
    rtmps, https = f"rtmps://127.0.0.1:{app.port('rtmps')}", f"https://127.0.0.1:{app.port('https')}"
    await procs.start(*publish_rtmps(sample_flv, f"{rtmps}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the RTMPS publish")
    for url in (f"{rtmps}/live/test", f"{https}/live/test.flv", f"{https}/live/test.ts"):
        assert await probe(procs, url, "-tls_verify", "0") == ["aac", "h264"], url
    await wait_until(lambda: Path("hls/live/test.m3u8").exists(), 20, "the first HLS segment")
    assert await probe(procs, f"{https}/live/test.m3u8", "-tls_verify", "0") == ["aac", "h264"]
    # The API over HTTPS shows the publisher with the URL it used.
    connector = aiohttp.TCPConnector(ssl=insecure_context())
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(f"https://127.0.0.1:{app.port('api_https')}/api/v1/clients") as r:
            clients = (await r.json())["clients"]
    (publisher,) = [c for c in clients if c["publish"]]
    assert publisher["tcUrl"].startswith("rtmps://127.0.0.1:"), publisher


async def test_ffprobe_verifies_a_ca_issued_chain(make_tls_server, procs, sample_flv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = ca_chain(tmp_path / "ca")
    app = await make_tls_server(tls_config(chain.chain))
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{app.port('rtmp')}/live/test"))
    await wait_until(lambda: any(s.live and s.gop.gop for s in app.hub.streams.values()), 20, "the stream to go live")
    verify = ("-tls_verify", "1", "-ca_file", str(chain.root))
    assert await probe(procs, f"rtmps://localhost:{app.port('rtmps')}/live/test", *verify) == ["aac", "h264"]
    assert await probe(procs, f"https://localhost:{app.port('https')}/live/test.flv", *verify) == ["aac", "h264"]


class ServerProcess:
    """A real ``livesrv -c FILE`` on OS-chosen ports: its log (stderr, read all along) and the ports it bound."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log = ""
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log += line.decode(errors="replace")

    @classmethod
    async def start(cls, procs: Procs, conf: Path) -> ServerProcess:
        server = cls(await procs.start(sys.executable, "-m", "livesrv", "-c", str(conf)))
        await wait_until(lambda: "event=ready" in server.log or server.proc.returncode is not None, 20,
                         "the server to start")
        assert "event=ready" in server.log, server.log
        return server

    def port(self, name: str) -> int:
        found = re.search(rf" {name}=127\.0\.0\.1:(\d+)", self.log)
        assert found, (name, self.log)
        return int(found.group(1))


async def test_sighup_swaps_the_certificate_for_new_connections_while_old_ones_play_on(  # type: ignore[no-untyped-def]
        certs, procs, sample_flv, tmp_path) -> None:
    live = Pair(tmp_path / "server.crt", tmp_path / "server.key")
    shutil.copy(certs["a"].cert, live.cert)
    shutil.copy(certs["a"].key, live.key)
    conf = tmp_path / "tls.conf"
    conf.write_text("srs_log_tank console;\n" + tls_config(live))
    server = await ServerProcess.start(procs, conf)
    rtmps, https = server.port("rtmps"), server.port("https")
    await procs.start(*publish_rtmps(sample_flv, f"rtmps://127.0.0.1:{rtmps}/live/test"))
    old = tmp_path / "old.flv"
    player = await procs.start(require_tool(FFMPEG), "-hide_banner", "-loglevel", "error", "-tls_verify", "0",
                               "-rw_timeout", "15000000", "-i", f"https://127.0.0.1:{https}/live/test.flv",
                               "-c", "copy", "-f", "flv", "-y", str(old))
    await wait_until(lambda: old.exists() and old.stat().st_size > 50_000, 30, "the player's first media")
    _, writer = await tls_connect(https)
    assert peer_fingerprint(writer) == certs["a"].fingerprint
    writer.close()

    for src, dst in ((certs["b"].cert, live.cert), (certs["b"].key, live.key)):
        shutil.copy(src, dst.with_suffix(".new"))
        dst.with_suffix(".new").replace(dst)
    server.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: server.log.count("event=tls-reload listener=") == 3, 10, "the reload of the certificates")
    for port in (https, rtmps):
        _, writer = await tls_connect(port)
        assert peer_fingerprint(writer) == certs["b"].fingerprint, port
        writer.close()
    assert await probe(procs, f"rtmps://127.0.0.1:{rtmps}/live/test", "-tls_verify", "0") == ["aac", "h264"]
    size = old.stat().st_size
    await wait_until(lambda: old.stat().st_size > size + 50_000, 20, "the old player to play on after the reload")
    assert player.returncode is None and server.proc.returncode is None
    assert "event=close" not in "".join(line for line in server.log.splitlines(True) if "protocol=flv" in line)
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.proc.wait(), 15) == 0


async def test_self_signed_turns_on_every_tls_listener_with_the_embedded_defaults(  # type: ignore[no-untyped-def]
        procs, sample_flv, tmp_path, monkeypatch) -> None:
    """``livesrv --self-signed`` without a config file: HTTPS, the API over HTTPS and RTMPS on, with a certificate
    made for this machine (said loudly in the log), kept across a SIGHUP."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("LISTEN", "HTTP_SERVER_LISTEN", "HTTP_API_LISTEN", "HTTP_SERVER_HTTPS_LISTEN",
                 "HTTP_API_HTTPS_LISTEN", "RTMPS_LISTEN"):
        monkeypatch.setenv(f"SRS_{name}", "127.0.0.1:0")  # the embedded defaults, on OS-chosen ports
    server = ServerProcess(await procs.start(sys.executable, "-m", "livesrv", "--self-signed"))
    await wait_until(lambda: "event=ready" in server.log or server.proc.returncode is not None, 20, "the start")
    assert "event=ready" in server.log, server.log
    pem = tmp_path / "cache" / "livesrv" / "tls" / "self-signed.pem"
    assert "event=tls-self-signed-made" in server.log and pem.is_file()
    assert server.log.count("event=tls-cert-self-signed") == 3 and "for testing only" in server.log
    await procs.start(*publish_rtmps(sample_flv, f"rtmps://127.0.0.1:{server.port('rtmps')}/live/test"))
    assert await probe(procs, f"https://127.0.0.1:{server.port('https')}/live/test.flv", "-tls_verify", "0") == [
        "aac", "h264"]
    _, writer = await tls_connect(server.port("api_https"))
    assert peer_fingerprint(writer) == Pair(pem, pem).fingerprint
    writer.close()
    server.proc.send_signal(signal.SIGHUP)  # a reload reads the defaults and the environment again: TLS stays on
    await wait_until(lambda: "event=reload " in server.log, 10, "the reload")
    await wait_until(lambda: server.log.count("event=tls-reload listener=") == 3, 10, "the certificates reloaded")
    assert "reload-needs-restart" not in server.log, server.log
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.proc.wait(), 15) == 0
