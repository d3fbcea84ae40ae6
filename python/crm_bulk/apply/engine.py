"""Apply one chunk of a bulk action, exactly once, in one PostgreSQL transaction.

1. Lock the chunk's ledger row (`FOR UPDATE`): concurrent applies of one chunk serialise here, and a chunk
   already done, failed or cancelled is left alone (`already_done`).
2. Decode the payload (Arrow IPC) into Polars; run the Rust kernels over its columns (imports) or over the
   request's values (update).
3. COPY the chunk into a temp staging table; run the action's one set-based statement; its result rows
   (COPY out, parsed by Polars) give every entity its outcome.
4. Write the outbox (Arrow IPC) and mark the ledger row done; add the counts to the job; keep the
   before-image of the rows the statement wrote (`crm_bulk.apply.images`), which a revert restores.

A dry run's chunk runs steps 2-3 inside a savepoint and rolls them back, keeping the outcomes and a sample of
before → after values; step 4 is as for any chunk, so its counts, log and errors are the real run's.

Every step is column-at-a-time: no Python runs per entity.
"""

from __future__ import annotations

import logging
import time
from typing import Literal
from uuid import UUID

import msgspec
import polars as pl
import psycopg

from crm_bulk import ledger
from crm_bulk.actions.specs import ActionParams, params_from_json
from crm_bulk.apply.checks import ChangeCheck, check_changes, check_records
from crm_bulk.apply.images import (
    ID_RESULT,
    IMAGE_RESULT_COLUMNS,
    IMPORT_RESULT,
    before_image,
    dry_run_sample,
    keep_image,
)
from crm_bulk.apply.restore import restore_image
from crm_bulk.apply.staging import copy_out, stage_ids, stage_import
from crm_bulk.entitylog.outbox import OUTCOME_COLUMNS, encode_outcomes, outcome_counts, outcome_of
from crm_bulk.errors import CrmBulkError, NotFoundError, PermanentError, RetryableError
from crm_bulk.ledger.payload import REPEAT_OF, decode_payload
from crm_bulk.postgres import Conn, classify
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

# Re-runs of an email-moving update that lost a race for the email; each loss means another transaction
# committed it, so the next run sees the owner and reports duplicate_email.
EMAIL_RACE_ATTEMPTS = 3
# Bit of each field in the statements' `mask` column (sql/postgres/queries/contacts.sql).
CHANGE_BITS: tuple[tuple[int, str], ...] = (
    (1, "email"),
    (2, "phone"),
    (4, "first_name"),
    (8, "last_name"),
    (16, "company"),
    (32, "job_title"),
    (64, "custom_fields"),
    (128, "tags"),
    (256, "deleted_at"),
)
_ID_STATEMENTS = {
    "update": "update_chunk",
    "delete": "delete_chunk",
    "add_tags": "add_tags_chunk",
    "remove_tags": "remove_tags_chunk",
}
_LOOKUP_RESULT = {"row_no": pl.Int32, "entity_id": pl.Int64, "own": pl.Int8}


class ChunkResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `apply_chunk` did: `applied` now, or `already_done` (the ledger row was final)."""

    job_id: UUID
    chunk_no: int
    state: Literal["applied", "already_done"]
    entity_count: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    duration_ms: int = 0
    # Milliseconds per phase (lock, decode, checks, stage, statement, outcomes, outbox, ledger, commit):
    # where a chunk's time goes, for metrics and the benchmark.
    phase_ms: dict[str, float] = msgspec.field(default_factory=dict)


class _Clock:
    """Accumulates wall time per named phase."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + (now - self._last) * 1000
        self._last = now

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


