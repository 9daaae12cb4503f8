"""Logging set-up and the one-line-per-client-event format operators grep for.

Every client event is one line: ``event=<what> client=<cid> ip=<ip> stream=<vhost/app/stream> reason=<why>``.
Library modules only get loggers; only :func:`setup` (called by the CLI) configures handlers and levels.
"""

from __future__ import annotations

import logging
import sys

LEVELS = {
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
    "trace": logging.INFO,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

FORMAT = "[%(asctime)s][%(levelname)s][%(name)s] %(message)s"


def setup(level: str = "trace", tank: str = "console", file: str | None = None) -> None:
    root = logging.getLogger("livesrv")
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler: logging.Handler
    if tank == "file" and file:
        handler = logging.FileHandler(file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.propagate = False


def _quote(v: object) -> str:
    s = str(v)
    if not s or any(c in s for c in ' "='):
        return '"' + s.replace('"', "'") + '"'
    return s


def client_event(
    logger: logging.Logger,
    event: str,
    cid: str,
    ip: str,
    stream: object = "",
    reason: str = "",
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """Log one client event on one greppable line."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event}", f"client={cid}", f"ip={ip}"]
    if stream:
        parts.append(f"stream={_quote(stream)}")
    for k, v in fields.items():
        parts.append(f"{k}={_quote(v)}")
    if reason:
        parts.append(f"reason={_quote(reason)}")
    logger.log(level, " ".join(parts))
