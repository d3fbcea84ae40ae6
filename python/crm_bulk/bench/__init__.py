"""The throughput benchmark suite behind `crm-bulk bench`: data, baselines, scenarios, report.

What the suite needs beyond the base install comes with the `bench` extra. `require_bench_extra` looks for
those modules without importing them: importing locust patches the whole process with gevent, which the
bench must not be.
"""

from __future__ import annotations

import importlib.util

from crm_bulk.errors import ConfigError

# The `bench` extra's modules (pyproject.toml): the stack's HTTP client, the chart, the API load run.
BENCH_MODULES = ("httpx", "matplotlib", "locust")


def missing_bench_modules() -> list[str]:
    """The modules of the `bench` extra that cannot be imported here."""
    return [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]


def require_bench_extra() -> None:
    """Raise `ConfigError` naming the `bench` extra when any of its modules is missing."""
    missing = missing_bench_modules()
    if missing:
        raise ConfigError(
            "crm-bulk bench",
            f"needs the bench extra (missing {', '.join(missing)}): pip install 'crm-bulk[bench]'",
        )
