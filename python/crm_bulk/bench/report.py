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


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: scenarios, stages, API load, sweep, and how each number was made."""
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
    lines += [
        "",
        "Outcomes (every job must end with total = succeeded + failed + skipped + cancelled):",
        "",
        "| scenario | status | succeeded | failed | skipped | cancelled | failures by code "
        "| skips by reason |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for s in results["scenarios"]:
        job = s["job"]
        errors = ", ".join(f"{k} {v:,}" for k, v in sorted(s["errors_by_code"].items())) or "-"
        skips = ", ".join(f"{k} {v:,}" for k, v in sorted(s["skipped_by_reason"].items())) or "-"
        lines.append(
            f"| {s['name']} | {job['status']} | {job['succeeded']:,} | {job['failed']:,} "
            f"| {job['skipped']:,} | {job['cancelled']:,} | {errors} | {skips} |"
        )
    lines += ["", "Stages (seconds): " + ", ".join(STAGE_ORDER) + "; then the workers' busy share.", ""]
    lines += [
        "| scenario | " + " | ".join(STAGE_ORDER) + " | workers busy |",
        "|---|" + "---:|" * (len(STAGE_ORDER) + 1),
    ]
    for s in results["scenarios"]:
        st = s["stages"]
        cells = " | ".join(f"{st[k]:.1f}" if k in st else "-" for k in STAGE_ORDER)
        busy = st["chunk_apply_busy"] / st["apply"] if st.get("apply") else 0.0
        lines.append(f"| {s['name']} | {cells} | {busy:.0%} |")
    lines += [
        "",
        "CPU seconds spent by each part while the job ran (available: seconds x cores):",
        "",
        "| scenario | available | api | workers | scheduler | postgres | bench client |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    cores = machine["cores"]
    for s in results["scenarios"]:
        used = s.get("cpu_seconds", {})
        cells = " | ".join(
            f"{used[k]:.1f}" if k in used else "-"
            for k in ("api", "workers", "scheduler", "postgres", "bench")
        )
        lines.append(f"| {s['name']} | {s['seconds'] * cores:.1f} | {cells} |")
    load = results.get("api_load")
    if load:
        lines += [
            "",
            f"API load: {load['tool']}, {load['users']} users for {load['seconds']:.0f} s on loopback.",
            "",
            "| endpoint | requests | failures | requests/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for e in load["endpoints"]:
            lines.append(
                f"| {e['name']} | {e['requests']:,} | {e['failures']} | {e['requests_per_second']:.0f} "
                f"| {e['p50_ms']:.0f} | {e['p99_ms']:.0f} |"
            )
    sweep = results.get("sweep")
    if sweep:
        lines += [
            "",
            f"Sweep ({sweep['entities']:,} entities per run): import and update-by-filter, entities/s.",
            "",
            "| chunk size | processes | import | update |",
            "|---:|---:|---:|---:|",
        ]
        for r in sweep["runs"]:
            rates = f"{_rate(r['import_eps'])} | {_rate(r['update_eps'])}"
            lines.append(f"| {r['chunk_size']} | {r['processes']} | {rates} |")
        best = sweep["best"]
        lines += [
            "",
            f"Best: chunk size {best['chunk_size']}, {best['processes']} processes "
            f"(import {_rate(best['import_eps'])}/s, update {_rate(best['update_eps'])}/s; "
            "ranked by the geometric mean of both).",
        ]
    profiled = [s for s in results["scenarios"] if s.get("profile")]
    if profiled:
        lines += ["", "Profile (py-spy, worker processes): share of the chunk-applying samples.", ""]
        for s in profiled:
            workers = s["profile"].get("workers", {})
            # The worker loop's frames hold every sample; what is under them is the news.
            below = [(name, share) for name, share in workers.get("inclusive", []) if share < 0.995]
            inclusive = ", ".join(f"{name} {share:.0%}" for name, share in below[:5])
            innermost = ", ".join(f"{name} {share:.0%}" for name, share in workers.get("self", [])[:3])
            lines.append(f"- {s['name']}: in {inclusive or '-'}; innermost {innermost or '-'}")
    lines += ["", "How the baselines were made:"]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


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
