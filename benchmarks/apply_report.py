"""The apply-engine benchmark's Markdown report (benchmarks/bench_apply.py), printed to stdout."""

from __future__ import annotations

import statistics
from typing import Any

PHASES = ("lock", "decode", "checks", "stage", "statement", "outcomes", "outbox", "ledger", "commit")


def fmt_rate(rate: float) -> str:
    """Entities per second, whole, with thousands separators."""
    return f"{rate:,.0f}"


def phase_table(phases: dict[str, float]) -> str:
    """Each apply phase's share of the summed time, in the engine's order."""
    total = sum(phases.values()) or 1.0
    return ", ".join(f"{name} {phases[name] / total:.0%}" for name in PHASES if name in phases)


def print_comparison(results: dict[str, Any]) -> None:
    """Platform, ceiling and seed per action, then each action's planning, HOT share and phases."""
    print(
        f"\n## Apply throughput: {results['rows']:,} entities, {results['streams']} streams, "
        f"chunk size {results['chunk_size']}"
    )
    print(
        "\n| action | platform (entities/s) | ceiling | seed (extrapolated) | platform / ceiling "
        "| paired runs: median (each) | platform / seed |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for action in ("update", "import"):
        r = results[action]
        p, c, s = r["platform"]["rate"], r["ceiling"]["rate"], r["seed"]["rate"]
        pairs = r["paired_ratios"]
        each = " ".join(f"{x:.2f}" for x in pairs)
        print(
            f"| {action} | {fmt_rate(p)} | {fmt_rate(c)} | {fmt_rate(s)} | {p / c:.2f} "
            f"| {statistics.median(pairs):.2f} ({each}) | {p / s:.0f}x |"
        )
    for action in ("update", "import"):
        p, c, s = (results[action][variant] for variant in ("platform", "ceiling", "seed"))
        print(
            f"\n{action}: planning {p['plan_seconds']:.1f} s for {p['chunks']} chunks; "
            f"apply {p['seconds']:.1f} s; ceiling {c['seconds']:.1f} s; HOT share platform "
            f"{p['hot_share']:.0%} / ceiling {c['hot_share']:.0%}; runs platform "
            f"{[round(x) for x in p['rates']]} ceiling {[round(x) for x in c['rates']]}"
        )
        print(f"{action} time per phase (sum over streams): {phase_table(p['phase_ms'])}")
        print(f"{action} seed: {s['method']}")


def print_chunk_sizes(sweep: dict[Any, dict[str, Any]]) -> None:
    """The chunk-size sweep: median rates and every run's."""
    print("\n### Chunk size (platform, entities/s, median of runs)\n")
    print("| chunk size | update | import | update runs | import runs |\n|---:|---:|---:|---|---|")
    for size, r in sweep.items():
        print(
            f"| {size} | {fmt_rate(r['update'])} | {fmt_rate(r['import'])} "
            f"| {' '.join(fmt_rate(x) for x in r['update_runs'])} "
            f"| {' '.join(fmt_rate(x) for x in r['import_runs'])} |"
        )


def print_fillfactors(sweep: dict[Any, dict[str, Any]]) -> None:
    """The fillfactor sweep: update and import rates, HOT shares and table sizes."""
    print("\n### contacts fillfactor (platform, entities/s; HOT share of updates)\n")
    print(
        "| fillfactor | update pass 1 | HOT pass 1 | update pass 2 | HOT both passes | scattered update "
        "| HOT scattered | import | table MB (2 updates) | table MB (imported) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ff, r in sweep.items():
        print(
            f"| {ff} | {fmt_rate(r['update_pass1'])} | {r['hot_pass1']:.0%} "
            f"| {fmt_rate(r['update_pass2'])} | {r['hot_both_passes']:.0%} "
            f"| {fmt_rate(r['scattered_update'])} | {r['hot_scattered']:.0%} | {fmt_rate(r['import'])} "
            f"| {r['table_mb_after_updates']:.0f} | {r['table_mb_imported']:.0f} |"
        )


def print_copy_formats(sweep: dict[str, dict[str, Any]]) -> None:
    """Encode and COPY time per input format for one import chunk."""
    print("\n### COPY input format for one import chunk (median)\n")
    print("| format | encode ms | COPY ms | bytes |\n|---|---:|---:|---:|")
    for fmt, r in sweep.items():
        print(f"| {fmt} | {r['encode_ms']:.1f} | {r['copy_ms']:.1f} | {r['bytes']:,} |")


def print_report(results: dict[str, Any]) -> None:
    """Every section the run produced, then the wall time."""
    if "update" in results:
        print_comparison(results)
    sweeps = results.get("sweeps")
    if sweeps:
        print_chunk_sizes(sweeps["chunk_size"])
        if sweeps["fillfactor"]:
            print_fillfactors(sweeps["fillfactor"])
        print_copy_formats(sweeps["copy_format"])
    print(f"\nbenchmark wall time {results['total_seconds']:.0f} s")
