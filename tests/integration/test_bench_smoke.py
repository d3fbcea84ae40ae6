"""`crm-bulk bench` end to end on a small data set: its own PostgreSQL, API, workers and scheduler, five
scenarios through the HTTP API, both baselines, the API load run, the JSON, the chart. No thresholds: the
numbers must exist, be positive and add up, and every job must end with exact counts.

The seed algorithm's extrapolation is checked on its own with made-up timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crm_bulk.bench.baselines import SEED_PAGE_SIZE, _page_query_total, id_ranges, sample_pages
from crm_bulk.bench.scenarios import SCENARIOS

ENTITIES = 20_000
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


def _bench(out: Path, *options: str) -> tuple[dict[str, Any], Path, str]:
    """Run `crm-bulk bench` small and quick; (results document, chart path, stdout)."""
    command = [
        sys.executable,
        "-m",
        "crm_bulk.cli",
        "bench",
        "--seed-pages",
        "1",
        "--load-users",
        "4",
        "--load-seconds",
        "3",
        "--out",
        str(out),
        *options,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text()), out.with_suffix(".png"), result.stdout


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """One small run of the embedded deployment."""
    return _bench(tmp_path_factory.mktemp("bench") / "bench.json", "--entities", str(ENTITIES))


def test_every_scenario_reports_positive_numbers(bench_run: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = bench_run
    scenarios = {s["name"]: s for s in results["scenarios"]}
    assert list(scenarios) == [s.name for s in SCENARIOS]
    for name, s in scenarios.items():
        for key in (
            "entities",
            "seconds",
            "entities_per_second",
            "ceiling_entities_per_second",
            "seed_entities_per_second",
            "ratio_to_ceiling",
            "ratio_to_seed",
        ):
            assert s[key] > 0, (name, key, s[key])
        assert s["stages"]["apply"] > 0, name
        assert set(s["cpu_seconds"]) == {"api", "workers", "scheduler", "postgres", "bench"}, name
        assert s["cpu_seconds"]["postgres"] > 0, name
        assert s["ceiling"]["rows"] > 0, name
        assert s["seed"]["sampled_rows"] > 0, name
    assert scenarios["import"]["entities"] == ENTITIES
    assert scenarios["import"]["stages"]["upload"] > 0


def test_every_job_ends_with_exact_counts(bench_run: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = bench_run
    for s in results["scenarios"]:
        job = s["job"]
        assert job["status"] in TERMINAL, s["name"]
        assert job["total"] == job["succeeded"] + job["failed"] + job["skipped"] + job["cancelled"], job
        assert job["total"] == s["entities"]
    imported = results["scenarios"][0]["job"]
    # About 2% invalid emails and 5% repeated ones in the generated file: both kinds of outcome occur.
    assert imported["failed"] > 0 and imported["skipped"] > 0
    # Every later scenario targets exactly the contacts the import created, and its ceiling changes the same
    # number of rows on the ceiling's account (identical data on both sides).
    for s in results["scenarios"][1:]:
        assert s["entities"] == imported["succeeded"], s["name"]
        assert s["ceiling"]["rows"] == s["entities"], s["name"]


def test_machine_load_and_outputs(bench_run: tuple[dict[str, Any], Path, str]) -> None:
    results, chart, stdout = bench_run
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["memory_gb"] > 0
    assert machine["postgres"].startswith("18")
    assert machine["deployment"] == "embedded"
    endpoints = {e["name"]: e for e in results["api_load"]["endpoints"]}
    for name in ("GET /bulk-actions/{id}", "POST /contacts"):
        assert endpoints[name]["requests"] > 0
        assert endpoints[name]["requests_per_second"] > 0
        assert endpoints[name]["p99_ms"] >= endpoints[name]["p50_ms"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "| import |" in stdout and "EXTRAPOLATED" in stdout


@pytest.mark.kafka
def test_the_kafka_deployment_runs_every_scenario(kafka_bootstrap: str, tmp_path: Path) -> None:
    results, _, _ = _bench(
        tmp_path / "bench.json", "--entities", "3000", "--deployment", "kafka", "--kafka", kafka_bootstrap
    )
    assert results["machine"]["deployment"] == "kafka"
    assert [s["name"] for s in results["scenarios"]] == [s.name for s in SCENARIOS]
    for s in results["scenarios"]:
        job = s["job"]
        assert job["status"] in TERMINAL
        assert job["total"] == job["succeeded"] + job["failed"] + job["skipped"] + job["cancelled"] > 0
        assert s["entities_per_second"] > 0 and s["ceiling_entities_per_second"] > 0


@pytest.mark.parametrize(
    ("total", "sample", "expected"),
    [(0, 4, []), (1, 4, [0]), (10, 1, [0]), (10, 2, [0, 9]), (1000, 4, [0, 333, 666, 999])],
)
def test_sampled_pages_span_the_range(total: int, sample: int, expected: list[int]) -> None:
    assert sample_pages(total, sample) == expected


def test_page_query_cost_is_extrapolated_linearly_in_the_offset() -> None:
    # Sampled pages cost 1 ms plus 1 ms per 1000 rows skipped: the sum over 100 pages is 100 + 0+1+…+99 ms.
    offsets = [0.0, 50_000.0, 99_000.0]
    seconds = [0.001 + o / SEED_PAGE_SIZE * 0.001 for o in offsets]
    assert _page_query_total(offsets, seconds, 100) == pytest.approx(0.1 + 4.95)


def test_id_ranges_split_evenly_and_cover_every_id() -> None:
    ids = np.array([5, 1, 9, 3, 7, 11, 2], dtype=np.int64)
    ranges = id_ranges(ids, 3)
    assert ranges == [(1, 3), (5, 7), (9, 11)]
    assert all(any(a <= i <= b for a, b in ranges) for i in ids)


@pytest.mark.postgres
def test_the_apply_engine_benchmark_runs(pg_server_url: str, tmp_path: Path) -> None:
    """`benchmarks/bench_apply.py`, small: every variant reports a positive rate for both actions."""
    out = tmp_path / "apply.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_apply.py"
    command = [sys.executable, str(script), "--server-url", pg_server_url, "--rows", "20000"]
    command += ["--no-sweeps", "--seed-seconds", "1", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    document = json.loads(out.read_text())
    for action in ("update", "import"):
        assert document[action]["platform"]["rows"] == 20_000
        for variant in ("platform", "ceiling", "seed"):
            assert document[action][variant]["rate"] > 0, (action, variant)
    assert "| import |" in result.stdout
