"""Memory an XLSX import takes in the API process: calamine loads a sheet whole before any row is read.

    .venv/bin/python benchmarks/xlsx_memory.py                   # 50k, 200k and 400k rows
    .venv/bin/python benchmarks/xlsx_memory.py --rows 100000

For each size a workbook of export-like rows (email, names, a numeric phone, company, title, two more
columns) is written with openpyxl, then read in a fresh process through `crm_bulk.imports.XlsxParser`
exactly as an upload is (spooled, opened by path, dealt out as import frames and dropped, as the upload
session stores and drops them). The child reports its peak resident set size (`ru_maxrss`) before and after;
the difference is what the workbook cost. `CRM_BULK_MAX_XLSX_BYTES` is chosen from these numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openpyxl  # type: ignore[import-untyped]

DEFAULT_ROWS = (50_000, 200_000, 400_000)


def write_workbook(path: Path, rows: int) -> None:
    """A workbook of `rows` export-like contacts in its first sheet."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Contacts")
    sheet.append(
        ["Email", "First Name", "Last Name", "Phone Number", "Company Name", "Job Title", "Stage", "Score"]
    )
    for i in range(rows):
        sheet.append(
            [
                f"person{i}@example.com",
                f"First{i}",
                f"Last{i}",
                2125550000 + i % 10000,
                "Acme Inc",
                "Engineer",
                "lead",
                i % 100 + 0.5,
            ]
        )
    book.save(path)


def measure_child(path: str) -> dict[str, float]:
    """Run in the child: read the workbook as an upload does; peak RSS before and after, in MB."""
    from crm_bulk.imports import XlsxParser

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    parser = XlsxParser(max_bytes=1 << 40)
    with open(path, "rb") as source:
        while piece := source.read(1 << 20):
            parser.feed(piece)
    rows = sum(frame.height for frame in parser.finish())
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "rss_before_mb": before, "rss_peak_mb": after}


def main() -> None:
    """Write, measure, print one JSON line per size."""
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure_child(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, action="append", help="rows per workbook (repeatable)")
    sizes = parser.parse_args().rows or list(DEFAULT_ROWS)
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            path = Path(folder) / f"contacts-{rows}.xlsx"
            write_workbook(path, rows)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout)
            size_mb = path.stat().st_size / 1024**2
            result |= {
                "xlsx_mb": round(size_mb, 1),
                "rss_added_mb": round(result["rss_peak_mb"] - result["rss_before_mb"], 1),
            }
            result["rss_added_per_xlsx_mb"] = round(result["rss_added_mb"] / size_mb, 1)
            print(json.dumps(result))


if __name__ == "__main__":
    main()
