"""Moving a chunk's columns in and out of PostgreSQL in bulk.

In: the session's temp staging tables (created once per connection, emptied at every commit) are filled
with one COPY whose whole input is built from columns: binary for id chunks (a packed numpy record array),
CSV written by Polars for import chunks. Building the CSV with Polars measured about 2.5x faster than a
vectorised numpy binary encoder for the import columns, with the same server-side COPY time (see
benchmarks/bench_apply.py, "copy formats").

Out: a statement's result rows come back through `COPY (statement) TO STDOUT (FORMAT CSV)` and are parsed
by Polars, so no Python object is created per row.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from psycopg import sql

from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_BINARY_TRAILER = b"\xff\xff"
_ID_ROW = np.dtype([("fields", ">i2"), ("size", ">i4"), ("id", ">i8")])

IMPORT_STAGE_COLUMNS: tuple[str, ...] = (
    "row_no",
    "email",
    "email_normalized",
    "first_name",
    "last_name",
    "phone",
    "phone_e164",
    "company",
    "job_title",
    "tags",
    "custom_fields",
)


def stage_ids(conn: Conn, ids: npt.NDArray[np.int64]) -> None:
    """Fill the session's `chunk_stage_ids` with `ids` (one binary COPY)."""
    conn.execute(query("postgres", "contacts", "create_id_stage"))
    conn.execute(query("postgres", "contacts", "clear_id_stage"))
    rows = np.empty(ids.size, dtype=_ID_ROW)
    rows["fields"] = 1
    rows["size"] = 8
    rows["id"] = ids
    with conn.cursor() as cur, cur.copy(query("postgres", "contacts", "copy_id_stage")) as copy:
        copy.write(_BINARY_HEADER + rows.tobytes() + _BINARY_TRAILER)


def stage_import(conn: Conn, frame: pl.DataFrame) -> None:
    """Fill the session's `chunk_stage_import` with `frame` (the `IMPORT_STAGE_COLUMNS`; one CSV COPY)."""
    conn.execute(query("postgres", "contacts", "create_import_stage"))
    conn.execute(query("postgres", "contacts", "clear_import_stage"))
    if frame.height == 0:
        return
    payload = csv_payload(frame, IMPORT_STAGE_COLUMNS)
    with conn.cursor() as cur, cur.copy(query("postgres", "contacts", "copy_import_stage")) as copy:
        copy.write(payload)


def csv_payload(frame: pl.DataFrame, columns: Sequence[str]) -> bytes:
    """`COPY … FROM STDIN (FORMAT CSV)` input for `columns` of `frame`: NULL is an empty field, an empty
    string is `""`, list-of-string columns become array literals."""
    lists = [name for name in columns if isinstance(frame.schema[name], pl.List)]
    selected = frame.select(columns).with_columns(
        *[_array_literal(pl.col(name)).alias(name) for name in lists]
    )
    buffer = io.BytesIO()
    selected.write_csv(buffer, include_header=False)
    return buffer.getvalue()


def _array_literal(tags: pl.Expr) -> pl.Expr:
    """A list of strings as a PostgreSQL array literal: every element double-quoted, `\\` and `"` escaped."""
    quoted = (
        pl.lit('"')
        + pl.element().str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
        + pl.lit('"')
    )
    return pl.lit("{") + tags.list.eval(quoted).list.join(",") + pl.lit("}")


def copy_out(
    conn: Conn, statement: str, params: Mapping[str, Any], schema: Mapping[str, Any]
) -> pl.DataFrame:
    """Run `statement` (a query, or a data-modifying statement with RETURNING) and return its rows as a
    frame with `schema` (column names and Polars types, in the statement's column order)."""
    command = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV)").format(sql.SQL(statement))
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(command, params) as copy:
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return pl.DataFrame(schema=dict(schema))
    return pl.read_csv(buffer.getvalue(), has_header=False, schema=dict(schema))
