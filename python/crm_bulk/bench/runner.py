"""`crm-bulk bench`: the whole run, from an empty isolated stack to the results document.

1. Start the bench's own stack (`crm_bulk.bench.stack`), register the benchmark account through the API and
   lift its limits; create the ceiling's account (and a scratch account for the seed's import sample) in SQL.
2. Generate N contacts from a fixed seed (about 2% invalid emails, 5% repeated emails) and build every input
   before any timing starts; warm the stack up with a small import on an account of its own.
3. Per scenario: the platform's job through the API from POST to terminal status, its stages from the ledger
   and its throughput over time from the stats endpoint (once its log is shipped); then the seed algorithm's
   sample and the raw-SQL ceiling on the ceiling's account. Before each platform and ceiling run the table is
   vacuumed and analysed and a checkpoint taken (untimed), so each starts from the same state.
4. A bounded API load run (locust), then, with `--sweep`, chunk sizes x worker processes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import polars as pl
import psycopg

from crm_bulk.bench import cpu, profiling, require_bench_extra, scenarios, stages
from crm_bulk.bench.baselines import BaselineResult, SeedEstimate
from crm_bulk.bench.client import Account, ApiClient, encode_body
from crm_bulk.bench.datagen import generate_contacts
from crm_bulk.bench.load import run_load
from crm_bulk.bench.report import machine_facts, method_notes
from crm_bulk.bench.stack import BenchStack, StackOptions
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

SEED = 20261129
INVALID_EMAIL_RATE = 0.02
DUPLICATE_RATE = 0.05
WARM_UP_ROWS = 500
SHIP_TIMEOUT_SECONDS = 900.0

Progress = Callable[[str], None]
CPU_GROUPS = {"api": "api", "workers": "worker", "scheduler": "scheduler"}


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Everything `crm-bulk bench` was asked for."""

    entities: int
    stack: StackOptions
    seed_pages: int = 4
    load_users: int = 10
    load_seconds: float = 20.0
    sweep: bool = False
    sweep_chunk_sizes: tuple[int, ...] = (1000, 5000, 20000)
    sweep_processes: tuple[int, ...] = (1, 2, 4)
    sweep_entities: int = 200_000
    profile: Path | None = None
    job_timeout: float = 3600.0
    command: str = "crm-bulk bench"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every process the bench started is stopped on the way out."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare_table(dsn: str) -> None:
    """Untimed: vacuum and analyse contacts, checkpoint, so platform and ceiling start alike."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) contacts")
        conn.execute("CHECKPOINT")


def _sql_account(dsn: str, name: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query("postgres", "bench", "create_account"), {"name": name}).fetchone()
    assert row is not None
    return int(row[0])


def _postgres_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query("postgres", "bench", "server_version")).fetchone()
    return str(row[0]) if row else "unknown"


@dataclass(frozen=True)
class _PlatformRun:
    """A scenario's job as the platform ran it: its final state, when it was posted and answered (epoch
    seconds), the CPU seconds it took per part, and the profile when one was recorded."""

    job: dict[str, Any]
    posted_at: float
    answered_at: float
    cpu_seconds: dict[str, float]
    profile: dict[str, Any] | None


def _job_facts(
    run: _PlatformRun, line: stages.Timeline, stats: dict[str, Any], *, upload: bool, processes: int
) -> dict[str, Any]:
    """The platform side of a scenario's results: stages, outcomes, CPU, chunks."""
    return {
        "stages": stages.stages(
            line, posted_at=run.posted_at, answered_at=run.answered_at, upload=upload, processes=processes
        ),
        "job": {
            k: run.job[k] for k in ("id", "status", "total", "succeeded", "failed", "skipped", "cancelled")
        },
        "cpu_seconds": run.cpu_seconds,
        "chunks": line.chunks,
        "chunk_latency_ms": stats["chunk_latency_ms"],
        "errors_by_code": stats["errors_by_code"],
        "skipped_by_reason": stats["skipped_by_reason"],
    }


