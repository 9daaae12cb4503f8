"""Limits shared by every listener: one connection budget, rate-limited reject lines, the open-file limit.

``max_connections`` bounds the file descriptors clients can take, so it must count every listener's
connections (RTMP, HTTP, WebSocket, API, exporter): a limit per listener would let an attack on one port
exhaust descriptors the others need. Past the limit a new connection is aborted at once; logging every
rejection would let the same attack flood the log, so at most one line per :data:`REJECT_LOG_INTERVAL`
is written, with the number of rejections left unlogged since the previous line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("livesrv.limits")

#: Seconds between two ``event=reject`` lines; the rejections in between are counted, not logged.
REJECT_LOG_INTERVAL = 1.0

#: Descriptors the process needs beyond one per client (listening sockets, log and HLS files, hook sockets
#: besides ``hooks_max_concurrent``, the event loop's own): the open-file limit should be at least
#: ``max_connections + FD_MARGIN + hooks_max_concurrent``.
FD_MARGIN = 64


class ConnectionBudget:
    """Open connections of all listeners against ``max_connections``.

    A listener calls :meth:`try_acquire` when a connection is accepted and :meth:`release` exactly once when
    an accepted connection closes; a refused one calls :meth:`reject` (and is never released).
    """

    def __init__(self, limit: int, *, interval: float = REJECT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.open = 0
        self.rejected = 0  # since start, logged or not
        self.interval = interval
        self._clock = clock
        self._last_line = -float("inf")
        self._suppressed = 0
        self._last_listener = ""
        self._last_ip = ""
        self._flush_handle: asyncio.TimerHandle | None = None

    def try_acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def reject(self, listener: str, ip: str) -> None:
        """Count a refused connection; log it unless a line was written less than ``interval`` ago.

        Each line shows one rejection (its listener and address) and, as ``suppressed``, how many others
        were left out since the previous line. When a burst stops, the last rejection left out is logged one
        interval after the previous line (so the count is never lost)."""
        self.rejected += 1
        self._last_listener, self._last_ip = listener, ip
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._write(now)
            return
        self._suppressed += 1
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (unit use): the next line reports the count
            self._flush_handle = loop.call_later(self._last_line + self.interval - now, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._write_last()

    def _write_last(self) -> None:
        """Log the last rejection left out (the line shows it: it is no longer among the suppressed)."""
        if self._suppressed:
            self._suppressed -= 1
            self._write(self._clock())

    def _write(self, now: float) -> None:
        suppressed, self._suppressed = self._suppressed, 0
        self._last_line = now
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        log.warning('event=reject listener=%s ip=%s open=%d suppressed=%d reason="max_connections %d reached"',
                    self._last_listener, self._last_ip, self.open, suppressed, self.limit)

    def close(self) -> None:
        """Write the pending summary line now (shutdown) and cancel its timer."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._write_last()


def raise_open_file_limit(max_connections: int, hooks_max_concurrent: int = 0) -> int | None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit; warn when it stays below what clients may need.

    Distributions start processes with a soft limit of 1024, under the default ``max_connections 1000`` plus
    the server's own descriptors: past it accept() fails (EMFILE) for every listener at once. Returns the
    soft limit now in force (None where the platform has no RLIMIT_NOFILE).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != infinity and (hard == infinity or soft < hard):
        # An infinite hard limit is not accepted as a soft one (Linux caps at fs.nr_open, macOS at OPEN_MAX):
        # then try large finite values, and at last just what is needed.
        targets = [hard] if hard != infinity else [1 << 20, 1 << 16, 10240]
        targets.append(max_connections + FD_MARGIN + hooks_max_concurrent)
        for target in targets:
            if target <= soft:
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            soft = target
            break
    log.info("event=nofile-limit soft=%s hard=%s before=%s", _rlim(soft), _rlim(hard), _rlim(before))
    check_open_file_limit(max_connections, hooks_max_concurrent, None if soft == infinity else soft)
    return soft


def check_open_file_limit(max_connections: int, hooks_max_concurrent: int, soft: int | None) -> bool:
    """Log a warning when ``soft`` open files (None: unlimited) cannot hold ``max_connections`` clients."""
    want = max_connections + FD_MARGIN + hooks_max_concurrent
    if soft is None or soft >= want:
        return True
    log.warning('event=nofile-limit-low soft=%d need=%d reason="open-file limit %d is below max_connections %d '
                'plus %d: raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower max_connections"',
                soft, want, soft, max_connections, want - max_connections)
    return False


def _rlim(value: int) -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else str(value)
