"""The servers the bench can measure: livesrv, and as optional peers nginx-rtmp, Node-Media-Server 4 and SRS.

Each runs as one process in its own process group (so killing the group leaves nothing behind), with a
config written to a temporary directory, on loopback ports that nothing else uses. The process whose CPU is
sampled is the one that serves viewers: livesrv's Python process, nginx with ``master_process off``, node,
SRS (only when a binary is given by path: the bench never builds it).

For the ingest scenario a server can also write HLS (:class:`HlsSpec`): into a directory of the run, with the
server's own default fragment and window unless the run sets a fragment.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import spawn, stop_group

REPO = Path(__file__).resolve().parent.parent
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")  # Debian's libnginx-mod-rtmp
NMS_DIR_NAME = "nms"  # npm prefix under the cache dir: <cache>/nms/node_modules/node-media-server

SERVERS = ("livesrv", "nginx-rtmp", "nms", "srs")
#: The play protocols each server has (nginx-rtmp has no HTTP-FLV: its HTTP side only serves HLS/DASH; SRS is
#: started with RTMP only).
SERVER_PROTOS = {"livesrv": ("rtmp", "flv", "rtmps", "https-flv"), "nginx-rtmp": ("rtmp",), "nms": ("rtmp", "flv"),
                 "srs": ("rtmp",)}
#: The play protocols over TLS (livesrv's RTMPS and HTTPS listeners, with a self-signed certificate).
TLS_PROTOS = ("rtmps", "https-flv")
#: The servers that can write HLS here.
HLS_SERVERS = ("livesrv", "nginx-rtmp", "srs")


@dataclass(frozen=True)
class HlsSpec:
    """HLS on, written below ``path``; ``fragment`` seconds (None: the server's default, 10 s for all three)."""

    path: Path
    fragment: float | None = None

    @property
    def effective_fragment(self) -> float:
        return 10.0 if self.fragment is None else self.fragment


class ServerUnavailable(RuntimeError):
    """The server is not installed here (the optional peers), or it did not start."""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    rtmp_port: int
    http_port: int | None  # None: the server has no HTTP-FLV
    log_path: Path
    protos: tuple[str, ...] = field(default=("rtmp",))
    tls_ports: dict[str, int] = field(default_factory=dict)  # "rtmps", "https": the TLS listeners, when on
    workers: int = 1  # livesrv's ``workers N``: a master and N worker processes
    api_port: int | None = None  # livesrv's HTTP API (WHIP/WHEP too), when on

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The processes whose CPU and memory are the server's: the one process, or the master and its workers."""
        if self.workers <= 1:
            return [self.proc.pid]
        return [self.proc.pid, *children(self.proc.pid)]

    def publish_url(self, app: str, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{app}/{stream}"

    def play_url(self, proto: str, app: str, stream: str) -> str:
        if proto == "rtmp":
            return self.publish_url(app, stream)
        if proto in TLS_PROTOS:
            name = "rtmps" if proto == "rtmps" else "https"
            if name not in self.tls_ports:
                raise ServerUnavailable(f"{self.name} does not serve {proto}")
            if proto == "rtmps":
                return f"rtmps://127.0.0.1:{self.tls_ports[name]}/{app}/{stream}"
            return f"https://127.0.0.1:{self.tls_ports[name]}/{app}/{stream}.flv"
        if proto not in self.protos or self.http_port is None:
            raise ServerUnavailable(f"{self.name} does not serve {proto}")
        return f"http://127.0.0.1:{self.http_port}/{app}/{stream}.flv"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        return _tail(self.log_path, n)

    def stop(self) -> None:
        stop_group(self.proc)


def free_port() -> int:
    """A loopback port free right now (for servers that cannot report the port they bound to)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(proc: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerUnavailable(f"exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"port {port} not open after {timeout:g}s:\n{_tail(log_path)}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a livesrv master's workers), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rpartition(b")")[2].split()[1]) == pid:  # field 4: ppid
            out.append(int(entry))
    return sorted(out)


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------- livesrv

_READY = re.compile(r"event=ready (.*)")


def livesrv_command() -> list[str]:
    exe = REPO / ".venv" / "bin" / "livesrv"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "livesrv"]


def livesrv_config(vhost_extra: str = "", global_extra: str = "", tls: Path | None = None) -> str:
    """``tls``: a PEM file (key and certificate) for an RTMPS and an HTTPS listener beside the plain ones."""
    https = rtmps = ""
    if tls is not None:
        https = f"https {{ enabled on; listen 127.0.0.1:0; key {tls}; cert {tls}; }}"
        rtmps = f"rtmps {{ enabled on; listen 127.0.0.1:0; key {tls}; cert {tls}; }}"
    return f"""# written by bench/run.py
listen              127.0.0.1:0;
max_connections     100000;
srs_log_tank        console;
srs_log_level       trace;
http_server {{
    enabled on;
    listen  127.0.0.1:0;
    dir     ./html;
    {https}
}}
{rtmps}
{global_extra}
vhost __defaultVhost__ {{
    http_remux {{
        enabled on;
        mount   [vhost]/[app]/[stream].flv;
    }}
    {vhost_extra}
}}
"""


def livesrv_hls(hls: HlsSpec) -> str:
    """livesrv's defaults (``hls_fragment 10``, ``hls_window 60``...) with ``hls_path`` set."""
    fragment = "" if hls.fragment is None else f" hls_fragment {hls.fragment:g};"
    return f"hls {{ enabled on; hls_path {hls.path};{fragment} }}"


def start_livesrv(workdir: Path, vhost_extra: str = "", global_extra: str = "", timeout: float = 20.0,
                  hls: HlsSpec | None = None, tls: Path | None = None, workers: int = 1) -> Server:
    """Start ``livesrv -c <config>`` on ports 0 and read the ports it bound from its ``event=ready`` line.
    ``workers`` > 1: a master and its workers, on ports chosen here (the workers share them: not port 0),
    ready when every worker said so."""
    if hls is not None:
        hls.path.mkdir(parents=True, exist_ok=True)
        vhost_extra = f"{vhost_extra}\n    {livesrv_hls(hls)}"
    conf = workdir / "livesrv.conf"
    text = livesrv_config(vhost_extra, global_extra, tls)
    if workers > 1:
        if tls is not None:
            raise ServerUnavailable("the bench runs livesrv's workers without TLS")
        text = text.replace("listen              127.0.0.1:0;", f"listen 127.0.0.1:{free_port()}; workers {workers};")
        text = text.replace("listen  127.0.0.1:0;", f"listen 127.0.0.1:{free_port()};")
    conf.write_text(text)
    (workdir / "html").mkdir(exist_ok=True)
    log_path = workdir / "livesrv.log"
    proc = spawn([*livesrv_command(), "-c", str(conf)], log_path, workdir)
    deadline = time.monotonic() + timeout
    try:
        while True:
            text = log_path.read_text(errors="replace")
            match = _READY.search(text)
            if match and len(_READY.findall(text)) >= workers:
                ports = {k: int(v.split(",")[0].rsplit(":", 1)[1])
                         for k, v in (kv.split("=", 1) for kv in match.group(1).split())}
                return Server("livesrv", proc, ports["rtmp"], ports.get("http"), log_path, SERVER_PROTOS["livesrv"],
                              {k: v for k, v in ports.items() if k in ("rtmps", "https")}, workers,
                              ports.get("api"))
            if proc.poll() is not None:
                raise ServerUnavailable(f"livesrv exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"livesrv not ready after {timeout:g}s:\n{_tail(log_path)}")
            time.sleep(0.05)
    except BaseException:
        stop_group(proc)
        raise


# ---------------------------------------------------------------------------------------- nginx-rtmp


def nginx_hls(hls: HlsSpec) -> str:
    """nginx-rtmp's HLS as SRS's and livesrv's defaults: 10 s fragments, a 60 s playlist."""
    return (f"hls on;\n            hls_path {hls.path};\n"
            f"            hls_fragment {round(hls.effective_fragment * 1000)}ms;\n            hls_playlist_length 60s;")


def nginx_config(workdir: Path, rtmp_port: int, hls: HlsSpec | None = None, connections: int = 100000) -> str:
    load = f"load_module {NGINX_RTMP_MODULE};\n" if NGINX_RTMP_MODULE.exists() else ""
    hls_lines = f"\n            {nginx_hls(hls)}" if hls is not None else ""
    return f"""# written by bench/run.py: one process serves everything, as measured in the targets
{load}daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {connections};
error_log {workdir}/nginx-error.log warn;
pid {workdir}/nginx.pid;
events {{
    worker_connections {connections};
}}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        application live {{
            live on;{hls_lines}
        }}
    }}
}}
"""


def start_nginx_rtmp(workdir: Path, timeout: float = 20.0, hls: HlsSpec | None = None,
                     connections: int = 100000) -> Server:
    """nginx with libnginx-mod-rtmp (``apt-get install -y nginx libnginx-mod-rtmp``); RTMP only (and HLS).

    nginx allocates and touches its ``worker_connections`` connection structures at start (~0.4 KiB each:
    ~40 MiB of RSS for the fan-out's 100000), so the ingest scenario, which needs few, asks for fewer."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        raise ServerUnavailable("nginx is not installed: apt-get install -y nginx libnginx-mod-rtmp")
    if not NGINX_RTMP_MODULE.exists():
        raise ServerUnavailable(f"{NGINX_RTMP_MODULE} missing: apt-get install -y libnginx-mod-rtmp")
    port = free_port()
    if hls is not None:
        hls.path.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port, hls, connections))
    log_path = workdir / "nginx.log"
    proc = spawn([nginx, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf)],
                 log_path, workdir)
    try:
        wait_port(proc, port, timeout, log_path)
    except BaseException:
        stop_group(proc)
        raise
    return Server("nginx-rtmp", proc, port, None, log_path, ("rtmp",))


# ----------------------------------------------------------------------------------------------- NMS

_NMS_SCRIPT = """// written by bench/run.py
const NodeMediaServer = require(process.argv[2]);
const nms = new NodeMediaServer({
  bind: "127.0.0.1",
  rtmp: { port: Number(process.argv[3]) },
  http: { port: Number(process.argv[4]) },
  auth: { play: false, publish: false },
  notify: { url: "" },
});
nms.run();
"""


def nms_module(cache_dir: Path) -> Path:
    return cache_dir / NMS_DIR_NAME / "node_modules" / "node-media-server"


def start_nms(workdir: Path, cache_dir: Path, timeout: float = 20.0) -> Server:
    """Node-Media-Server 4 (``npm install --prefix bench/.cache/nms node-media-server@4``); RTMP and HTTP-FLV."""
    node = shutil.which("node")
    module = nms_module(cache_dir)
    if node is None:
        raise ServerUnavailable("node is not installed: apt-get install -y nodejs npm")
    if not module.exists():
        raise ServerUnavailable(f"node-media-server not found at {module}: "
                                f"npm install --prefix {cache_dir / NMS_DIR_NAME} node-media-server@4")
    rtmp_port, http_port = free_port(), free_port()
    script = workdir / "nms.js"
    script.write_text(_NMS_SCRIPT)
    log_path = workdir / "nms.log"
    proc = spawn([node, str(script), str(module), str(rtmp_port), str(http_port)], log_path, workdir)
    try:
        wait_port(proc, rtmp_port, timeout, log_path)
        wait_port(proc, http_port, timeout, log_path)
    except BaseException:
        stop_group(proc)
        raise
    return Server("nms", proc, rtmp_port, http_port, log_path, ("rtmp", "flv"))


# ----------------------------------------------------------------------------------------------- SRS


def srs_config(workdir: Path, rtmp_port: int, hls: HlsSpec | None = None, connections: int = 100000) -> str:
    """A minimal SRS config: RTMP on loopback, one process in the foreground, HLS with SRS's defaults."""
    hls_block = ""
    if hls is not None:
        fragment = "" if hls.fragment is None else f"\n        hls_fragment    {hls.fragment:g};"
        hls_block = f"""
    hls {{
        enabled         on;
        hls_path        {hls.path};{fragment}
    }}"""
    return f"""# written by bench/run.py
listen              127.0.0.1:{rtmp_port};
max_connections     {connections};
daemon              off;
srs_log_tank        console;
pid                 {workdir}/srs.pid;
ff_log_dir          {workdir};
vhost __defaultVhost__ {{{hls_block}
}}
"""


def start_srs(workdir: Path, binary: Path | None, timeout: float = 20.0, hls: HlsSpec | None = None,
              connections: int = 100000) -> Server:
    """SRS from a binary given by path (``--srs-binary``); never built or downloaded by the bench."""
    if binary is None:
        raise ServerUnavailable("srs: give the path of an SRS binary with --srs-binary (the bench never builds it)")
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ServerUnavailable(f"srs: {binary} is not an executable file")
    port = free_port()
    if hls is not None:
        hls.path.mkdir(parents=True, exist_ok=True)
    conf = workdir / "srs.conf"
    conf.write_text(srs_config(workdir, port, hls, connections))
    log_path = workdir / "srs.log"
    proc = spawn([str(binary), "-c", str(conf)], log_path, workdir)
    try:
        wait_port(proc, port, timeout, log_path)
    except BaseException:
        stop_group(proc)
        raise
    return Server("srs", proc, port, None, log_path, ("rtmp",))


def start_server(name: str, workdir: Path, cache_dir: Path, vhost_extra: str = "", *,
                 hls: HlsSpec | None = None, srs_binary: Path | None = None, connections: int = 100000,
                 tls: bool = False, workers: int = 1) -> Server:
    """Start ``name``; ``connections`` sizes the peers' connection tables (livesrv's is not preallocated);
    ``tls``: livesrv also listens for RTMPS and HTTPS, with a self-signed certificate kept in ``cache_dir``;
    ``workers``: livesrv's ``workers N``."""
    if hls is not None and name not in HLS_SERVERS:
        raise ServerUnavailable(f"{name}: the bench does not configure HLS for it")
    if tls and name != "livesrv":
        raise ServerUnavailable(f"{name}: the bench measures TLS on livesrv only")
    if name == "livesrv":
        pem = None
        if tls:
            from livesrv.servers.tls import self_signed

            pem = Path(self_signed(str(cache_dir / "tls")))
        return start_livesrv(workdir, vhost_extra, hls=hls, tls=pem, workers=workers)
    if name == "nginx-rtmp":
        return start_nginx_rtmp(workdir, hls=hls, connections=connections)
    if name == "nms":
        return start_nms(workdir, cache_dir)
    if name == "srs":
        return start_srs(workdir, srs_binary, hls=hls, connections=connections)
    raise ValueError(f"unknown server {name!r}: one of {', '.join(SERVERS)}")
