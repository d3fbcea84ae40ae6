"""`crm-bulk bench`: the throughput suite on an isolated stack of its own (needs the `bench` extra)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from crm_bulk.cli.base import friendly_errors, main
from crm_bulk.settings import DEFAULT_CHUNK_SIZE


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return values


@main.command()
@click.option("--quick", is_flag=True, help="100,000 entities instead of 1,000,000.")
@click.option(
    "--entities",
    type=click.IntRange(min=1000),
    default=None,
    help="Entities to generate (overrides --quick).",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the results as JSON."
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Throughput chart (PNG); default: beside --out, else ./crm-bulk-bench.png.",
)
@click.option("--deployment", type=click.Choice(["embedded", "kafka"]), default="embedded", show_default=True)
@click.option(
    "--kafka",
    default="127.0.0.1:59092",
    show_default=True,
    help="Broker of the kafka deployment (host:port).",
)
@click.option(
    "--processes", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes."
)
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE, show_default=True)
@click.option(
    "--partitions", type=click.IntRange(min=1), default=6, show_default=True, help="Kafka topic partitions."
)
@click.option("--sweep", is_flag=True, help="Also try chunk sizes x processes and print the best.")
@click.option("--sweep-chunk-sizes", default="1000,5000,20000", show_default=True)
@click.option("--sweep-processes", default="1,2,4", show_default=True)
@click.option("--sweep-entities", type=click.IntRange(min=1000), default=200_000, show_default=True)
@click.option(
    "--database-url",
    default=None,
    help="A PostgreSQL server to use instead of starting one: the bench creates and drops a database there.",
)
@click.option("--load-users", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--load-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option(
    "--seed-pages", type=click.IntRange(min=1), default=4, show_default=True, help="Seed-algorithm sample."
)
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="py-spy the workers and API per scenario (and auto_explain slow statements) into this folder.",
)
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Copy the services' and PostgreSQL's logs into this folder at the end.",
)
@friendly_errors
# Over fifty lines only because click hands every option over as its own parameter.
def bench(
    *,
    quick: bool,
    entities: int | None,
    out: Path | None,
    chart: Path | None,
    deployment: str,
    kafka: str,
    processes: int,
    chunk_size: int,
    partitions: int,
    sweep: bool,
    sweep_chunk_sizes: str,
    sweep_processes: str,
    sweep_entities: int,
    database_url: str | None,
    load_users: int,
    load_seconds: float,
    seed_pages: int,
    profile: Path | None,
    logs: Path | None,
) -> None:
    """Throughput benchmark on an isolated stack of its own: five bulk actions end to end through the API,
    beside the raw-SQL ceiling and the seed algorithm, plus an API load run."""
    from crm_bulk.bench import require_bench_extra

    # Before the suite's modules are imported: without the extra, one line naming it, not a traceback.
    require_bench_extra()
    from crm_bulk.bench import report
    from crm_bulk.bench.runner import BenchOptions, run_bench
    from crm_bulk.bench.stack import StackOptions

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    count = entities or (100_000 if quick else 1_000_000)
    options = BenchOptions(
        entities=count,
        stack=StackOptions(
            processes=processes,
            chunk_size=chunk_size,
            partitions=partitions,
            deployment="kafka" if deployment == "kafka" else "embedded",
            kafka_bootstrap=kafka,
            database_url=database_url,
            logs_dir=logs,
        ),
        seed_pages=seed_pages,
        load_users=load_users,
        load_seconds=load_seconds,
        sweep=sweep,
        sweep_chunk_sizes=_int_list(sweep_chunk_sizes),
        sweep_processes=_int_list(sweep_processes),
        sweep_entities=min(sweep_entities, count),
        profile=profile,
        command=" ".join(["crm-bulk", *sys.argv[1:]]),
    )
    chart_path = chart or (out.with_suffix(".png") if out else Path("crm-bulk-bench.png"))
    for path in (out, chart_path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    results = run_bench(options, progress=lambda line: click.echo(line, err=True))
    report.throughput_chart(results["scenarios"], chart_path, title=f"crm-bulk bench: {count:,} entities")
    results["chart"] = str(chart_path)
    if out is not None:
        report.write_json(results, out)
    click.echo(report.markdown(results))
    click.echo(f"\nchart: {chart_path}" + (f"; results: {out}" if out else ""))