def apply_chunk(
    conn: Conn, job_id: UUID, chunk_no: int, *, worker: str = "", attempt: int = 1
) -> ChunkResult:
    """Apply chunk `chunk_no` of job `job_id` in one transaction and record its outcomes.

    Raises `RetryableError` for transient database failures (the transaction rolled back; try again) and
    `PermanentError` otherwise (`NotFoundError` when the chunk does not exist).
    """
    clock = _Clock()
    try:
        with conn.transaction():
            result = _apply_claimed(conn, job_id, chunk_no, clock, worker=worker, attempt=attempt)
        clock.lap("commit")
    except CrmBulkError:
        raise
    except Exception as exc:
        raise classify(exc) from exc
    if result.state == "applied":
        log.info(
            "job %s chunk %s applied by %s: %d succeeded, %d failed, %d skipped in %d ms",
            job_id,
            chunk_no,
            worker or "-",
            result.succeeded,
            result.failed,
            result.skipped,
            result.duration_ms,
        )
        # The reported duration includes the commit; the ledger's is taken just before it.
        return msgspec.structs.replace(result, duration_ms=clock.elapsed_ms(), phase_ms=clock.phases)
    return result


def _apply_claimed(
    conn: Conn, job_id: UUID, chunk_no: int, clock: _Clock, *, worker: str, attempt: int
) -> ChunkResult:
    """Inside the chunk's transaction: claim it, apply it, record it done (or find it final already)."""
    chunk = ledger.claim_chunk(conn, job_id, chunk_no)
    clock.lap("lock")
    if chunk is None:
        raise NotFoundError(f"chunk {chunk_no} of job {job_id} not found")
    if chunk.state in ledger.FINAL_CHUNK_STATES:
        log.info("job %s chunk %s is %s already; skipped", job_id, chunk_no, chunk.state)
        return ChunkResult(job_id=job_id, chunk_no=chunk_no, state="already_done")
    entities = decode_payload(chunk.payload)
    params = params_from_json(chunk.params_json)
    clock.lap("decode")
    if chunk.dry_run:
        outcomes, image, sample = _dry_run(conn, chunk, params, entities, clock, job_id=job_id)
    else:
        outcomes, image = _outcomes(
            conn, chunk.action, params, entities, clock, account_id=chunk.account_id, job_id=job_id
        )
        sample = None
    if outcomes.height != entities.height:
        raise PermanentError(f"{outcomes.height} outcomes for {entities.height} entities")
    counts = outcome_counts(outcomes)
    outbox = encode_outcomes(outcomes)
    clock.lap("outbox")
    keep_image(conn, job_id, chunk_no, account_id=chunk.account_id, image=image, sample=sample)
    clock.lap("image")
    duration_ms = clock.elapsed_ms()
    ledger.complete_chunk(
        conn,
        job_id,
        chunk_no,
        outbox=outbox,
        counts=counts,
        attempt=attempt,
        worker=worker,
        duration_ms=duration_ms,
    )
    clock.lap("ledger")
    return ChunkResult(
        job_id=job_id,
        chunk_no=chunk_no,
        state="applied",
        entity_count=entities.height,
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        duration_ms=duration_ms,
    )


