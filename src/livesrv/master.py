"""``workers N``: the master process of one host. It serves no client: it keeps the registry the workers share
and keeps N workers running.

* **The registry.** An embedded one (clients/registry_local.py) on a unix socket in a private temporary
  directory, in the master's memory, so it outlives any worker: a restarted worker finds the claims of the
  others. One host needs no external service. When a worker dies, the master drops its record and claims at once
  (``RegistryServer.drop_node``, ``event=worker-stream-released``): its streams are free for a republish even
  without takeover, and the pulls of them look for the next owner.
* **The workers.** ``python -m livesrv <the master's own arguments> --worker I --registry URL --master-fd FD``:
  each is a full server (app.py's :class:`~livesrv.app.WorkerRole`) on the shared public ports (SO_REUSEPORT).
  A worker that exits while the master is not stopping is started again (``event=worker-exit``, then
  ``event=worker-start``); one that keeps dying within :data:`STABLE` seconds of its start waits longer each
  time (:data:`BACKOFF`), so a crash loop does not spin. A worker's FIRST process that exits with status 1
  (livesrv's "could not start": a port taken, a certificate missing) within STABLE seconds stops the master
  with status 1, as one process would exit: restarting cannot fix that.
  Each worker is in a session (so a process group) of its own, so that a terminal's Ctrl-C or Ctrl-\ reaches the master
  only and each worker gets the signal once, from the master (twice would turn a graceful quit into a fast one).
* **Signals.** SIGHUP is passed on to every worker (each re-reads the file: a reload). SIGTERM and SIGINT are
  passed on and the master waits for the workers up to :data:`STOP_TIMEOUT` seconds, then SIGKILLs those left.
  SIGQUIT (and SIGTERM with ``force_grace_quit``) is SRS's graceful quit: the workers wait for their clients
  to leave, so the master waits as long as they do; a second signal is passed on (it makes the quit fast) and
  starts the bound. Then the socket's directory is removed.
* **A master that dies** (even by SIGKILL): each worker holds the read end of a pipe whose write end only the
  master has; the kernel closes it with the master, the worker sees EOF and quits (cli.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Final

from livesrv.config import Config
from livesrv.log import event

log = logging.getLogger("livesrv.master")

#: Seconds the workers get to stop after SIGTERM or SIGINT (their own shutdown is bounded well below).
STOP_TIMEOUT: Final = 30.0
#: A worker that lived this many seconds was not crash-looping: its next restart is immediate.
STABLE: Final = 10.0
#: First and longest pause before restarting a worker that died within STABLE seconds (doubling).
BACKOFF: Final = (0.5, 10.0)


class Worker:
    """One worker slot: its current process, and how it has been doing (for the backoff)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.starts = 0
        self.quick_deaths = 0  # consecutive deaths within STABLE seconds of a start


