"""Retry of what failed: a new job (`source_id` set) over only the entities a finished job failed on.

- An id-target action (update, delete, tags) retries the failed entities by id, with the source's own
  changes or tags; the ids come from the entity log.
- An import retries its failed input records, read back from the entity log as they were sent, in line
  order; each may be replaced by a corrected record matched by its line (`records: [{line, ...fields}]`).
  The retry is stored like a streamed import: chunks written slice by slice under an `uploading` job that
  no one sees or runs, made `queued` in one step once every record is stored, or removed if anything fails.

`include_cancelled` adds the entities the source left `cancelled`. An import's retry keeps the lines of the
records it retries (its chunks list them, sql/postgres/012_result_lines.sql): its results name the lines of
the file the records came from, and a retry of that retry corrects records by those same lines. An
id-target retry numbers its own entities, as any id-target job does (the planner sorts the ids).

Refused: a job that has not ended (409: it may still fail more, or less); a dry run (409: it applied
nothing; promote it and retry that job); a job with nothing to retry (422: no state of this job will ever
make the request meaningful, unlike the 409s); corrected `records` for a non-import, a line given twice, or
a line that did not fail (422, naming the line).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Concatenate, ParamSpec, Protocol, TypeVar
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from crm_bulk import kernels
from crm_bulk.actions.specs import BulkActionRequest, ImportRecord, Target, spec_from_json
from crm_bulk.entitylog.inputs import decode_inputs
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.jobs import repository as jobs
from crm_bulk.jobs.repository import TERMINAL_STATUSES, Job
from crm_bulk.ledger.payload import IMPORT_SCHEMA, import_frame
from crm_bulk.planner import append_import_chunk, discard_import, finish_import
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
RETRIED_ACTIONS = frozenset({"update", "delete", "add_tags", "remove_tags", "import"})
_Line = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class Transact(Protocol):
    """Runs `work(conn, *args)` in one short transaction on a connection of its own (the API's pool), so
    no connection is held while the entity log is read."""

    def __call__(self, work: Callable[Concatenate[Conn, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`work`'s result."""
        ...


class CorrectedRecord(ImportRecord, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """An import record that replaces the failed record of line `line`."""

    line: _Line


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of `POST /bulk-actions/{id}/retry`; all optional."""

    include_cancelled: bool = False
    records: list[CorrectedRecord] | None = None


def job_spec(conn: Conn, account_id: int, job_id: UUID) -> BulkActionRequest:
    """The stored request of the account's job; `NotFoundError` for unknown ids and other accounts' jobs."""
    row = conn.execute(
        query("postgres", "results", "job_spec"), {"account_id": account_id, "job_id": job_id}
    ).fetchone()
    if row is None:
        raise NotFoundError(f"bulk action {job_id} not found")
    return spec_from_json(row[0])


def retry_failed(
    transact: Transact,
    store: ClickHouseStore,
    *,
    account_id: int,
    user_id: int | None,
    source_id: UUID,
    request: RetryRequest,
    chunk_size: int,
) -> Job:
    """The retry job of the account's job `source_id` (see the module docstring), `queued`."""
    source = transact(jobs.get_job, account_id, source_id)
    spec = transact(job_spec, account_id, source_id)
    _check_retryable(source)
    results = ("failed", "cancelled") if request.include_cancelled else ("failed",)
    if spec.action == "import":
        retry = _ImportRetry(transact, source, spec, account_id=account_id, user_id=user_id)
        return retry.run(store, results, request.records or [], chunk_size=chunk_size)
    if request.records:
        raise ValidationError(
            f"records correct an import's lines; job {source_id} is an {spec.action}",
            field="records",
            code="not_import",
        )
    ids = _failed_ids(store, account_id, source.id, results)
    if ids.size == 0:
        raise _nothing_to_retry(source, results)
    retry_spec = BulkActionRequest(
        action=spec.action, target=Target(ids=ids.tolist()), changes=spec.changes, tags=spec.tags
    )
    job = transact(_create, account_id, user_id, retry_spec, source.id)
    log.info("job %s retries %d entities of job %s", job.id, ids.size, source.id)
    return job


def _check_retryable(source: Job) -> None:
    if source.status not in TERMINAL_STATUSES:
        raise ConflictError(f"bulk action {source.id} is {source.status}; retry it once it has ended")
    if source.dry_run:
        raise ConflictError(f"bulk action {source.id} is a dry run: promote it, then retry that job")
    if source.action not in RETRIED_ACTIONS:
        raise ConflictError(f"a {source.action} job is not retried")


def _nothing_to_retry(source: Job, results: tuple[str, ...]) -> ValidationError:
    message = f"bulk action {source.id} has no {' or '.join(results)} entities to retry"
    if "cancelled" not in results and source.cancelled:
        message += f"; {source.cancelled} were cancelled: send include_cancelled to retry them"
    return ValidationError(message, field=None, code="nothing_to_retry")


def _create(
    conn: Conn, /, account_id: int, user_id: int | None, spec: BulkActionRequest, source_id: UUID, **kw: Any
) -> Job:
    return jobs.create_job(
        conn, account_id=account_id, created_by=user_id, request=spec, source_id=source_id, **kw
    )


def _failed_ids(
    store: ClickHouseStore, account_id: int, source_id: UUID, results: tuple[str, ...]
) -> npt.NDArray[np.int64]:
    """The source's entity ids with one of `results`, in line order (the planner sorts them again)."""
    parts: list[npt.NDArray[np.int64]] = []
    with store.results(source_id, account_id, results=results) as frames:
        parts.extend(frame.get_column("entity_id").drop_nulls().to_numpy() for frame in frames)
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


class _ImportRetry:
    """One import retry being stored: the failed records, corrected where asked, as an invisible upload."""

    def __init__(
        self,
        transact: Transact,
        source: Job,
        spec: BulkActionRequest,
        *,
        account_id: int,
        user_id: int | None,
    ) -> None:
        self._transact = transact
        self._source = source
        self._spec = BulkActionRequest(action="import", on_duplicate=spec.on_duplicate)
        self._account_id = account_id
        self._user_id = user_id
        self._job: Job | None = None
        self._chunks = 0
        self._seen = kernels.SeenKeys()

    def run(
        self,
        store: ClickHouseStore,
        results: tuple[str, ...],
        corrections: list[CorrectedRecord],
        *,
        chunk_size: int,
    ) -> Job:
        fixes = _corrections_frame(corrections)
        matched = 0
        try:
            with store.results(self._source.id, self._account_id, results=results) as frames:
                for batch in _rebatched(frames, chunk_size):
                    records, hits = _corrected(batch, fixes)
                    matched += hits
                    self._store(records, chunk_size)
            if matched < fixes.height:
                raise _unmatched(fixes, self._lines_retried(store, results), results)
            if self._job is None:
                raise _nothing_to_retry(self._source, results)
            job = self._transact(self._finish)
        except BaseException:
            if self._job is not None:
                self._transact(discard_import, self._job.id)
            raise
        log.info("import %s retries %d records of import %s", job.id, job.total, self._source.id)
        return job

    def _lines_retried(self, store: ClickHouseStore, results: tuple[str, ...]) -> set[int]:
        lines: set[int] = set()
        with store.results(self._source.id, self._account_id, results=results) as frames:
            for frame in frames:
                lines.update(frame.get_column("line").to_list())
        return lines

    def _store(self, records: pl.DataFrame, chunk_size: int) -> None:
        self._job, written = self._transact(self._append, records, chunk_size)
        self._chunks += written

    def _append(self, conn: Conn, records: pl.DataFrame, chunk_size: int) -> tuple[Job, int]:
        """Inside one transaction: the job (on the first write), these records' chunks, and their lines
        (the source's, so the retry's results name the lines the records first came from)."""
        job = self._job
        if job is None:
            job = _create(conn, self._account_id, self._user_id, self._spec, self._source.id, uploading=True)
        lines = records.get_column("line").to_numpy().astype(">i8")
        written = append_import_chunk(
            conn, job.id, records.drop("line"), seen=self._seen, chunk_size=chunk_size
        )
        conn.execute(
            query("postgres", "results", "set_chunk_lines"),
            {
                "job_id": job.id,
                "chunk_nos": list(range(self._chunks, self._chunks + written)),
                "lines": [lines[k * chunk_size : (k + 1) * chunk_size].tobytes() for k in range(written)],
            },
        )
        return job, written

    def _finish(self, conn: Conn) -> Job:
        assert self._job is not None
        finish_import(conn, self._job.id)
        return jobs.get_job(conn, self._account_id, self._job.id)


def _corrections_frame(corrections: list[CorrectedRecord]) -> pl.DataFrame:
    """The corrected records as import columns with their `line`; a line given twice is refused."""
    lines = [c.line for c in corrections]
    repeated = sorted(line for line, n in Counter(lines).items() if n > 1)
    if repeated:
        raise ValidationError(
            f"records give line {repeated[0]} more than once", field="records", code="duplicate_line"
        )
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [getattr(c, name) for c in corrections], dtype=pl.Utf8)
        for name in IMPORT_SCHEMA.names
        if name not in ("tags", "custom_fields")
    }
    columns["tags"] = pl.Series("tags", [c.tags for c in corrections], dtype=pl.List(pl.Utf8))
    columns["custom_fields"] = pl.Series(
        "custom_fields",
        [
            None if c.custom_fields is None else msgspec.json.encode(c.custom_fields).decode()
            for c in corrections
        ],
        dtype=pl.Utf8,
    )
    frame = import_frame(pl.DataFrame(columns))
    return frame.with_columns(pl.Series("line", lines, dtype=pl.UInt64))


