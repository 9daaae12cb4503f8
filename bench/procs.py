"""Child processes of the bench: each in its own process group, killed with its group, dying with its parent.

A bench that leaves a server or 1000 viewers behind poisons the next measurement, so every way out is
covered: normal end and exceptions (``stop_group`` in ``finally``), SIGTERM (turned into an exception by the
runner), and even SIGKILL of the runner (the kernel's parent-death signal, Linux ``prctl``).
"""

from __future__ import annotations

import ctypes
import os
import time
import signal
import subprocess
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the process that started it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: rely on stop_group


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in a new process group that dies with us."""
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
                            **kwargs)


def spawn(args: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A long-running child (server, publisher) with stdout and stderr going to ``log_path``."""
    with open(log_path, "ab") as log:
        return popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; always reaped."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, even if the leader is gone
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


# ------------------------------------------------------------------------------------------ sampling


def proc_times(pid: int) -> tuple[float, float, int]:
    """(user CPU seconds, system CPU seconds, RSS bytes) of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat.rpartition(b")")[2].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK, int(fields[21]) * _PAGE


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) of one process."""
    user, system, rss = proc_times(pid)
    return user + system, rss


def machine_times() -> tuple[float, float]:
    """(busy CPU seconds of all cores, of which softirq) so far, from /proc/stat.

    On loopback the kernel's network work is partly done in softirq context, sometimes in ksoftirqd threads
    that are not charged to the server process: the machine-wide figure shows what that process's own CPU
    time leaves out (it also includes the load generator and the publisher)."""
    with open("/proc/stat", "rb") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)
    busy = sum(cpu[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / _CLK_TCK, (cpu[6] if len(cpu) > 6 else 0) / _CLK_TCK


def sleep_until(t: float) -> None:
    """Block until ``time.monotonic()`` reaches ``t`` (the runner's pacing; returns at once when it has)."""
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
