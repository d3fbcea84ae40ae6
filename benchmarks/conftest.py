"""Benchmark plumbing: import the pure-Python references from tests/, print kernel speed ratios at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # The pure-Python baselines live with the tests (tests/unit/reference_kernels.py).
    sys.path.insert(0, str(ROOT))

# (kernel, implementation) -> median seconds, filled by benchmarks/test_bench_kernels.py.
KERNEL_TIMINGS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="session")
def kernel_timings() -> dict[tuple[str, str], float]:
    """Where kernel benchmarks record their median times for the summary table."""
    return KERNEL_TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A table of how many times faster the chosen implementation is than each alternative."""
    kernels = sorted({kernel for kernel, _ in KERNEL_TIMINGS})
    if not kernels:
        return
    write = terminalreporter.write_line
    write("")
    write("kernel speed (median seconds per call; ratio = alternative / rust)")
    write(f"{'kernel':<16} {'rust':>9} {'polars':>9} {'python':>9} {'vs python':>10} {'vs polars':>10}")
    for kernel in kernels:
        times = {impl: KERNEL_TIMINGS.get((kernel, impl)) for impl in ("rust", "polars", "python")}
        chosen = times["rust"]

        def cell(value: float | None) -> str:
            return f"{value:9.3f}" if value is not None else f"{'-':>9}"

        def ratio(other: float | None, base: float | None = chosen) -> str:
            return f"{other / base:9.1f}x" if other is not None and base else f"{'-':>10}"

        write(
            f"{kernel:<16} {cell(times['rust'])} {cell(times['polars'])} {cell(times['python'])} "
            f"{ratio(times['python'])} {ratio(times['polars'])}"
        )
