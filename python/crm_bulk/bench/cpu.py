"""CPU time per part of the stack while a job runs: on a small machine the parts share the cores, so where
the CPU goes is where the time goes.

Groups are process trees (a root pid and all its descendants, from /proc): the API, the worker pool, the
scheduler, the PostgreSQL server (when the bench started it), and the bench itself. A sample is each
process's user + system time; the difference of two samples, per group, is the CPU seconds spent between
them (a process that exited in between loses its share, which only under-counts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

Sample = dict[str, dict[int, float]]

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(root: int, tree: Mapping[int, list[int]], other_roots: set[int]) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        # A child that roots another group (the services are the bench's children) counts there.
        stack.extend(child for child in tree.get(pid, []) if child not in other_roots)
    return found


def sample(roots: Mapping[str, int]) -> Sample:
    """Each group's processes and their CPU seconds so far."""
    tree = _children()
    taken: Sample = {}
    for group, root in roots.items():
        times: dict[int, float] = {}
        others = {pid for name, pid in roots.items() if name != group}
        for pid in _descendants(root, tree, others):
            fields = _stat_fields(pid)
            if fields is not None:
                # Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted from the state field here.
                times[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
        taken[group] = times
    return taken


def spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds per group between two samples."""
    return {
        group: round(sum(t - before.get(group, {}).get(pid, 0.0) for pid, t in times.items()), 2)
        for group, times in after.items()
    }


def postmaster_pid(data_dir: Path) -> int | None:
    """The PostgreSQL server's pid from its data directory, if it runs."""
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