def _baseline_facts(ceiling: BaselineResult, seed: SeedEstimate) -> dict[str, Any]:
    """The ceiling's and the seed's side of a scenario's results."""
    return {
        "ceiling": {"rows": ceiling.rows, "seconds": ceiling.seconds, "streams": ceiling.streams},
        "seed": {
            "entities": seed.entities,
            "sampled_rows": seed.sampled_rows,
            "sample_seconds": seed.sample_seconds,
            "per_row_ms": seed.per_row_ms,
            "estimated_seconds": seed.estimated_seconds,
            "method": seed.method,
        },
    }


class _Run:
    """One bench run's state: the stack, the API client, the accounts and the data."""

    def __init__(self, options: BenchOptions, stack: BenchStack, progress: Progress) -> None:
        self.options = options
        self.stack = stack
        self.progress = progress
        self.api = ApiClient(stack.api_url)
        self.platform: Account | None = None
        self.ceiling_account = 0
        self.scratch_account = 0
        # Rows removed from the ceiling's account after the imports to match the platform's account.
        self.aligned = 0

    def close(self) -> None:
        self.api.close()

    def submit_and_wait(
        self, account: Account, name: str, *, data: scenarios.BenchData, ids: list[int] | None = None
    ) -> tuple[dict[str, Any], float, float]:
        """Post the scenario's job and wait for its terminal status: (job, posted_at, answered_at)."""
        if name == "import":
            submitted = self.api.upload_csv(account, data.csv_pieces, on_duplicate="update")
        else:
            submitted = self.api.submit(account, encode_body(scenarios.platform_body(name, ids=ids or [])))
        job = self.api.wait_terminal(account, submitted.job["id"], timeout=self.options.job_timeout)
        return job, submitted.posted_at, submitted.answered_at

    def warm_up(self, frame: pl.DataFrame) -> None:
        """A small import on an account of its own: every process up, chDB created, first plans cached."""
        account = self.api.new_account("bench warm-up")
        data = scenarios.prepare_data(frame.head(WARM_UP_ROWS))
        job, _, _ = self.submit_and_wait(account, "import", data=data)
        stages.wait_shipped(self.stack.dsn, job["id"], timeout=SHIP_TIMEOUT_SECONDS)

    def scenario(self, scenario: scenarios.Scenario, data: scenarios.BenchData) -> dict[str, Any]:
        """The platform's run, then the seed sample and the ceiling, of one scenario."""
        assert self.platform is not None
        dsn, name = self.stack.dsn, scenario.name
        run = self._platform_run(name, data)
        stages.wait_shipped(dsn, run.job["id"], timeout=SHIP_TIMEOUT_SECONDS)
        line = stages.timeline(dsn, run.job["id"])
        stats = self.api.stats(self.platform, run.job["id"])
        entities = int(run.job["total"])
        seconds = (line.finished or run.answered_at) - run.posted_at
        eps = entities / seconds if seconds > 0 else 0.0
        self.progress(f"{name}: {entities:,} entities in {seconds:.1f} s ({eps:,.0f}/s); baselines …")
        ceiling, seed = self._baselines(name, data)
        ceiling_eps = entities / ceiling.seconds if ceiling.seconds > 0 else 0.0
        seed_eps = seed.entities_per_second
        self.progress(f"{name}: ceiling {ceiling_eps:,.0f}/s, seed {seed_eps:,.0f}/s (extrapolated)")
        result: dict[str, Any] = {
            "name": name,
            "description": scenario.description,
            "entities": entities,
            "seconds": seconds,
            "entities_per_second": eps,
            "ceiling_entities_per_second": ceiling_eps,
            "seed_entities_per_second": seed_eps,
            "ratio_to_ceiling": eps / ceiling_eps if ceiling_eps else None,
            "ratio_to_seed": eps / seed_eps if seed_eps else 0.0,
            **_job_facts(run, line, stats, upload=name == "import", processes=self.stack.options.processes),
            **_baseline_facts(ceiling, seed),
            "posted_at": run.posted_at,
            "throughput": stats["throughput"],
        }
        if run.profile is not None:
            result["profile"] = run.profile
        return result

    def _platform_run(self, name: str, data: scenarios.BenchData) -> _PlatformRun:
        """Post the scenario's job and wait for it, charging the CPU it took (and profiling it if asked)."""
        assert self.platform is not None
        ids: list[int] | None = None
        if name == "update_ids":
            ids = scenarios.live_ids(self.stack.dsn, self.platform.account_id).tolist()
        _prepare_table(self.stack.dsn)
        recording = None
        if self.options.profile is not None:
            recording = profiling.Recording(self.options.profile, name)
            recording.start({"workers": self.stack.pid("worker"), "api": self.stack.pid("api")})
        self.progress(f"{name}: platform …")
        roots = self._cpu_roots()
        cpu_before = cpu.sample(roots)
        try:
            job, posted_at, answered_at = self.submit_and_wait(self.platform, name, data=data, ids=ids)
        finally:
            profile = recording.stop() if recording is not None else None
        cpu_seconds = cpu.spent(cpu_before, cpu.sample(roots))
        return _PlatformRun(job, posted_at, answered_at, cpu_seconds, profile)

    def _baselines(self, name: str, data: scenarios.BenchData) -> tuple[BaselineResult, SeedEstimate]:
        """The scenario's ceiling and seed sample, in the order that leaves both the same data."""
        assert self.platform is not None
        dsn = self.stack.dsn
        if name != "import":
            # The seed goes first, with values of its own and a sampled delete undone: the ceiling after it
            # still changes every row.
            seed = self._seed(name, data)
            _prepare_table(dsn)
            return self._ceiling(name, data), seed
        _prepare_table(dsn)
        ceiling = self._ceiling(name, data)
        seed = self._seed(name, data)
        self.aligned = scenarios.align_ceiling_account(
            dsn, ceiling_account=self.ceiling_account, platform_account=self.platform.account_id
        )
        if self.aligned:
            self.progress(
                f"import: {self.aligned:,} rows the platform did not write were removed from the "
                "ceiling's account"
            )
        return ceiling, seed

    def _cpu_roots(self) -> dict[str, int]:
        """The process trees whose CPU time a job is charged: services, PostgreSQL (when the bench's own),
        and the bench process itself (the HTTP client)."""
        roots = {name: self.stack.pid(service) for name, service in CPU_GROUPS.items()}
        data_dir = self.stack.postgres_data_dir
        postmaster = cpu.postmaster_pid(data_dir) if data_dir is not None else None
        if postmaster is not None:
            roots["postgres"] = postmaster
        roots["bench"] = os.getpid()
        return roots

    def _ceiling(self, name: str, data: scenarios.BenchData) -> BaselineResult:
        return scenarios.run_ceiling(
            name,
            self.stack.dsn,
            account_id=self.ceiling_account,
            streams=self.stack.options.processes,
            data=data,
        )

    def _seed(self, name: str, data: scenarios.BenchData) -> SeedEstimate:
        return scenarios.run_seed(
            name,
            self.stack.dsn,
            account_id=self.ceiling_account,
            scratch_account_id=self.scratch_account,
            data=data,
            pages=self.options.seed_pages,
        )

    def sweep(self, frame: pl.DataFrame) -> dict[str, Any]:
        """Import and update-by-filter of `sweep_entities` rows per (chunk size, processes) pair."""
        data = scenarios.prepare_data(frame.head(self.options.sweep_entities))
        base = self.stack.options
        runs = []
        for chunk_size in self.options.sweep_chunk_sizes:
            for processes in self.options.sweep_processes:
                self.progress(f"sweep: chunk size {chunk_size}, {processes} processes …")
                self.stack.restart_services(replace(base, chunk_size=chunk_size, processes=processes))
                self.api.close()
                self.api = ApiClient(self.stack.api_url)
                account = self.api.new_account(f"bench sweep {chunk_size}x{processes}")
                rates = {}
                for name in ("import", "update_filter"):
                    _prepare_table(self.stack.dsn)
                    job, posted_at, answered_at = self.submit_and_wait(account, name, data=data)
                    line = stages.timeline(self.stack.dsn, job["id"])
                    seconds = (line.finished or answered_at) - posted_at
                    rates[name] = int(job["total"]) / seconds if seconds > 0 else 0.0
                runs.append(
                    {
                        "chunk_size": chunk_size,
                        "processes": processes,
                        "import_eps": rates["import"],
                        "update_eps": rates["update_filter"],
                    }
                )
        best = max(runs, key=lambda r: math.sqrt(r["import_eps"] * r["update_eps"]))
        self.stack.restart_services(base)
        return {"entities": data.rows, "runs": runs, "best": best}


