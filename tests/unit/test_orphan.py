"""`crm_bulk.orphan`: noticing a parent that is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from crm_bulk import orphan


def test_the_current_parent_is_not_gone() -> None:
    assert not orphan.orphaned(os.getppid())
    assert orphan.expected_parent() == os.getppid()


def test_a_parent_that_is_already_gone_is_reported_at_once() -> None:
    called = threading.Event()
    # No process is its own parent: the watched pid is not ours, as after a re-parenting.
    watch = orphan.watch_parent(called.set, parent=os.getpid(), poll_seconds=0.01)
    assert called.wait(2.0)
    watch.join(2.0)
    assert not watch.is_alive()


def test_a_live_parent_is_watched_without_reporting_until_the_watch_ends() -> None:
    called, stop = threading.Event(), threading.Event()
    watch = orphan.watch_parent(called.set, poll_seconds=0.01, stop=stop)
    assert not called.wait(0.2)
    stop.set()
    watch.join(2.0)
    assert not watch.is_alive()
    assert not called.is_set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_death_signal_reaches_a_child_when_its_parent_dies() -> None:
    # A parent that starts a child asking for SIGTERM on its death, then exits at once.
    child = (
        "import signal, sys, time\n"
        "from crm_bulk import orphan\n"
        "assert orphan.request_death_signal(signal.SIGTERM)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        "print('armed', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
        "print(p.pid, flush=True)\n"
        "assert p.stdout.readline().strip() == 'armed'\n"
    )
    with subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        proc.wait(20)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/status") as status:
            if "\nState:\tZ" in status.read():
                return
        threading.Event().wait(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the child outlived its parent")
