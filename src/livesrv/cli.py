"""``livesrv`` command line, with SRS's flags: ``-c FILE``, ``-e`` (environment only), ``-t`` (check config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys

from livesrv import __version__, log as logsetup
from livesrv.config import ConfigError, load_config

log = logging.getLogger("livesrv.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livesrv", description="Live-streaming media server (RTMP, HTTP-FLV), SRS compatible. "
                                "SIGHUP re-reads the config file; SIGQUIT quits gracefully, SIGTERM and SIGINT at once.")
    p.add_argument("-c", "--conf", metavar="FILE", help="SRS-style config file (default: embedded defaults)")
    p.add_argument("-e", "--env", action="store_true", help="configure from SRS_* environment variables only, no file")
    p.add_argument("-t", "--test", action="store_true", help="check the config (and the TLS listeners' files) and exit")
    p.add_argument("--self-signed", action="store_true",
                   help="FOR TESTING ONLY: serve every TLS listener with a self-signed certificate made for this "
                        "machine (kept in ~/.cache/livesrv/tls) instead of its key and cert files; without -c, also "
                        "turns on HTTPS (:8088), the API over HTTPS (:1990) and RTMPS (:1443). Browsers and players "
                        "refuse such a certificate unless told to trust it")
    p.add_argument("-v", "-V", "--version", action="version", version=f"livesrv {__version__}")
    # Set by the master of ``workers N`` (livesrv/master.py) for each worker it starts; not for operators.
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--registry", default=None, help=argparse.SUPPRESS)
    p.add_argument("--master-fd", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _reload(app) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP: re-read the config file and apply it; a bad file is logged and changes nothing."""
    try:
        app.reload()
    except ConfigError as exc:
        log.error("event=reload-failed reason=%r", str(exc))
    except Exception:  # a reload bug must never stop a serving process
        log.exception("event=reload-failed")


class _Quit:
    """SRS's signals: SIGINT and SIGTERM quit fast (every client closed at once, files finished), SIGQUIT
    quits gracefully (see :meth:`livesrv.app.App.graceful_stop`), as SIGTERM does with ``force_grace_quit``.
    A signal during a graceful quit makes it fast."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.requested = asyncio.Event()
        self.graceful = False
        self.force = asyncio.Event()
        self.signal = ""

    def on_signal(self, sig: signal.Signals) -> None:
        if self.requested.is_set():
            log.info("event=shutdown-forced signal=%s", sig.name)
            self.force.set()
            return
        self.signal = sig.name
        self.graceful = sig == signal.SIGQUIT or (sig == signal.SIGTERM and self.app.config.force_grace_quit)
        self.requested.set()


def _watch_master(fd: int, quit_: _Quit, registry: str | None) -> None:
    """(a worker) The master holds the write end of this pipe: EOF means it is gone (even by SIGKILL), and a
    worker without its master (nobody restarts it, the registry died with the master) quits. The registry's
    private directory, which a killed master could not remove, goes too (whichever worker gets there first)."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        loop.remove_reader(fd)
        log.error("event=master-gone reason=%s", logsetup.quote("the master process exited"))
        if registry is not None and registry.startswith("livesrv+unix://"):
            directory = os.path.dirname(registry[len("livesrv+unix://"):])
            if os.path.basename(directory).startswith("livesrv-workers-"):  # (only the master's own mkdtemp)
                shutil.rmtree(directory, ignore_errors=True)
        quit_.on_signal(signal.SIGTERM)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


async def _serve(app, master_fd: int | None = None, registry: str | None = None) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    quit_ = _Quit(app)
    if master_fd is not None:
        _watch_master(master_fd, quit_, registry)
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGQUIT", None)):
        if sig is None:
            continue
        try:
            loop.add_signal_handler(sig, quit_.on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        loop.add_signal_handler(signal.SIGHUP, _reload, app)
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP (Windows)
        pass
    await app.start()
    try:
        await quit_.requested.wait()
    finally:
        log.info("event=shutdown reason=signal signal=%s graceful=%s", quit_.signal or "-", quit_.graceful)
        if quit_.graceful:
            await app.graceful_stop(quit_.force)
        else:
            await app.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker is not None:
        logsetup.set_process_tag(f"w{args.worker}")
    logsetup.setup()  # so that config warnings (logged by the loader) reach stderr in the standard format
    if args.self_signed and (args.env or not args.conf):
        # The embedded defaults have no TLS listener: turn them on (the environment, if it says, wins). Set in the
        # environment, so that a reload (which reads the defaults and the environment again) keeps them.
        for name in ("SRS_HTTP_SERVER_HTTPS_ENABLED", "SRS_HTTP_API_HTTPS_ENABLED", "SRS_RTMPS_ENABLED"):
            os.environ.setdefault(name, "on")
    try:
        result = load_config(None if args.env else args.conf, env_only=args.env)
    except ConfigError as exc:
        print(f"livesrv: config error: {exc}", file=sys.stderr)
        return 1
    cfg = result.config
    from livesrv.servers import tls

    if args.test:
        problems = [] if args.self_signed else tls.check_files(cfg)
        for problem in problems:
            print(f"livesrv: TLS error: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"livesrv: the configuration {args.conf or '(embedded defaults)'} syntax is ok and test is successful")
        return 0
    logsetup.setup(cfg.srs_log_level, cfg.srs_log_tank, cfg.srs_log_file)
    if cfg.workers > 1 and args.worker is None:
        from livesrv.master import run_master

        logsetup.set_process_tag("master")
        logsetup.setup(cfg.srs_log_level, cfg.srs_log_tank, cfg.srs_log_file)
        return run_master(cfg, _passed_on(argv if argv is not None else sys.argv[1:]))
    from livesrv.app import App, WorkerRole

    try:
        import uvloop  # a default dependency on Linux: about twice asyncio's throughput on sockets
    except ImportError:
        uvloop = None
    try:
        self_signed = tls.self_signed(names=_listen_hosts(cfg)) if args.self_signed else None
        worker = WorkerRole(args.worker, args.registry or "") if args.worker is not None else None
        app = App(cfg, config_path=None if args.env else args.conf, self_signed=self_signed, worker=worker)
    except tls.TlsError as exc:  # a missing, unreadable or mismatched key or certificate
        log.error("event=fatal reason=%s", logsetup.quote(f"TLS: {exc}"))
        print(f"livesrv: TLS error: {exc}", file=sys.stderr)
        return 1
    try:
        if uvloop is not None:
            uvloop.run(_serve(app, args.master_fd, args.registry))
        else:
            asyncio.run(_serve(app, args.master_fd, args.registry))
    except OSError as exc:
        log.error("event=fatal reason=%r", str(exc))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _passed_on(argv: list[str]) -> list[str]:
    """The master's arguments its workers get too (the config source, --self-signed): all of them, since the
    master never has the hidden worker flags."""
    return list(argv)


def _listen_hosts(cfg) -> list[str]:  # type: ignore[no-untyped-def]
    """The specific addresses the TLS listeners are bound to (a self-signed certificate names them too)."""
    from livesrv.servers.tls import tls_blocks

    return [ep.host for block in tls_blocks(cfg).values() if block.enabled for ep in block.listen]


if __name__ == "__main__":
    sys.exit(main())
