"""``workers 2`` on one host, no Redis: a real ``livesrv`` master process and its two workers on OS-chosen
ports; ffmpeg publishes, HTTP-FLV, RTMP (ffprobe) and HLS viewers land on either worker (the kernel spreads the
connections over the shared ports); the publisher killed and republished; the worker owning the stream
SIGKILLed (restarted by the master, a republish accepted at once); the API answering for the host; SIGTERM
stopping everything, and workers quitting when their master is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from livesrv.clients.rtmp import RtmpClient
from livesrv.codec.hls_playlist import MediaPlaylist, parse_media_playlist
from livesrv.codec.rtmp import messages as m
from livesrv.config import ConfigError, load_config
from tests.clients.test_cluster import probe
from tests.helpers import FlvViewer, Procs, ffmpeg_publish_args, free_port, parse_event, wait_until, LOG_LINE

STREAM = "/live/test"


class WorkersServer:
    """``livesrv -c CONF`` with ``workers 2``: the master's and the workers' log lines (one stderr), their pids."""

    def __init__(self, procs: Procs, tmp: Path, vhost_extra: str = "", top_extra: str = "") -> None:
        self.procs = procs
        self.rtmp, self.http, self.api = free_port(), free_port(), free_port()
        self.hls = tmp / "hls"
        self.conf = tmp / "workers.conf"
        self.conf.write_text(f"""listen 127.0.0.1:{self.rtmp}; srs_log_tank console; workers 2; max_connections 200;
            {top_extra}
            http_server {{ enabled on; listen 127.0.0.1:{self.http}; dir {tmp}; }}
            http_api {{ enabled on; listen 127.0.0.1:{self.api}; }}
            vhost __defaultVhost__ {{
                http_remux {{ enabled on; mount [vhost]/[app]/[stream].flv; }}
                hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {self.hls}; }}
                play {{ mw_latency 100; }}
                {vhost_extra}
            }}""")
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, str]] = []
        self.lines: list[str] = []  # (every line, for a failing test's report)
        self.malformed: list[str] = []  # event lines that do not parse
        self._reader: asyncio.Task[None] | None = None

    async def spawn(self) -> None:
        self.proc = await self.procs.start(sys.executable, "-m", "livesrv", "-c", str(self.conf))
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def start(self) -> None:
        await self.spawn()
        await self.wait_event("ready", 2, timeout=30)
        # Every line says which process of the host wrote it.
        assert sorted(e["_by"] for e in self.named("ready")) == ["w0", "w1"]
        assert [e["_by"] for e in self.named("master-start")] == ["master"]

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            m = LOG_LINE.fullmatch(line)
            if m is not None and m["message"].startswith("event="):
                try:
                    self.events.append({**parse_event(m["message"]), "_by": m["process"] or ""})
                except AssertionError:
                    self.malformed.append(line)  # (checked by the tests: the reading goes on)

    def named(self, name: str, **fields: str) -> list[dict[str, str]]:
        return [e for e in self.events if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]

    async def wait_event(self, name: str, count: int = 1, timeout: float = 20, **fields: str) -> None:
        try:
            await wait_until(lambda: len(self.named(name, **fields)) >= count, timeout,
                             f"{count} x event={name} {fields}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last lines:\n" + "\n".join(self.lines[-40:])) from None

    def worker_pids(self) -> set[int]:
        """Every worker process the master started (for the teardown and the stray-process checks)."""
        return {int(e["pid"]) for e in self.named("worker-start")}

    async def api_get(self, path: str) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.api}{path}") as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

    async def stream(self) -> dict | None:
        streams = (await self.api_get("/api/v1/streams"))["streams"]
        return next((s for s in streams if s["url"] == STREAM), None)

    async def kill_all(self) -> None:
        """(teardown) The master and every worker it started, whatever state the test left them in: SIGTERM to
        the master (which stops its workers and removes the registry's directory), SIGKILL for what is left."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for pid in self.worker_pids():
            _kill(pid)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie not reaped by its parent is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
async def workers(procs: Procs, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    started: list[WorkersServer] = []

    async def start(vhost_extra: str = "", ready: bool = True, top_extra: str = "") -> WorkersServer:
        server = WorkersServer(procs, tmp_path, vhost_extra, top_extra)
        started.append(server)
        if ready:  # (else the test spawns it, after changing its config)
            await server.start()
        return server

    yield start
    for server in started:
        await server.kill_all()


def flv_url(w: WorkersServer) -> str:
    return f"http://127.0.0.1:{w.http}{STREAM}.flv"


async def hls_get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    """One request on a new connection (so that the kernel picks a worker each time), redirects not followed."""
    async with session.get(url, headers={"Connection": "close"}, allow_redirects=False) as resp:
        return resp.status, await resp.read()


def on_disk(w: WorkersServer) -> MediaPlaylist:
    """The stream's playlist as the owner wrote it."""
    return parse_media_playlist((w.hls / "live" / "test.m3u8").read_text())


async def spread(w: WorkersServer, viewers: list[FlvViewer], at_least: int) -> dict:
    """Add HTTP-FLV viewers (each playing) until there are ``at_least`` and both workers serve some (the
    owner's viewers also count the other worker's pull: the API's clients say which are HTTP-FLV); the host's
    stream entry then."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        s = await w.stream()
        assert s is not None
        flv = {c["worker"] for c in (await w.api_get("/api/v1/clients"))["clients"]
               if c["protocol"] == "flv" and c["kind"] == "viewer"}
        if len(viewers) >= at_least and flv == {"w0", "w1"} and len(s["workers"]) == 2:
            return s
        assert asyncio.get_running_loop().time() < deadline, f"the viewers never spread: {s['workers']}"
        viewers.append(FlvViewer(flv_url(w)).start())
        await wait_until(lambda: viewers[-1].keyframes_after(0) >= 1, 20, "video on a new viewer")


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.e2e
async def test_two_workers_publish_play_everywhere_republish_and_a_worker_killed(
    workers, procs: Procs, sample_flv: Path  # type: ignore[no-untyped-def]
) -> None:
    w: WorkersServer = await workers()
    pub = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    await w.wait_event("cluster-claim", 1)

    # HTTP-FLV viewers on the shared port until both workers serve some: one of them pulls from the owner.
    viewers: list[FlvViewer] = []
    loop = asyncio.get_running_loop()
    s = await spread(w, viewers, 4)
    owner = s["worker"]
    pulled = [x for x in s["workers"] if x["pulled"]]
    assert len(pulled) == 1 and pulled[0]["worker"] != owner, s["workers"]  # one pull, by the other worker
    assert s["publish"]["active"] and s["clients"] == sum(x["clients"] for x in s["workers"])
    # The API answers for the host: each viewer is in the merged client list, with its worker.
    clients = (await w.api_get("/api/v1/clients"))["clients"]
    by_worker = {c["worker"] for c in clients if c["kind"] == "viewer" and c["protocol"] == "flv"}
    assert by_worker == {"w0", "w1"}
    summary = (await w.api_get("/api/v1/summaries"))["data"]
    pids = {x["worker"]: x["pid"] for x in summary["workers"]}
    assert set(pids) == {"w0", "w1"} and set(pids.values()) == w.worker_pids()
    # A client's id is answered by any worker (passed to the one that has it); DELETE kicks it there.
    victim = next(c for c in clients if c["kind"] == "viewer" and c["protocol"] == "flv" and c["worker"] != owner)
    for _ in range(4):
        assert (await w.api_get(f"/api/v1/clients/{victim['id']}"))["client"]["worker"] == victim["worker"]
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"http://127.0.0.1:{w.api}/api/v1/clients/{victim['id']}") as resp:
            assert resp.status == 200, await resp.text()
    await wait_until(lambda: any(v.ended.is_set() for v in viewers), 10, "the kicked viewer's end")
    viewers = [v for v in viewers if not v.ended.is_set()]
    assert len(viewers) >= 3

    # RTMP viewers until one is on the worker that pulls (the owner's RTMP viewers include that pull): it plays.
    rtmp_viewers: list[tuple[RtmpClient, list[int]]] = []
    other = pulled[0]["worker"]
    while True:
        got: list[int] = []
        client = await RtmpClient.connect(f"rtmp://127.0.0.1:{w.rtmp}{STREAM}", timeout=10,
                                          on_media=lambda msg, got=got: got.append(msg.type_id))
        await client.play(timeout=10)
        rtmp_viewers.append((client, got))
        ids = {c["id"] for c in (await w.api_get("/api/v1/clients"))["clients"]
               if c["worker"] == other and c["protocol"] == "rtmp" and c["kind"] == "viewer"}
        if ids:
            break
        assert len(rtmp_viewers) < 12, "no RTMP viewer ever landed on the worker that pulls"
    await wait_until(lambda: m.VIDEO in got and m.AUDIO in got, 20, "media on the RTMP viewer of the other worker")
    for client, _ in rtmp_viewers:
        await client.close()

    # RTMP (ffprobe) from either worker, and HLS: written once by the owner, served by every worker.
    assert await probe(procs, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}") == {"h264", "aac"}
    assert await probe(procs, f"http://127.0.0.1:{w.http}{STREAM}.m3u8") == {"h264", "aac"}
    # The owner answers a playlist without hls_ctx with its session's redirect (302); the other worker serves
    # the file from disk (200): fresh connections until both answered, each with a segment that plays.
    seen: set[int] = set()
    hls_deadline = loop.time() + 30
    async with aiohttp.ClientSession() as session:
        while seen != {200, 302}:
            assert loop.time() < hls_deadline, f"HLS answered only with {seen}"
            status, body = await hls_get(session, f"http://127.0.0.1:{w.http}{STREAM}.m3u8")
            seen.add(status)
            assert status in (200, 302), (status, body[:100])
            if status == 302:
                continue
            assert body.startswith(b"#EXTM3U"), body[:100]
            segment = body.decode().split()[-1]
            status, data = await hls_get(session, f"http://127.0.0.1:{w.http}/live/{segment}")
            assert status == 200 and data[:1] == b"\x47", (segment, status)
        status, _ = await hls_get(session, f"http://127.0.0.1:{w.http}/live/.{segment}")
        assert status == 404  # (hidden names: parts and temporaries, never served from disk)
    assert len([e for e in w.named("hls-live")]) == 1  # one writer: the owner

    # The publisher killed and republished (on whichever worker): every viewer goes on, on its connection, and
    # the playlist goes on (never back), whichever worker writes it now.
    seen = [len(v.tags) for v in viewers]
    before = on_disk(w)
    pub.kill()
    await pub.wait()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    await w.wait_event("cluster-claim", 2)
    await wait_until(lambda: all(v.keyframes_after(n) >= 1 for v, n in zip(viewers, seen)), 30,
                     "video again on every viewer")
    assert all(v.error is None and not v.ended.is_set() for v in viewers)
    last = before.media_sequence + len(before.segments) - 1
    await wait_until(lambda: on_disk(w).media_sequence + len(on_disk(w).segments) - 1 > last + 1, 20,
                     "new segments in the playlist")
    assert on_disk(w).media_sequence >= before.media_sequence

    # SIGKILL the worker owning the stream: the master starts it again; a republish is accepted at once.
    s = await spread(w, viewers, len(viewers))  # (the kick above may have left the other worker without any)
    owner = s["worker"]
    summary = (await w.api_get("/api/v1/summaries"))["data"]
    pid = next(int(x["pid"]) for x in summary["workers"] if x["worker"] == owner)
    os.kill(pid, signal.SIGKILL)
    index = owner[1:]
    await w.wait_event("worker-exit", 1, worker=index, pid=str(pid))
    killed = loop.time()
    claims = len(w.named("cluster-claim"))
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    await w.wait_event("cluster-claim", claims + 1, timeout=10)
    assert loop.time() - killed < 5, "the republish waited for the dead worker's claim to expire"
    assert w.named("worker-stream-released", worker=index, stream="__defaultVhost__/live/test")
    await w.wait_event("worker-start", 3)  # the two at start, and the restarted one
    new_pid = int(w.named("worker-start", worker=index)[-1]["pid"])
    assert new_pid != pid
    await w.wait_event("ready", 3)
    # The viewers on the worker that survived go on.
    survivors = [v for v in viewers if not v.ended.is_set()]
    assert survivors, "every viewer was on the killed worker"
    seen = [len(v.tags) for v in survivors]
    await wait_until(lambda: all(v.keyframes_after(n) >= 1 for v, n in zip(survivors, seen)), 30,
                     "video again on the surviving viewers")
    summary = (await w.api_get("/api/v1/summaries"))["data"]
    assert new_pid in {x["pid"] for x in summary["workers"]} and pid not in {x["pid"] for x in summary["workers"]}
    assert not w.malformed
    for v in viewers:
        await v.close()


@pytest.mark.e2e
async def test_without_takeover_a_dead_workers_stream_is_free_at_once(
    workers, procs: Procs, sample_flv: Path  # type: ignore[no-untyped-def]
) -> None:
    """``takeover off``: a republish is refused while the owner lives, and accepted at once once the master
    reaped the owner (its claims dropped then, not when their TTL runs out)."""
    w: WorkersServer = await workers("publish { takeover off; }")
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    await w.wait_event("cluster-claim", 1)
    owner = w.named("cluster-claim")[0]["node"]
    refused = await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    assert await asyncio.wait_for(refused.wait(), 20) != 0  # (whichever worker it landed on: the owner lives)
    pid = next(int(e["pid"]) for e in w.named("worker-start") if e["worker"] == owner[1:])
    os.kill(pid, signal.SIGKILL)
    await w.wait_event("worker-stream-released", 1, worker=owner[1:])
    killed = asyncio.get_running_loop().time()
    await procs.start(*ffmpeg_publish_args(sample_flv, f"rtmp://127.0.0.1:{w.rtmp}{STREAM}"))
    await w.wait_event("cluster-claim", 2, timeout=10)
    assert asyncio.get_running_loop().time() - killed < 5  # (the TTL is 10 s)
    assert not w.malformed


@pytest.mark.e2e
async def test_sigterm_stops_every_worker_and_a_dead_master_takes_them_along(workers) -> None:  # type: ignore[no-untyped-def]
    w: WorkersServer = await workers()
    pids = w.worker_pids()
    assert w.proc is not None
    w.proc.send_signal(signal.SIGHUP)  # passed on: every worker reloads
    await w.wait_event("reload", 2)
    registry = w.named("master-start")[0]["registry"]
    sock_dir = Path(registry.removeprefix("livesrv+unix://")).parent
    assert len(pids) == 2 and all(_alive(p) for p in pids) and sock_dir.is_dir()
    assert w.proc is not None
    w.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(w.proc.wait(), 30) == 0
    assert not any(_alive(p) for p in pids), "a worker outlived its master's SIGTERM"
    assert not sock_dir.exists()
    assert len(w.named("worker-exit")) == 2 and all(e.get("reason") == "stopping" for e in w.named("worker-exit"))

    # A master that dies (SIGKILL: no goodbye): its workers notice and quit.
    w2: WorkersServer = await workers()
    pids2 = w2.worker_pids()
    assert w2.proc is not None
    w2.proc.kill()
    await w2.proc.wait()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while any(_alive(p) for p in pids2):
        assert loop.time() < deadline, "a worker outlived its master"
        await asyncio.sleep(0.05)
    sock_dir2 = Path(w2.named("master-start")[0]["registry"].removeprefix("livesrv+unix://")).parent
    assert not sock_dir2.exists()  # (removed by a worker: the master could not)


@pytest.mark.e2e
async def test_sigquit_is_a_graceful_quit_of_every_worker(workers) -> None:  # type: ignore[no-untyped-def]
    """SIGQUIT to the master: each worker gets it once and quits gracefully (SRS's waits, short here); the
    master waits for them and exits 0."""
    w: WorkersServer = await workers(top_extra="grace_start_wait 200; grace_final_wait 100;")
    pids = w.worker_pids()
    assert w.proc is not None
    w.proc.send_signal(signal.SIGQUIT)
    assert await asyncio.wait_for(w.proc.wait(), 30) == 0
    assert len(w.named("graceful-quit", step="final-wait")) == 2  # (both workers, not forced)
    assert not w.named("graceful-quit", step="forced") and not w.named("worker-kill")
    assert not any(_alive(p) for p in pids)


@pytest.mark.e2e
async def test_workers_that_cannot_start_stop_the_master(workers, procs: Procs) -> None:  # type: ignore[no-untyped-def]
    """The RTMP port is taken (by a socket without SO_REUSEPORT): each worker's first process exits with status
    1, and the master exits with status 1 too (as one process would), instead of restarting them for ever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        w: WorkersServer = await workers(ready=False)
        w.conf.write_text(w.conf.read_text().replace(f"127.0.0.1:{w.rtmp}", f"127.0.0.1:{taken.getsockname()[1]}"))
        await w.spawn()
        assert w.proc is not None
        assert await asyncio.wait_for(w.proc.wait(), 30) == 1
    assert w.named("worker-failed") and not any(_alive(p) for p in w.worker_pids())
    assert len(w.named("worker-start")) <= 2  # (never restarted)


# ------------------------------------------------------------------------------------------- config


def test_workers_directive(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("workers auto;")
    assert load_config(str(conf)).config.workers == (os.cpu_count() or 1)
    conf.write_text("listen 1935;")
    assert load_config(str(conf)).config.workers == 1  # today's single process
    for bad, why in (("workers 0;", "greater than or equal to 1"), ("workers many;", "workers"),
                     ("workers 2; cluster { registry redis://127.0.0.1:6379/0; }", "runs its own registry"),
                     ("workers 2; vhost v { cluster { mode remote; origin 10.0.0.1; } hls { enabled on; } }",
                      "edge vhost"), ("workers 2; listen 127.0.0.1:0;", "listen: workers > 1 share their ports"),
                     ("workers 2; http_api { enabled on; listen 0; }", "http_api: workers > 1")):
        conf.write_text(bad)
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_config(str(conf))


def test_a_worker_runs_the_file_as_a_node_of_the_masters_registry(tmp_path: Path) -> None:
    from livesrv.app import WorkerRole

    conf = tmp_path / "a.conf"
    conf.write_text("workers 2; exporter { enabled on; listen 9972; }")
    cfg = load_config(str(conf)).config
    role = WorkerRole(1, "livesrv+unix:///tmp/x/registry.sock")
    out = role.apply(cfg)
    assert (out.cluster.registry, out.cluster.node_id, out.cluster.advertise) == (role.registry, "w1", "127.0.0.1")
    assert not out.exporter.enabled and WorkerRole(0, role.registry).apply(cfg).exporter.enabled
    assert json.dumps(cfg.model_dump(mode="json"))  # (the file's own config is untouched)
    assert cfg.cluster.registry is None


# ------------------------------------------------------------------------------------------- the host's API


def test_the_hosts_stream_list_is_one_entry_per_stream_as_its_owner_has_it() -> None:
    from livesrv.servers.api.host import merge_streams, merge_summaries, remap_vhost

    owner = {"id": "a", "vhost": "v0", "url": "/live/s", "clients": 3, "viewers": 2, "publish": {"active": True},
             "worker": "w0", "pulled": False}
    pull = {"id": "b", "vhost": "v1", "url": "/live/s", "clients": 4, "viewers": 3, "publish": {"active": True},
            "worker": "w1", "pulled": True}
    other = {"id": "c", "vhost": "v1", "url": "/live/t", "clients": 1, "viewers": 1, "publish": {"active": False},
             "worker": "w1", "pulled": False}
    # (vhost ids are per process: the peer's are mapped to this worker's by name)
    theirs = [remap_vhost(e, {"v1": "__defaultVhost__"}, {"__defaultVhost__": "v0"}) for e in (pull, other)]
    merged = merge_streams([owner], [theirs])
    assert [(e["id"], e["vhost"], e["clients"], e["viewers"]) for e in merged] == [("a", "v0", 7, 5), ("c", "v0", 1, 1)]
    assert [(x["worker"], x["pulled"]) for x in merged[0]["workers"]] == [("w0", False), ("w1", True)]
    # The pull listed first: the owner's entry still leads.
    assert merge_streams([], [theirs, [owner]])[0]["id"] == "a"

    mine = {"self": {"pid": 10, "mem_kbyte": 100, "mem_percent": 0.1, "cpu_percent": 0.2}, "system": {"conn_srs": 5}}
    peer = {"self": {"pid": 11, "mem_kbyte": 50, "mem_percent": 0.05, "cpu_percent": 0.1}, "system": {"conn_srs": 2}}
    s = merge_summaries(mine, "w0", [("w1", peer)])
    assert s["self"]["pid"] == 10 and s["self"]["mem_kbyte"] == 150 and s["system"]["conn_srs"] == 7
    assert [(x["worker"], x["pid"]) for x in s["workers"]] == [("w0", 10), ("w1", 11)]
    assert mine["self"]["mem_kbyte"] == 100  # (not changed in place)