def run_bench(options: BenchOptions, *, progress: Progress) -> dict[str, Any]:
    """Run the whole benchmark; return the results document (see `crm_bulk.bench.report`)."""
    require_bench_extra()
    if options.profile is not None:
        options.profile.mkdir(parents=True, exist_ok=True)
        profiling.py_spy()

    def before_services(stack: BenchStack) -> None:
        if options.profile is not None and stack.owns_server:
            profiling.enable_auto_explain(stack.dsn)

    with _sigterm_as_interrupt(), BenchStack(options.stack, before_services=before_services) as stack:
        progress(f"stack up in {stack.workdir} (PostgreSQL {_postgres_version(stack.dsn)})")
        machine = machine_facts(postgres=_postgres_version(stack.dsn), deployment=options.stack.deployment)
        run = _Run(options, stack, progress)
        try:
            progress(f"generating {options.entities:,} contacts …")
            frame = generate_contacts(
                options.entities,
                seed=SEED,
                invalid_email_rate=INVALID_EMAIL_RATE,
                duplicate_rate=DUPLICATE_RATE,
            )
            data = scenarios.prepare_data(frame)
            run.warm_up(frame)
            run.platform = run.api.new_account("bench platform")
            run.ceiling_account = _sql_account(stack.dsn, "bench ceiling")
            run.scratch_account = _sql_account(stack.dsn, "bench seed scratch")
            results = [run.scenario(s, data) for s in scenarios.SCENARIOS]
            progress("API load …")
            load = run_load(
                stack.api_url,
                token=run.platform.token,
                job_id=results[-1]["job"]["id"],
                users=options.load_users,
                seconds=options.load_seconds,
                workdir=stack.workdir,
            )
            sweep = run.sweep(frame) if options.sweep else None
            if options.profile is not None and stack.server_log is not None:
                profiling.copy_server_log(stack.server_log, options.profile)
        finally:
            run.close()
    return _document(options, machine, results, load, sweep, aligned=run.aligned)


def _document(
    options: BenchOptions,
    machine: dict[str, Any],
    results: list[dict[str, Any]],
    load: dict[str, Any],
    sweep: dict[str, Any] | None,
    *,
    aligned: int,
) -> dict[str, Any]:
    """The results document: the machine, the configuration, every scenario, the API load, the notes."""
    notes = method_notes(processes=options.stack.processes, seed_pages=options.seed_pages, aligned=aligned)
    document: dict[str, Any] = {
        "machine": machine,
        "command": options.command,
        "entities": options.entities,
        "config": {
            "processes": options.stack.processes,
            "chunk_size": options.stack.chunk_size,
            "partitions": options.stack.partitions,
            "deployment": options.stack.deployment,
        },
        "scenarios": results,
        "api_load": load,
        "notes": notes,
    }
    if sweep is not None:
        document["sweep"] = sweep
    return document