def _dry_run(
    conn: Conn,
    chunk: ledger.ClaimedChunk,
    params: ActionParams,
    entities: pl.DataFrame,
    clock: _Clock,
    *,
    job_id: UUID,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The chunk's statement in a savepoint that is rolled back: its outcomes, image and preview sample."""
    with conn.transaction() as savepoint:
        outcomes, image = _outcomes(
            conn, chunk.action, params, entities, clock, account_id=chunk.account_id, job_id=job_id
        )
        sample = dry_run_sample(conn, outcomes, image, account_id=chunk.account_id)
        raise psycopg.Rollback(savepoint)
    clock.lap("rollback")
    return outcomes, image, sample


def _outcomes(
    conn: Conn,
    action: str,
    params: ActionParams,
    entities: pl.DataFrame,
    clock: _Clock,
    *,
    account_id: int,
    job_id: UUID,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The entities' outcomes (outbox columns) and the before-image of the rows the statement wrote."""
    if action == "revert":
        restored = restore_image(conn, entities, account_id=account_id)
        clock.lap("statement")
        return _finish(restored), before_image(restored)
    if action == "import":
        return _apply_import(
            conn,
            entities,
            clock,
            account_id=account_id,
            job_id=job_id,
            on_duplicate=params.on_duplicate or "skip",
        )
    return _apply_to_ids(conn, action, params, entities, clock, account_id=account_id)


def _apply_to_ids(
    conn: Conn, action: str, params: ActionParams, entities: pl.DataFrame, clock: _Clock, *, account_id: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """update, delete, add_tags, remove_tags over a chunk of contact ids."""
    targets = entities.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("row_no"),
        pl.col("id").cast(pl.Int64).alias("entity_id"),
    ).with_columns(first=pl.col("entity_id").is_first_distinct())
    statement_params, invalid = _id_statement_params(action, params, account_id=account_id)
    if invalid is not None:
        # The request's values are invalid for every contact alike.
        failed = _finish(
            targets.with_columns(
                email=pl.lit(None, dtype=pl.Utf8),
                code=pl.when(pl.col("first"))
                .then(pl.lit(invalid.code))
                .otherwise(pl.lit("duplicate_in_input")),
                message=pl.when(pl.col("first")).then(pl.lit(invalid.message)),
                mask=pl.lit(0, dtype=pl.Int32),
            )
        )
        return failed, before_image(pl.DataFrame(schema=ID_RESULT))
    unique_ids = targets.filter(pl.col("first")).get_column("entity_id").to_numpy()
    clock.lap("checks")
    result = pl.DataFrame(schema=ID_RESULT)
    if unique_ids.size:
        stage_ids(conn, unique_ids)
        clock.lap("stage")
        result = _run_id_statement(conn, action, statement_params)
    clock.lap("statement")
    merged = targets.join(result, on="entity_id", how="left").with_columns(
        code=pl.when(~pl.col("first"))
        .then(pl.lit("duplicate_in_input"))
        .otherwise(pl.col("code").fill_null("not_found")),
    )
    frame = _finish(
        merged.with_columns(
            message=pl.when(pl.col("code") == "duplicate_email")
            .then(pl.lit("another live contact of the account has this email"))
            .otherwise(pl.lit(None, dtype=pl.Utf8)),
        )
    )
    image = before_image(result)
    clock.lap("outcomes")
    return frame, image


def _id_statement_params(
    action: str, params: ActionParams, *, account_id: int
) -> tuple[dict[str, object], ChangeCheck | None]:
    """The id statement's parameters, or the failed check that makes every entity fail alike."""
    statement_params: dict[str, object] = {"account_id": account_id}
    if action == "update":
        if params.changes is None:
            raise PermanentError("update job without changes")
        check = check_changes(params.changes)
        if check.code is not None:
            return statement_params, check
        statement_params.update(check.params)
    elif action in ("add_tags", "remove_tags"):
        statement_params["tags"] = params.tags or []
    elif action != "delete":
        raise PermanentError(f"unknown action {action!r}")
    return statement_params, None


def _run_id_statement(conn: Conn, action: str, statement_params: dict[str, object]) -> pl.DataFrame:
    """The action's statement; an update that moves an email runs in a savepoint and is re-run when a
    concurrent transaction committed the same email first (the re-run sees it: duplicate_email)."""
    statement = query("postgres", "contacts", _ID_STATEMENTS[action])
    if not statement_params.get("touch_email"):
        return copy_out(conn, statement, statement_params, ID_RESULT)
    for attempt in range(1, EMAIL_RACE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return copy_out(conn, statement, statement_params, ID_RESULT)
        except psycopg.errors.UniqueViolation:
            if attempt == EMAIL_RACE_ATTEMPTS:
                raise
            log.info("email taken by a concurrent transaction; re-running the update (attempt %d)", attempt)
    raise AssertionError("unreachable")


def _apply_import(
    conn: Conn, entities: pl.DataFrame, clock: _Clock, *, account_id: int, job_id: UUID, on_duplicate: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Insert new contacts; existing live emails are skipped or merged per `on_duplicate`."""
    records = check_records(entities)
    staged = records.filter(pl.col("code").is_null())
    clock.lap("checks")
    result = pl.DataFrame(schema=IMPORT_RESULT)
    statement_params = {"account_id": account_id, "job_id": job_id}
    if staged.height:
        stage_import(conn, staged)
        clock.lap("stage")
        name = "import_chunk_update" if on_duplicate == "update" else "import_chunk_skip"
        result = copy_out(conn, query("postgres", "contacts", name), statement_params, IMPORT_RESULT)
        result = _place_unresolved(conn, result, statement_params, on_duplicate)
        clock.lap("statement")
    image = before_image(result)
    merged = records.join(
        result.select("row_no", "entity_id", pl.col("code").alias("_code"), "mask"), on="row_no", how="left"
    )
    # A repeat within the chunk points at the contact its first occurrence became; a repeat of an earlier
    # chunk's record names that record (its contact is that record's outcome).
    first_ids = result.select(pl.col("row_no").alias("first_row"), pl.col("entity_id").alias("_first_id"))
    merged = merged.join(first_ids, on="first_row", how="left").with_columns(
        entity_id=pl.coalesce("entity_id", "_first_id"),
        code=pl.coalesce("code", "_code"),
        message=pl.when(pl.col("code") != "duplicate_in_input")
        .then(pl.col("message"))
        .when(pl.col(REPEAT_OF).is_not_null())
        .then(pl.format("repeats the email of record {}", pl.col(REPEAT_OF)))
        .when(pl.col("first_row").is_not_null())
        .then(pl.format("repeats row {}", pl.col("first_row")))
        .otherwise(pl.col("message")),
        mask=pl.col("mask").fill_null(0),
    )
    frame = _finish(merged)
    clock.lap("outcomes")
    return frame, image


def _place_unresolved(
    conn: Conn, result: pl.DataFrame, statement_params: dict[str, object], on_duplicate: str
) -> pl.DataFrame:
    """Rows whose conflicting contact another transaction committed after the statement began: look them
    up with a fresh snapshot. Rare (concurrent imports of the same emails)."""
    missing = result.filter(pl.col("code").is_null()).get_column("row_no")
    if missing.len() == 0:
        return result
    found = copy_out(
        conn,
        query("postgres", "contacts", "import_lookup"),
        {**statement_params, "row_nos": missing.to_list()},
        _LOOKUP_RESULT,
    )
    if found.height != missing.len():
        raise RetryableError("a conflicting contact changed while the chunk was applied")
    existing = "no_change" if on_duplicate == "update" else "duplicate_email"
    found = found.select(
        "row_no",
        pl.col("entity_id").alias("_id"),
        pl.when(pl.col("own") == 1)
        .then(pl.lit("duplicate_in_input"))
        .otherwise(pl.lit(existing))
        .alias("_found"),
    )
    return result.join(found, on="row_no", how="left").select(
        "row_no",
        pl.coalesce("entity_id", "_id").alias("entity_id"),
        pl.coalesce("code", "_found").alias("code"),
        "mask",
        *IMAGE_RESULT_COLUMNS,
    )


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    """The outbox columns: outcome from code, changed_fields from the mask of succeeded rows."""
    fields = pl.concat_list(
        [pl.when((pl.col("mask") & bit) != 0).then(pl.lit(name)) for bit, name in CHANGE_BITS]
    ).list.drop_nulls()
    return (
        frame.with_columns(
            outcome=outcome_of(pl.col("code")),
            changed_fields=pl.when((pl.col("code") == "succeeded") & (pl.col("mask") != 0)).then(fields),
        )
        .select(OUTCOME_COLUMNS)
        .sort("row_no")
    )
