"""The five scenarios, each three ways: the platform's request, the raw-SQL ceiling and the seed algorithm
(platform / ceiling below).

- `import`: a streamed CSV upload, `on_duplicate=update` / a COPY of the valid, normalised, unique rows and
  one upsert.
- `update_filter`: filter `created_at < 2100` (every contact), set `job_title` / one UPDATE per id range.
- `update_ids`: every live id of the account listed, set `company` / a COPY of the ids and one UPDATE … FROM.
- `add_tags`: target `all`, tag `bench` / one UPDATE per id range.
- `delete`: filter `company = Initrode` (every contact by then) / one soft-delete UPDATE per id range.

The ceiling works on a second account seeded with the same rows; the seed sample works on that account too,
with values of its own (a sampled delete is undone untimed), so the ceiling after it meets the same data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import psycopg

from crm_bulk.actions.filters import compile_filter
from crm_bulk.apply.checks import check_records
from crm_bulk.bench import baselines
from crm_bulk.bench.baselines import BaselineResult, SeedEstimate
from crm_bulk.ledger.payload import import_frame
from crm_bulk.sqlfiles import query

ALL_CONTACTS: dict[str, dict[str, Any]] = {"created_at": {"lt": "2100-01-01T00:00:00Z"}}
NEW_TITLE = "Head of Benchmarks"
NEW_COMPANY = "Initrode"
NEW_TAG = "bench"
SEED_SUFFIX = " (seed)"
CSV_PIECE_ROWS = 20_000


@dataclass(frozen=True)
class Scenario:
    """One scenario's name and what it does, for the report."""

    name: str
    action: str
    description: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("import", "import", "streamed CSV upload of every generated row, on_duplicate=update"),
    Scenario("update_filter", "update", "update by filter over every contact: set job_title"),
    Scenario("update_ids", "update", "update by a list of every contact's id: set company"),
    Scenario("add_tags", "add_tags", "add a tag to every contact (target all)"),
    Scenario("delete", "delete", "delete by filter (company) matching every contact"),
)


@dataclass(frozen=True)
class BenchData:
    """The generated rows in every shape a scenario sends: CSV pieces for the API, the staged (valid,
    normalised, de-duplicated) rows for the ceiling's COPY, and per-row parameters for the seed."""

    rows: int
    csv_pieces: list[bytes]
    staged: pl.DataFrame
    seed_rows: pl.DataFrame


def prepare_data(frame: pl.DataFrame) -> BenchData:
    """Every input built before any timing starts."""
    flat = frame.with_columns(pl.col("tags").list.join(";"))
    pieces = []
    for start in range(0, flat.height, CSV_PIECE_ROWS):
        out = io.BytesIO()
        flat.slice(start, CSV_PIECE_ROWS).write_csv(out, include_header=start == 0)
        pieces.append(out.getvalue())
    return BenchData(
        rows=frame.height, csv_pieces=pieces, staged=staged_rows(frame), seed_rows=seed_import_rows(frame)
    )


def staged_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """What the platform writes for `frame`: the valid rows, normalised, first occurrence of each email."""
    checked = check_records(import_frame(frame))
    return checked.filter(pl.col("code").is_null()).select(
        [name for name, _ in baselines.IMPORT_COPY_COLUMNS]
    )


def seed_import_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The seed script's rows: its own normalisation (trim, lower-case the email), nothing validated."""
    return frame.with_columns(
        email_normalized=pl.col("email").str.strip_chars().str.to_lowercase(),
        tags=pl.col("tags").fill_null([]),
        custom_fields=pl.col("custom_fields").fill_null("{}"),
    )


def platform_body(name: str, *, ids: Sequence[int] = ()) -> dict[str, Any]:
    """The POST /bulk-actions body of an id-target scenario."""
    if name == "update_filter":
        return {
            "action": "update",
            "target": {"filter": ALL_CONTACTS},
            "changes": {"set": {"job_title": NEW_TITLE}},
        }
    if name == "update_ids":
        return {
            "action": "update",
            "target": {"ids": list(ids)},
            "changes": {"set": {"company": NEW_COMPANY}},
        }
    if name == "add_tags":
        return {"action": "add_tags", "target": {"all": True}, "tags": [NEW_TAG]}
    if name == "delete":
        return {"action": "delete", "target": {"filter": {"company": {"eq": NEW_COMPANY}}}}
    raise ValueError(f"no JSON body for scenario {name!r}")