def _corrected(batch: pl.DataFrame, fixes: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """A batch of failed records (`line` and import columns) with the corrected ones swapped in, still with
    their lines; the number swapped."""
    records = batch.select("line", *IMPORT_SCHEMA.names)
    if fixes.height == 0:
        return records, 0
    hit = records.get_column("line").is_in(fixes.get_column("line"))
    swapped = fixes.filter(pl.col("line").is_in(records.get_column("line")))
    merged = pl.concat([records.filter(~hit), swapped.select(records.columns)]).sort("line")
    return merged, swapped.height


def _rebatched(frames: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """Result blocks as frames of `line` and the import columns, about `size` rows each."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(
            pl.concat(
                [frame.select("line"), decode_inputs(frame.get_column("input"), IMPORT_SCHEMA)],
                how="horizontal",
            )
        )
        held += frame.height
        if held >= size:
            yield pl.concat(pending)
            pending, held = [], 0
    if pending:
        yield pl.concat(pending)


def _unmatched(fixes: pl.DataFrame, retried: set[int], results: tuple[str, ...]) -> ValidationError:
    stray = sorted(set(fixes.get_column("line").to_list()) - retried)
    return ValidationError(
        f"line {stray[0]} did not end {' or '.join(results)}: only those lines can be corrected",
        field="records",
        code="line_not_retried",
    )
