"""The bench's outputs: the results document (JSON), markdown tables for stdout, and the throughput chart."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STAGE_ORDER = ("upload", "planning", "queue_wait", "apply", "finalise", "log_shipping")


def machine_facts(*, postgres: str, deployment: str) -> dict[str, Any]:
    """Cores, memory, PostgreSQL version, deployment, and how busy the machine was at the start."""
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count() or 0,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "postgres": postgres,
        "deployment": deployment,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    """The results document, indented."""
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def method_notes(*, processes: int, seed_pages: int, aligned: int) -> list[str]:
    """How each number was made, for the report's last section; `aligned` is how many rows the ceiling's
    account lost to match the platform's import."""
    notes = [
        "seconds: from the POST to the job's terminal status (its finished_at), upload, planning, "
        "queueing and applying included; the outcome log reaches ClickHouse after that (log_shipping).",
        f"ceiling: {processes} parallel stream(s) (one per worker process) on a second account seeded "
        "with the same rows; per stream one transaction: a binary COPY of its share of the input "
        "(import: the rows already validated, normalised and de-duplicated by the platform's kernels, "
        "outside the timing; update_ids: the ids) into a temp table and one set-based statement; filter "
        "and `all` targets: one UPDATE per id range. No API, queue or outcome log. Its rate is the "
        "scenario's entities over its time.",
        "seed: the seed algorithm run sequentially on one connection, TIMED ON A SAMPLE of "
        f"{seed_pages} pages of 1000 rows spread over the target range and EXTRAPOLATED to the "
        "whole job (per scenario `seed.method` in the JSON); it works on the ceiling's account with "
        "values of its own, a sampled delete undone untimed.",
        "before each platform and ceiling run: VACUUM (ANALYZE) contacts and CHECKPOINT, untimed.",
        "the benchmark account's limits are raised to the API's maxima (10,000,000 entities/s, "
        "1,000,000 requests/minute) so the platform, not the account's rate limit, is measured.",
    ]
    if aligned:
        notes.append(
            f"the platform's import wrote {aligned:,} fewer contacts than the ceiling's (see the "
            "outcomes); those rows were removed from the ceiling's account (untimed) so every later "
            "scenario changes identical data on both sides."
        )
    return notes


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: scenarios, stages, API load, sweep, and how each number was made."""
    lines = _scenario_lines(results)
    lines += _stage_and_cpu_lines(results["scenarios"], cores=results["machine"]["cores"])
    if results.get("api_load"):
        lines += _load_lines(results["api_load"])
    if results.get("sweep"):
        lines += _sweep_lines(results["sweep"])
    lines += _profile_lines(results["scenarios"])
    lines += ["", "How the baselines were made:"]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


def _table(caption: str, header: str, rule: str) -> list[str]:
    """The opening of a section: a blank line, its caption, a blank line, then its table's header and rule."""
    return ["", caption, "", header, rule]


