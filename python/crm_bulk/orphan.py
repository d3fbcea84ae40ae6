"""Noticing that the process which started this one is gone, for children that must not outlive it.

A child spawned by a supervisor (worker processes, the chDB store host) keeps running when that supervisor is
SIGKILLed: nothing tells it. Two mechanisms, used together:

- on Linux, `prctl(PR_SET_PDEATHSIG)` has the kernel send a signal the moment the parent dies. The kernel
  sends it when the *thread* that spawned the child ends, so it suits only children spawned by a thread that
  lives as long as they should (a supervisor loop), not by a pool thread that may retire;
- everywhere, a daemon thread that polls `os.getppid()`: an orphan is re-parented (to init or a
  subreaper), so its parent pid changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.5


def expected_parent() -> int:
    """The pid of the process that spawned this one: the multiprocessing parent's when spawned by it (so a
    parent that died before this call is still noticed), else the current parent pid."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        return parent.pid
    return os.getppid()


def orphaned(parent: int) -> bool:
    """True when `parent` is no longer this process's parent (it exited and this one was re-parented)."""
    return os.getppid() != parent


def request_death_signal(signum: signal.Signals) -> bool:
    """Ask the kernel to send `signum` when the spawning thread of the parent ends (Linux only); False when
    the platform has no such request or it failed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        result = int(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0))
    except (OSError, AttributeError):
        return False
    if result != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    return True


def watch_parent(
    on_orphaned: Callable[[], None],
    *,
    parent: int | None = None,
    poll_seconds: float = POLL_SECONDS,
    stop: threading.Event | None = None,
) -> threading.Thread:
    """Call `on_orphaned` once, from a daemon thread, when `parent` (default: `expected_parent()`) is gone;
    the watch ends without a call once `stop` is set.

    Checks at once, so a parent that died while this process started is noticed too."""
    watched = expected_parent() if parent is None else parent
    ended = stop or threading.Event()

    def poll() -> None:
        # A service loop, not a retry: check until the parent is gone (report once) or the watch ends.
        while not orphaned(watched):
            if ended.wait(poll_seconds):
                return
        log.warning("parent process %d is gone", watched)
        on_orphaned()

    thread = threading.Thread(target=poll, name="crm-bulk-parent-watch", daemon=True)
    thread.start()
    return thread