def live_ids(dsn: str, account_id: int) -> npt.NDArray[np.int64]:
    """The account's live contact ids, ascending."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            query("postgres", "bench", "account_live_ids"), {"account_id": account_id}
        ).fetchone()
    raw = bytes(row[0]) if row else b""
    return np.frombuffer(raw, dtype=">i8").astype(np.int64)


def align_ceiling_account(dsn: str, *, ceiling_account: int, platform_account: int) -> int:
    """Untimed: remove from the ceiling's account the contacts the platform's import did not write (a failed
    chunk, say); return how many."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            query("postgres", "bench", "align_ceiling_account"),
            {"ceiling_account": ceiling_account, "platform_account": platform_account},
        )
        return cur.rowcount


def run_ceiling(name: str, dsn: str, *, account_id: int, streams: int, data: BenchData) -> BaselineResult:
    """The scenario's raw-SQL ceiling on `account_id` with `streams` parallel streams."""
    if name == "import":
        payloads = baselines.import_payloads(data.staged, streams)
        return baselines.ceiling_import(dsn, account_id=account_id, payloads=payloads)
    ids = live_ids(dsn, account_id)
    if name == "update_ids":
        return baselines.ceiling_ids_update(
            dsn,
            statement="ceiling_set_company_ids",
            params={"account_id": account_id, "value": NEW_COMPANY},
            ids=ids,
            streams=streams,
        )
    statement, leading, target = {
        "update_filter": ("ceiling_set_job_title", [NEW_TITLE, NEW_TITLE], ALL_CONTACTS),
        "add_tags": ("ceiling_add_tag", [NEW_TAG, NEW_TAG], {}),
        "delete": ("ceiling_delete", [], {"company": {"eq": NEW_COMPANY}}),
    }[name]
    fragment, params = compile_filter(target)
    return baselines.ceiling_filter_update(
        dsn,
        statement=statement,
        leading=leading,
        account_id=account_id,
        ranges=baselines.id_ranges(ids, streams),
        filter_sql=fragment,
        filter_params=params,
    )


def run_seed(
    name: str, dsn: str, *, account_id: int, scratch_account_id: int, data: BenchData, pages: int
) -> SeedEstimate:
    """The seed algorithm on a sample of `pages` pages, extrapolated to the whole scenario.

    Imports go to `scratch_account_id` (emptied afterwards); the rest sample `account_id`'s contacts with
    values of their own, and a sampled delete is undone, so the ceiling that follows meets the same data.
    """
    if name == "import":
        return _seed_import(dsn, scratch_account_id=scratch_account_id, data=data, pages=pages)
    if name == "update_ids":
        return _seed_update_ids(dsn, account_id=account_id, pages=pages)
    statement, value, target = {
        "update_filter": ("seed_set_job_title", NEW_TITLE + SEED_SUFFIX, ALL_CONTACTS),
        "add_tags": ("seed_add_tag", NEW_TAG + "-seed", {}),
        "delete": ("seed_delete", None, {"company": {"eq": NEW_COMPANY}}),
    }[name]
    fragment, params = compile_filter(target)
    estimate, touched = baselines.seed_paged_update(
        dsn,
        account_id=account_id,
        filter_sql=fragment,
        filter_params=params,
        row_statement=statement,
        row_params={"value": value},
        pages=pages,
    )
    if name == "delete":
        with psycopg.connect(dsn) as conn:
            conn.execute(
                query("postgres", "bench", "seed_undelete"), {"account_id": account_id, "ids": touched}
            )
    return estimate


def _seed_import(dsn: str, *, scratch_account_id: int, data: BenchData, pages: int) -> SeedEstimate:
    """The seed's import sample, written to the scratch account and removed from it afterwards."""
    try:
        return baselines.seed_listed_rows(
            dsn,
            rows=data.seed_rows.with_columns(account_id=pl.lit(scratch_account_id)),
            entities=data.rows,
            row_statement="seed_insert",
            pages=pages,
            method="one INSERT … ON CONFLICT per row (autocommit, 3 attempts), email trimmed and "
            "lower-cased in Python",
        )
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute(
                query("postgres", "bench", "delete_account_contacts"), {"account_id": scratch_account_id}
            )


def _seed_update_ids(dsn: str, *, account_id: int, pages: int) -> SeedEstimate:
    """The seed's update-by-ids sample: pages of the id list, a company value of its own per row."""
    ids = live_ids(dsn, account_id)
    rows = pl.DataFrame({"id": ids}).with_columns(
        account_id=pl.lit(account_id), value=pl.lit(NEW_COMPANY + SEED_SUFFIX)
    )
    return baselines.seed_listed_rows(
        dsn,
        rows=rows,
        entities=rows.height,
        row_statement="seed_set_company",
        pages=pages,
        method="pages of 1000 ids from the list, one UPDATE per row (autocommit, 3 attempts)",
    )