def _scenario_lines(results: dict[str, Any]) -> list[str]:
    """The heading, the machine, the throughput table and the outcomes table."""
    machine = results["machine"]
    lines = [
        f"## crm-bulk bench: {results['entities']:,} entities, {machine['deployment']} deployment, "
        f"{results['config']['processes']} worker processes, chunk size {results['config']['chunk_size']}",
        "",
        f"Machine: {machine['cores']} cores, {machine['memory_gb']} GB, PostgreSQL {machine['postgres']}; "
        f"load average at start {machine['load_average_at_start']}.",
        f"Command: `{results['command']}`",
        "",
        "| scenario | entities | seconds | entities/s | ceiling entities/s | seed entities/s (extrapolated) "
        "| x ceiling | x seed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["scenarios"]:
        lines.append(
            f"| {s['name']} | {s['entities']:,} | {s['seconds']:.1f} | {_rate(s['entities_per_second'])} "
            f"| {_rate(s['ceiling_entities_per_second'])} | {_rate(s['seed_entities_per_second'])} "
            f"| {_ratio(s['ratio_to_ceiling'])} | {s['ratio_to_seed']:.0f}x |"
        )
    lines += _table(
        "Outcomes (every job must end with total = succeeded + failed + skipped + cancelled):",
        "| scenario | status | succeeded | failed | skipped | cancelled | failures by code "
        "| skips by reason |",
        "|---|---|---:|---:|---:|---:|---|---|",
    )
    for s in results["scenarios"]:
        job = s["job"]
        errors = ", ".join(f"{k} {v:,}" for k, v in sorted(s["errors_by_code"].items())) or "-"
        skips = ", ".join(f"{k} {v:,}" for k, v in sorted(s["skipped_by_reason"].items())) or "-"
        lines.append(
            f"| {s['name']} | {job['status']} | {job['succeeded']:,} | {job['failed']:,} "
            f"| {job['skipped']:,} | {job['cancelled']:,} | {errors} | {skips} |"
        )
    return lines


def _stage_and_cpu_lines(scenarios: Sequence[dict[str, Any]], *, cores: int) -> list[str]:
    """Seconds per stage and CPU seconds per part, per scenario."""
    lines = _table(
        "Stages (seconds): " + ", ".join(STAGE_ORDER) + "; then the workers' busy share.",
        "| scenario | " + " | ".join(STAGE_ORDER) + " | workers busy |",
        "|---|" + "---:|" * (len(STAGE_ORDER) + 1),
    )
    for s in scenarios:
        st = s["stages"]
        cells = " | ".join(f"{st[k]:.1f}" if k in st else "-" for k in STAGE_ORDER)
        busy = st["chunk_apply_busy"] / st["apply"] if st.get("apply") else 0.0
        lines.append(f"| {s['name']} | {cells} | {busy:.0%} |")
    lines += _table(
        "CPU seconds spent by each part while the job ran (available: seconds x cores):",
        "| scenario | available | api | workers | scheduler | postgres | bench client |",
        "|---|---:|---:|---:|---:|---:|---:|",
    )
    for s in scenarios:
        used = s.get("cpu_seconds", {})
        cells = " | ".join(
            f"{used[k]:.1f}" if k in used else "-"
            for k in ("api", "workers", "scheduler", "postgres", "bench")
        )
        lines.append(f"| {s['name']} | {s['seconds'] * cores:.1f} | {cells} |")
    return lines


def _load_lines(load: dict[str, Any]) -> list[str]:
    """The API load run per endpoint."""
    rows = [
        f"| {e['name']} | {e['requests']:,} | {e['failures']} | {e['requests_per_second']:.0f} "
        f"| {e['p50_ms']:.0f} | {e['p99_ms']:.0f} |"
        for e in load["endpoints"]
    ]
    return (
        _table(
            f"API load: {load['tool']}, {load['users']} users for {load['seconds']:.0f} s on loopback.",
            "| endpoint | requests | failures | requests/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        )
        + rows
    )


def _sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """The chunk size x processes sweep and its best pair."""
    lines = _table(
        f"Sweep ({sweep['entities']:,} entities per run): import and update-by-filter, entities/s.",
        "| chunk size | processes | import | update |",
        "|---:|---:|---:|---:|",
    )
    lines += [
        f"| {r['chunk_size']} | {r['processes']} | {_rate(r['import_eps'])} | {_rate(r['update_eps'])} |"
        for r in sweep["runs"]
    ]
    best = sweep["best"]
    lines += [
        "",
        f"Best: chunk size {best['chunk_size']}, {best['processes']} processes "
        f"(import {_rate(best['import_eps'])}/s, update {_rate(best['update_eps'])}/s; "
        "ranked by the geometric mean of both).",
    ]
    return lines


def _profile_lines(scenarios: Sequence[dict[str, Any]]) -> list[str]:
    """Where the workers' samples fell, for the scenarios run with a profile."""
    profiled = [s for s in scenarios if s.get("profile")]
    if not profiled:
        return []
    lines = ["", "Profile (py-spy, worker processes): share of the chunk-applying samples.", ""]
    for s in profiled:
        workers = s["profile"].get("workers", {})
        # The worker loop's frames hold every sample; what is under them is the news.
        below = [(name, share) for name, share in workers.get("inclusive", []) if share < 0.995]
        inclusive = ", ".join(f"{name} {share:.0%}" for name, share in below[:5])
        innermost = ", ".join(f"{name} {share:.0%}" for name, share in workers.get("self", [])[:3])
        lines.append(f"- {s['name']}: in {inclusive or '-'}; innermost {innermost or '-'}")
    return lines


def _epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without an offset is UTC (ClickHouse DateTime)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def throughput_chart(scenarios: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
    """Entities per second over each job's lifetime (from its stats endpoint), one line per scenario, with
    the scenario's raw-SQL ceiling as a dashed line in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    for index, scenario in enumerate(scenarios):
        colour = f"C{index}"
        points = scenario.get("throughput") or []
        # Buckets are whole seconds [t, t+1): drawn as steps from the second the job was posted.
        origin = math.floor(scenario["posted_at"])
        xs, ys = [0.0], [0]
        for point in points:
            start = _epoch(point["t"]) - origin
            if xs[-1] < start:
                xs += [xs[-1], start]
                ys += [0, 0]
            xs.append(start)
            ys.append(int(point["entities"]))
            xs.append(start + 1)
            ys.append(int(point["entities"]))
        xs.append(xs[-1])
        ys.append(0)
        label = f"{scenario['name']} ({scenario['entities_per_second']:,.0f}/s overall)"
        ax.plot(xs, ys, color=colour, label=label, linewidth=1.4)
        ceiling = scenario.get("ceiling_entities_per_second")
        if ceiling:
            ax.axhline(ceiling, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
    ax.set_xlabel("seconds since the job was posted (one-second buckets of finished entities)")
    ax.set_ylabel("entities finished per second")
    ax.set_title(title + "\n(dashed: the raw-SQL ceiling of the same colour's scenario)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
