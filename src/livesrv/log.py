"""Logging set-up and the one-line-per-event format operators grep for.

Every client event is one line: ``event=<what> client=<cid> ip=<ip> stream=<vhost/app/stream> reason=<why>``.
Library modules only get loggers; only :func:`setup` (called by the CLI) configures handlers and levels.

A log line is one line whatever a client sends: :func:`quote` formats every value of :func:`event` and
:func:`client_event` (quoted, with ``\\``, ``"`` and every non-printable character escaped), so a value can
neither end the line nor add a field; and :class:`LineFormatter` escapes whatever non-printable character
still reaches a message (a ``%s`` somewhere), leaving only tracebacks on lines of their own.
"""

from __future__ import annotations

import errno
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
#: ``workers N``: which process of the host wrote a line (``master``, ``w0``, ``w1``...), after the logger's name;
#: empty for a single process. Set once at start (:func:`set_process_tag`), kept by every later :func:`setup`.
_process_tag = ""


def set_process_tag(tag: str) -> None:
    """Name this process in every line from now on (the workers of one host share a console or a log file)."""
    global _process_tag
    _process_tag = tag

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Characters that make a value need quotes: separators of the ``k=v`` format, and the escape character.
_NEEDS_QUOTES = frozenset(' "=\\')


def _escape_char(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape_nonprintable(text: str) -> str:
    """``text`` with every non-printable character (``str.isprintable``: controls, line and paragraph
    separators, surrogates, unassigned...) as ``\\n``, ``\\r``, ``\\t`` or ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN``;
    the space is kept."""
    if text.isprintable():  # the usual case: nothing to do, at C speed
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or _escape_char(c) for c in text)


def quote(value: object) -> str:
    """One ``k=v`` value: bare when it is plain, else in double quotes with ``\\``, ``"`` and non-printable
    characters backslash-escaped. Whatever ``value`` holds, the result is one field on one line."""
    s = str(value)
    if s and s.isprintable() and _NEEDS_QUOTES.isdisjoint(s):
        return s
    return '"' + "".join(c if c.isprintable() and c not in _ESCAPES else _ESCAPES.get(c) or _escape_char(c)
                         for c in s) + '"'


class LineFormatter(logging.Formatter):
    """The second layer: a message with a non-printable character (a client value interpolated with ``%s``)
    is escaped before it is written, so it stays one line. Tracebacks (``exc_text``, ``stack_info``) are
    appended afterwards by :meth:`logging.Formatter.format` and keep their own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_nonprintable(record.message)
        return super().formatMessage(record)


def setup(level: str = "trace", tank: str = "console", file: str | None = None) -> None:
    root = logging.getLogger("livesrv")
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler: logging.Handler
    if tank == "file" and file:
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(FORMAT.replace("] ", f"][{_process_tag}] ", 1) if _process_tag else FORMAT))
    root.addHandler(handler)
    root.propagate = False


def event(logger: logging.Logger, name: str, /, level: int = logging.INFO, *,
          exc_info: bool | BaseException = False, **fields: object) -> None:
    """Log one event on one greppable line: ``event=<name> k=v ...``, every value through :func:`quote`."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={name}"]
    parts.extend(f"{k}={quote(v)}" for k, v in fields.items())
    logger.log(level, " ".join(parts), exc_info=exc_info)


def client_event(
    logger: logging.Logger,
    event_name: str,
    cid: str,
    ip: str,
    stream: object = "",
    reason: str = "",
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """Log one client event on one greppable line (``stream`` only when known, ``reason`` last)."""
    if not logger.isEnabledFor(level):
        return
    head: dict[str, object] = {"client": cid, "ip": ip}
    if stream:
        head["stream"] = stream
    tail: dict[str, object] = {"reason": reason} if reason else {}
    event(logger, event_name, level, **head, **fields, **tail)


def describe_error(exc: BaseException) -> str:
    """An error as one line that names its errno (``ENOSPC No space left on device``), so that a full disk or a
    refused permission can be grepped for; other exceptions as ``str()``."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    if name is None:
        return str(exc) or type(exc).__name__
    text = f"{name} {getattr(exc, 'strerror', None) or exc}"
    filename = getattr(exc, "filename", None)
    return f"{text}: {filename}" if filename else text
