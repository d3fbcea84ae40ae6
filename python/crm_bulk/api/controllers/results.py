"""`/bulk-actions/{id}/results` and `/bulk-actions/{id}/retry`: a job's outcomes by input line, streamed as
CSV or NDJSON from the entity log (`crm_bulk.api.result_files`), and a new job over what it failed
(`crm_bulk.jobs.retry_failed`). Viewers read results; editors retry."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
import polars as pl
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.result_files import (
    CSV_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    ResultLayout,
    csv_chunks,
    layout_of,
    ndjson_chunks,
)
from crm_bulk.api.security import editor, viewer
from crm_bulk.auth.accounts import Principal
from crm_bulk.entitylog.store import RESULTS
from crm_bulk.errors import ValidationError
from crm_bulk.jobs.repository import Job
from crm_bulk.jobs.retry_failed import RetryRequest, job_spec, retry_failed

log = logging.getLogger(__name__)

# The results a file can select: `crm_bulk.entitylog.store.RESULTS`, spelled out for the schema.
Result = Literal["succeeded", "failed", "skipped", "cancelled"]
_TEXT = Schema(type=OpenAPIType.STRING)


@dataclass
class ResultsOperation(Operation):
    """`GET /bulk-actions/{id}/results`: the answer is a CSV stream, or NDJSON by `Accept`."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {
                CSV_MEDIA_TYPE.split(";")[0]: OpenAPIMediaType(schema=_TEXT),
                NDJSON_MEDIA_TYPE: OpenAPIMediaType(schema=_TEXT),
            }


def _results_of(outcome: str | None) -> tuple[str, ...]:
    if outcome is None:
        return RESULTS
    if outcome not in RESULTS:
        raise ValidationError(f"outcome must be one of {', '.join(RESULTS)}", field="outcome", code="invalid")
    return (outcome,)


def _layout(resources: Resources, account_id: int, job_id: UUID) -> ResultLayout:
    """The job's result columns; `NotFoundError` for unknown ids and other accounts' jobs. A short
    transaction: no pooled connection is held while the file streams."""
    return layout_of(resources.in_transaction(job_spec, account_id, job_id))


def _opened(
    resources: Resources, account_id: int, job_id: UUID, results: tuple[str, ...], ndjson: bool
) -> Iterator[bytes]:
    """The file's byte pieces, the query already started and its first block read, so a log that cannot be
    read answers a problem (503) rather than a file cut short; the query ends when the pieces do."""
    layout = _layout(resources, account_id, job_id)
    stack = ExitStack()
    try:
        frames = stack.enter_context(resources.store.results(job_id, account_id, results=results))
        first = next(frames, None)
    except BaseException:
        stack.close()
        raise
    blocks: Iterator[pl.DataFrame] = frames if first is None else itertools.chain([first], frames)
    encode = ndjson_chunks if ndjson else csv_chunks
    return _closing(encode(blocks, layout), stack)


def _closing(pieces: Iterator[bytes], stack: ExitStack) -> Iterator[bytes]:
    with stack:
        yield from pieces


def _retry_body(raw: bytes) -> RetryRequest:
    if not raw.strip():
        return RetryRequest()
    try:
        return msgspec.json.decode(raw, type=RetryRequest)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid retry request: {exc}", field="body", code="invalid") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc}", field="body", code="malformed_json") from None


class ResultController(Controller):
    """Result files and retries of the caller's account's jobs."""

    path = "/bulk-actions"
    tags = ["bulk-actions"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @get(
        "/{job_id:uuid}/results",
        sync_to_thread=True,
        summary="The job's outcomes by input line, streamed as CSV (or NDJSON by Accept)",
        operation_class=ResultsOperation,
        responses=problem_responses(*AUTHENTICATED, 404, 422, 503),
    )
    def get_results(
        self,
        job_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
        outcome: Annotated[
            Result | None,
            QueryParameter(description="Only this result (cancelled: skipped because the job was cancelled)"),
        ] = None,
    ) -> Stream:
        """Columns `line, entity_id, outcome, code, message`, then an import's record as sent or an update's
        changed fields with their new values; rows in input order. `line` is the input record's 1-based
        number (a CSV's header row not counted). `Accept: application/x-ndjson` answers NDJSON."""
        results = _results_of(outcome)
        ndjson = NDJSON_MEDIA_TYPE in request.headers.get("accept", "").lower()
        pieces = _opened(resources, principal.account_id, job_id, results, ndjson)
        suffix = "ndjson" if ndjson else "csv"
        name = f"bulk-action-{job_id}-{outcome or 'results'}.{suffix}"
        return Stream(
            pieces,
            media_type=NDJSON_MEDIA_TYPE if ndjson else CSV_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post(
        "/{job_id:uuid}/retry",
        guards=[editor],
        status_code=202,
        summary="Retry what a finished job failed, as a new job",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409, 422, 503),
    )
    async def retry_job(
        self,
        job_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
    ) -> Job:
        """Body optional: `{include_cancelled, records: [{line, ...fields}]}`. The new job (`source_id` set)
        covers the entities that failed (and the cancelled ones when asked), with the source's changes; for
        an import, its failed records, each replaced by the corrected record of its line when one is sent.
        409 while the source has not ended; 422 when nothing is left to retry or a corrected line did not
        fail."""
        body = _retry_body(await request.body())
        settings = resources.settings
        return await anyio.to_thread.run_sync(
            lambda: retry_failed(
                resources.in_transaction,
                resources.store,
                account_id=principal.account_id,
                user_id=principal.user_id,
                source_id=job_id,
                request=body,
                chunk_size=settings.chunk_size,
            )
        )