class Master:
    """Starts the registry and the workers, restarts them, passes signals on (module doc)."""

    def __init__(self, config: Config, argv: list[str], count: int | None = None) -> None:
        self.config = config
        self.argv = argv  # the master's own arguments (-c FILE, -e, --self-signed): every worker gets them
        self.workers = [Worker(i) for i in range(count or config.workers)]
        self.stopping = False
        self.graceful = False
        self._second_signal = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._signal = ""
        self._dir = ""
        self.registry_url = ""
        self.registry: Any = None  # the RegistryServer, once started
        self._pipe_r = -1
        self._pipe_w = -1
        self.exit_code = 0

    # ----------------------------------------------------------------------------------- lifecycle

    async def run(self) -> int:
        from livesrv.clients.registry_local import RegistryServer  # (the master's only use of clients/)

        self._dir = tempfile.mkdtemp(prefix="livesrv-workers-")  # (the prefix: cli.py's worker removes it if we die)
        os.chmod(self._dir, 0o700)  # (the registry answers whoever can connect: this user only)
        path = os.path.join(self._dir, "registry.sock")
        server = self.registry = RegistryServer(path)
        try:
            await server.start()
            self.registry_url = server.url
            # The workers watch the read end: EOF when the master is gone, however it went.
            self._pipe_r, self._pipe_w = os.pipe()
            self._install_signals()
            event(log, "master-start", pid=os.getpid(), workers=len(self.workers), registry=self.registry_url)
            supervisors = [asyncio.create_task(self._supervise(w), name=f"worker {w.index}") for w in self.workers]
            await self._stop_requested.wait()
            await self._stop_workers()
            for task in supervisors:
                task.cancel()
            await asyncio.gather(*supervisors, return_exceptions=True)
        finally:
            for fd in (self._pipe_r, self._pipe_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(Exception):
                await server.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            event(log, "master-stopped", signal=self._signal or "-", code=self.exit_code)
        return self.exit_code

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, self._on_quit, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_reload(self) -> None:
        event(log, "master-reload", workers=sum(1 for w in self.workers if _alive(w)))
        self._send(signal.SIGHUP)

    def _on_quit(self, sig: signal.Signals) -> None:
        if self.stopping:
            event(log, "master-shutdown-forced", signal=sig.name)
            self._send(sig)
            self._second_signal.set()
            return
        self.stopping = True
        self._signal = sig.name
        self.graceful = sig == signal.SIGQUIT or (sig == signal.SIGTERM and self.config.force_grace_quit)
        event(log, "master-shutdown", signal=sig.name, graceful=self.graceful)
        self._send(sig)
        self._stop_requested.set()

    def _send(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if _alive(w):
                assert w.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    async def _stop_workers(self) -> None:
        """Wait for the workers (a graceful quit: as long as they take, until a second signal), then at most
        STOP_TIMEOUT seconds, then SIGKILL."""
        procs = [w.proc for w in self.workers if _alive(w)]
        waits = [asyncio.ensure_future(p.wait()) for p in procs if p is not None]
        if not waits:
            return
        if self.graceful:
            everyone = asyncio.ensure_future(asyncio.wait(waits))
            second = asyncio.ensure_future(self._second_signal.wait())
            await asyncio.wait([everyone, second], return_when=asyncio.FIRST_COMPLETED)
            second.cancel()
        _, pending = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
        for w in self.workers:
            if _alive(w):
                assert w.proc is not None
                event(log, "worker-kill", logging.WARNING, worker=w.index, pid=w.proc.pid,
                      reason=f"not stopped after {STOP_TIMEOUT:g}s")
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ----------------------------------------------------------------------------------- workers

    async def _supervise(self, w: Worker) -> None:
        """Keep slot ``w`` running until the master stops (a failure to start it is logged and retried: the slot
        never ends silently)."""
        while not self.stopping:
            try:
                await self._start(w)
            except (OSError, ValueError) as exc:
                event(log, "worker-start-failed", logging.ERROR, worker=w.index, reason=repr(exc))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), BACKOFF[1])
                continue
            assert w.proc is not None
            code = await w.proc.wait()
            lived = time.monotonic() - w.started
            if self.stopping:
                event(log, "worker-exit", worker=w.index, pid=w.proc.pid, code=code, reason="stopping")
                return
            # Its claims go now (not after their TTL): its publishers can republish at once, even without takeover.
            released = self.registry.drop_node(f"w{w.index}") if self.registry is not None else []
            for stream in released:
                event(log, "worker-stream-released", worker=w.index, stream=stream)
            if w.starts == 1 and code == 1 and lived < STABLE:
                event(log, "worker-failed", logging.ERROR, worker=w.index, pid=w.proc.pid, code=code,
                      reason="the worker could not start (see its fatal line): stopping")
                self.exit_code = 1
                self._on_quit(signal.SIGTERM)
                return
            w.quick_deaths = w.quick_deaths + 1 if lived < STABLE else 0
            pause = 0.0 if w.quick_deaths <= 1 else min(BACKOFF[0] * 2 ** (w.quick_deaths - 2), BACKOFF[1])
            event(log, "worker-exit", logging.WARNING, worker=w.index, pid=w.proc.pid, code=code,
                  lived=round(lived, 1), restart_in=pause)
            if pause:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), pause)

    async def _start(self, w: Worker) -> None:
        args = [sys.executable, "-m", "livesrv", *self.argv, "--worker", str(w.index),
                "--registry", self.registry_url, "--master-fd", str(self._pipe_r)]
        w.proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                      pass_fds=(self._pipe_r,), start_new_session=True)
        w.started = time.monotonic()
        w.starts += 1
        event(log, "worker-start", worker=w.index, pid=w.proc.pid)
        if self.stopping:  # (started while the signal was being passed on: it never served anyone)
            w.proc.kill()

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if _alive(w) and w.proc is not None]


def _alive(w: Worker) -> bool:
    return w.proc is not None and w.proc.returncode is None


def run_master(config: Config, argv: list[str]) -> int:
    """``livesrv -c FILE`` with ``workers N`` > 1 (cli.py): the master, until a signal stops it."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    master = Master(config, argv)
    try:
        if uvloop is not None:
            return uvloop.run(master.run())
        return asyncio.run(master.run())
    except OSError as exc:
        event(log, "fatal", logging.ERROR, reason=str(exc))
        return 1
