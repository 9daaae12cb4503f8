"""A private network namespace for the browser's WebRTC checks.

Chromium never uses loopback for WebRTC: it leaves 127.0.0.0/8 and ::1 out of its ICE candidates whatever the
flags (``--allow-loopback-in-peer-connection`` included), so a browser on this machine would connect from the
machine's own LAN address. Instead, the test's thread moves into a network namespace of its own: ``lo`` and a
veth pair with a private address (``10.250.0.1``) and a default route into that pair, where packets to anything
but the namespace's own addresses are dropped. The server (in-process), ffmpeg and Chromium all run there: no
packet can reach any address of the machine or beyond it. Needs root (``unshare(CLONE_NEWNET)``), which the
test machines have; it is left, and the namespace is gone, when the test ends.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import require_tool

CLONE_NEWNET = 0x40000000
#: The namespace's own address: the server's ICE candidate and the browser's.
ADDRESS = "10.250.0.1"


def enter_private_network() -> int:
    """Move the calling thread (and what it starts from now on) into a new network namespace set up as the
    module says; returns a descriptor of the namespace it was in (for :func:`leave_private_network`)."""
    ip = shutil.which("ip") or "ip"
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        os.close(home)
        raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)} (needs root)")
    try:
        for args in (("link", "set", "lo", "up"),
                     ("link", "add", "lsv0", "type", "veth", "peer", "name", "lsv1"),
                     ("addr", "add", f"{ADDRESS}/24", "dev", "lsv0"),
                     ("link", "set", "lsv0", "up"), ("link", "set", "lsv1", "up"),
                     ("route", "add", "default", "via", "10.250.0.2", "dev", "lsv0")):
            subprocess.run([ip, *args], check=True, timeout=10)
    except BaseException:
        leave_private_network(home)
        raise
    return home


def leave_private_network(home: int) -> None:
    """Back to the namespace :func:`enter_private_network` left (the private one goes when nothing uses it)."""
    try:
        if ctypes.CDLL(None, use_errno=True).setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the original network namespace failed")
    finally:
        os.close(home)


@contextmanager
def private_network() -> Iterator[str]:
    require_tool("ip")
    try:
        home = enter_private_network()
    except OSError as exc:
        pytest.fail(f"{exc}: the WebRTC browser checks run in a private network namespace")
    try:
        yield ADDRESS
    finally:
        leave_private_network(home)
