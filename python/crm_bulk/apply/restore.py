"""Revert chunks: a source chunk's before-image written back, where the contact has not changed since.

A revert chunk's payload is the before-image of one chunk of the job it reverts (`crm_bulk.apply.images`).
One set-based statement (`restore_chunk`) restores every row still at the version the job left; the others
are skipped `changed_since` (any write since, by a job, the API or SQL), `not_found` (the contact is gone)
or `duplicate_email` (restoring would give a live email to a second contact). It returns its own
before-image, so a revert is reverted like any job.
"""

from __future__ import annotations

import logging

import polars as pl
import psycopg

from crm_bulk.apply.images import ID_RESULT, stage_restore
from crm_bulk.apply.staging import copy_out
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

# Re-runs of a restore that lost a race for an email to a concurrent transaction (as for email updates).
EMAIL_RACE_ATTEMPTS = 3
_MESSAGES = {
    "changed_since": "the contact changed after the job wrote it; left as it is",
    "duplicate_email": "another live contact of the account has this email",
    "not_found": "the contact no longer exists",
}


def restore_image(conn: Conn, image: pl.DataFrame, *, account_id: int) -> pl.DataFrame:
    """The outcome of each image row (`row_no`, `entity_id`, `email`, `code`, `message`, `mask` and the
    statement's own image columns), in image order."""
    targets = image.select(pl.int_range(pl.len(), dtype=pl.Int32).alias("row_no"), pl.col("entity_id"))
    result = pl.DataFrame(schema=ID_RESULT)
    if image.height:
        stage_restore(conn, image)
        result = _run_restore(conn, account_id)
    merged = targets.join(result, on="entity_id", how="left").with_columns(
        code=pl.col("code").fill_null("not_found"), mask=pl.col("mask").fill_null(0)
    )
    return merged.with_columns(message=pl.col("code").replace_strict(_MESSAGES, default=None))


def _run_restore(conn: Conn, account_id: int) -> pl.DataFrame:
    statement = query("postgres", "contacts", "restore_chunk")
    for attempt in range(1, EMAIL_RACE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return copy_out(conn, statement, {"account_id": account_id}, ID_RESULT)
        except psycopg.errors.UniqueViolation:
            if attempt == EMAIL_RACE_ATTEMPTS:
                raise
            log.info("email taken by a concurrent transaction; re-running the restore (attempt %d)", attempt)
    raise AssertionError("unreachable")
