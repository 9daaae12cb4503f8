"""``livesrv`` command line, with SRS's flags: ``-c FILE``, ``-e`` (environment only), ``-t`` (check config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    p.add_argument("-t", "--test", action="store_true", help="check the config and exit")
    p.add_argument("-v", "-V", "--version", action="version", version=f"livesrv {__version__}")
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


async def _serve(app) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    quit_ = _Quit(app)
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
    logsetup.setup()  # so that config warnings (logged by the loader) reach stderr in the standard format
    try:
        result = load_config(None if args.env else args.conf, env_only=args.env)
    except ConfigError as exc:
        print(f"livesrv: config error: {exc}", file=sys.stderr)
        return 1
    cfg = result.config
    if args.test:
        print(f"livesrv: the configuration {args.conf or '(embedded defaults)'} syntax is ok and test is successful")
        return 0
    logsetup.setup(cfg.srs_log_level, cfg.srs_log_tank, cfg.srs_log_file)
    from livesrv.app import App

    try:
        import uvloop  # a default dependency on Linux: about twice asyncio's throughput on sockets
    except ImportError:
        uvloop = None
    app = App(cfg, config_path=None if args.env else args.conf)
    try:
        if uvloop is not None:
            uvloop.run(_serve(app))
        else:
            asyncio.run(_serve(app))
    except OSError as exc:
        log.error("event=fatal reason=%r", str(exc))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
