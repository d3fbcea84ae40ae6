"""A large import through the command-line client, end to end, as a person runs it: both bars, the counts.

    .venv/bin/python benchmarks/cli_import.py --database-url postgresql://…/crm_bulk            # 1M rows
    .venv/bin/python benchmarks/cli_import.py --database-url postgresql://…/crm_bulk --rows 100000

A throw-away database is created on the given server, `crm-bulk up` (API, scheduler, two worker processes,
the log shipped to chDB) serves it, and `crm-bulk import contacts.csv` uploads a generated CSV
(`crm_bulk.bench.datagen`, about 1 in 1,000 emails invalid) and follows the job through its event stream. The
client's stderr (the upload and processing bars as last drawn) and stdout (the summary line) are printed,
with its wall time, its exit code and its peak resident set size (`VmHWM`, sampled as in
`cli_upload_memory.py`: `ru_maxrss` would report this script's own peak, carried over by the fork).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.databases import own_database  # noqa: E402
from tests.integration.client_support import platform  # noqa: E402

from cli_upload_memory import PeakSampler  # noqa: E402
from crm_bulk.bench.datagen import generate_contacts  # noqa: E402

PASSWORD = "correct horse battery staple"


def run(database_url: str, rows: int) -> None:
    """Serve a fresh database, import `rows` rows through the client, print what it showed."""
    with tempfile.TemporaryDirectory() as tmp, own_database(database_url, prefix="crm_bulk_cli") as url:
        folder = Path(tmp)
        source = folder / "contacts.csv"
        generate_contacts(rows).with_columns(pl.col("tags").list.join(";")).write_csv(source)
        with platform(url, folder, chunk_size=5000, events_interval=1.0, workers=2) as stack:
            email = "bench@example.com"
            made = httpx.post(
                f"{stack.base}/auth/register",
                json={"email": email, "password": PASSWORD, "account_name": "B"},
            )
            made.raise_for_status()
            env = os.environ | {
                "XDG_CONFIG_HOME": str(folder / "home"),
                "CRM_BULK_API_URL": stack.base,
                "PYTHONPATH": str(ROOT / "python"),
                "COLUMNS": "120",
            }
            client = [sys.executable, "-m", "crm_bulk.cli"]
            subprocess.run([*client, "login", "--email", email, "--password", PASSWORD], env=env, check=True)
            started = time.perf_counter()
            with (folder / "out").open("wb") as out, (folder / "err").open("wb") as err:
                child = subprocess.Popen([*client, "import", str(source)], env=env, stdout=out, stderr=err)
                sampler = PeakSampler(child.pid)
                os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
                peak_mb = sampler.wait()
                code = child.wait()
            seconds = time.perf_counter() - started
        print((folder / "err").read_text(), (folder / "out").read_text(), sep="", end="")
        print(
            f"{rows} rows, {source.stat().st_size / 1e6:.1f} MB: the client ran {seconds:.1f} s, exit code "
            f"{code}, peak resident set (VmHWM) {peak_mb:.1f} MB"
        )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database-url", required=True, help="A PostgreSQL server's database URL")
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows to import (default 1,000,000)")
    args = parser.parse_args()
    run(args.database_url, args.rows)


if __name__ == "__main__":
    main()
