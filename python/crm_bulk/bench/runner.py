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

import importlib.util
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

from crm_bulk.bench import cpu, profiling, scenarios, stages
from crm_bulk.bench.baselines import BaselineResult, SeedEstimate
from crm_bulk.bench.client import Account, ApiClient, encode_body
from crm_bulk.bench.datagen import generate_contacts
from crm_bulk.bench.load import run_load
from crm_bulk.bench.report import machine_facts
from crm_bulk.bench.stack import BenchStack, StackOptions
from crm_bulk.errors import ConfigError
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
        processes = self.stack.options.processes
        ids: list[int] | None = None
        if name == "update_ids":
            ids = scenarios.live_ids(dsn, self.platform.account_id).tolist()
        _prepare_table(dsn)
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
        stages.wait_shipped(dsn, job["id"], timeout=SHIP_TIMEOUT_SECONDS)
        line = stages.timeline(dsn, job["id"])
        stats = self.api.stats(self.platform, job["id"])
        entities = int(job["total"])
        seconds = (line.finished or answered_at) - posted_at
        eps = entities / seconds if seconds > 0 else 0.0
        self.progress(f"{name}: {entities:,} entities in {seconds:.1f} s ({eps:,.0f}/s); baselines …")
        if name == "import":
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
        else:
            seed = self._seed(name, data)
            _prepare_table(dsn)
            ceiling = self._ceiling(name, data)
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
            "stages": stages.stages(
                line,
                posted_at=posted_at,
                answered_at=answered_at,
                upload=name == "import",
                processes=processes,
            ),
            "job": {
                k: job[k] for k in ("id", "status", "total", "succeeded", "failed", "skipped", "cancelled")
            },
            "cpu_seconds": cpu_seconds,
            "chunks": line.chunks,
            "chunk_latency_ms": stats["chunk_latency_ms"],
            "errors_by_code": stats["errors_by_code"],
            "skipped_by_reason": stats["skipped_by_reason"],
            "ceiling": {"rows": ceiling.rows, "seconds": ceiling.seconds, "streams": ceiling.streams},
            "seed": {
                "entities": seed.entities,
                "sampled_rows": seed.sampled_rows,
                "sample_seconds": seed.sample_seconds,
                "per_row_ms": seed.per_row_ms,
                "estimated_seconds": seed.estimated_seconds,
                "method": seed.method,
            },
            "posted_at": posted_at,
            "throughput": stats["throughput"],
        }
        if profile is not None:
            result["profile"] = profile
        return result

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


def _notes(options: BenchOptions) -> list[str]:
    processes = options.stack.processes
    return [
        "seconds: from the POST to the job's terminal status (its finished_at), upload, planning, "
        "queueing and applying included; the outcome log reaches ClickHouse after that (log_shipping).",
        f"ceiling: {processes} parallel stream(s) (one per worker process) on a second account seeded "
        "with the same rows; per stream one transaction: a binary COPY of its share of the input "
        "(import: the rows already validated, normalised and de-duplicated by the platform's kernels, "
        "outside the timing; update_ids: the ids) into a temp table and one set-based statement; filter "
        "and `all` targets: one UPDATE per id range. No API, queue or outcome log. Its rate is the "
        "scenario's entities over its time.",
        "seed: the seed algorithm run sequentially on one connection, TIMED ON A SAMPLE of "
        f"{options.seed_pages} pages of 1000 rows spread over the target range and EXTRAPOLATED to the "
        "whole job (per scenario `seed.method` in the JSON); it works on the ceiling's account with "
        "values of its own, a sampled delete undone untimed.",
        "before each platform and ceiling run: VACUUM (ANALYZE) contacts and CHECKPOINT, untimed.",
        "the benchmark account's limits are raised to the API's maxima (10,000,000 entities/s, "
        "1,000,000 requests/minute) so the platform, not the account's rate limit, is measured.",
    ]


def run_bench(options: BenchOptions, *, progress: Progress) -> dict[str, Any]:
    """Run the whole benchmark; return the results document (see `crm_bulk.bench.report`)."""
    missing = [name for name in ("matplotlib", "locust") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError("crm-bulk bench", f"needs {' and '.join(missing)}: pip install 'crm-bulk[dev]'")
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
    notes = _notes(options)
    if run.aligned:
        notes.append(
            f"the platform's import wrote {run.aligned:,} fewer contacts than the ceiling's (see the "
            "outcomes); those rows were removed from the ceiling's account (untimed) so every later "
            "scenario changes identical data on both sides."
        )
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
