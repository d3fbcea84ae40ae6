"""`crm-bulk bench --profile DIR`: where the platform's time goes, per scenario.

- py-spy samples the worker pool (supervisor and every worker process) and the API process while a scenario
  runs on the platform, idle (waiting) frames included, so time spent waiting on PostgreSQL shows as the
  psycopg frames it waits in. The raw collapsed stacks are kept in DIR (`<scenario>-<process>.txt`, the input
  of any flame-graph tool) and summarised: the share of the chunk-applying samples in each `crm_bulk`
  function (inclusive) and in each innermost frame (self).
- With the bench's own PostgreSQL, `auto_explain` logs the plan (EXPLAIN ANALYZE, buffers) of every statement
  slower than a threshold to the server log, copied to DIR/postgres.log at the end.

Profiling slows what it watches; numbers from a profiled run are not the ones to publish.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from crm_bulk.errors import ConfigError

log = logging.getLogger(__name__)

APPLY_FRAME = "apply_chunk"
TOP = 12
AUTO_EXPLAIN_SETTINGS = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "250ms",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "off",
    "auto_explain.log_nested_statements": "on",
}


def py_spy() -> str:
    """The py-spy executable (beside the interpreter, else on PATH); `ConfigError` when there is none."""
    # A virtualenv's tools sit beside its interpreter whether or not the venv is on PATH.
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise ConfigError("--profile", "needs py-spy on PATH (pip install py-spy)")
    return found


def enable_auto_explain(dsn: str) -> None:
    """Turn on auto_explain for new sessions of the bench's own server (ALTER SYSTEM + reload)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in AUTO_EXPLAIN_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # constants above, never user input
        conn.execute("SELECT pg_reload_conf()")


@dataclass
class Recording:
    """py-spy recorders attached to processes for one scenario."""

    directory: Path
    scenario: str
    recorders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, targets: dict[str, int]) -> None:
        """Attach to each named pid (with its subprocesses)."""
        for name, pid in targets.items():
            output = self.directory / f"{self.scenario}-{name}.txt"
            self.recorders[name] = subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--idle",
                    "--nonblocking",
                    "--function",
                    "--rate",
                    "50",
                    "--format",
                    "raw",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(self.directory / f"{self.scenario}-{name}.py-spy.log").open("wb"),
            )

    def stop(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        """Stop the recorders (they write their files on SIGINT) and summarise each."""
        summaries: dict[str, dict[str, list[tuple[str, float]]]] = {}
        for name, recorder in self.recorders.items():
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(timeout=10)
            output = self.directory / f"{self.scenario}-{name}.txt"
            if output.exists():
                summaries[name] = summarise(output.read_text())
            else:
                log.warning("py-spy wrote nothing for %s during %s", name, self.scenario)
        self.recorders.clear()
        return summaries


def summarise(raw: str) -> dict[str, list[tuple[str, float]]]:
    """Shares of the samples under `apply_chunk` (all samples when there are none) per crm_bulk function,
    inclusive, and per innermost frame."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    focused = [(frames, n) for frames, n in stacks if any(f.startswith(APPLY_FRAME + " ") for f in frames)]
    for frames, n in focused or stacks:
        total += n
        leaf[frames[-1]] += n
        for name in {f for f in frames if "crm_bulk/" in f or "crm_bulk\\" in f}:
            inclusive[name] += n
    if total == 0:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(name, n / total) for name, n in inclusive.most_common(TOP)],
        "self": [(name, n / total) for name, n in leaf.most_common(TOP)],
    }


def copy_server_log(server_log: Path, directory: Path) -> None:
    """Keep the bench server's log (auto_explain plans) with the profiles."""
    if server_log.exists():
        shutil.copyfile(server_log, directory / "postgres.log")
