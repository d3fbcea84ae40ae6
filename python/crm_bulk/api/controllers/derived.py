"""`/bulk-actions/{id}/preview`, `/run`, `/revert`: jobs derived from jobs (`shared/api.md`, "Trust").

Viewers read a dry run's preview; editors promote a finished dry run to the real job and revert ended jobs.
Another account's job ids answer 404, as everywhere.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from crm_bulk.api.dependencies import Connection
from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import editor, viewer
from crm_bulk.auth.accounts import Principal
from crm_bulk.jobs import derived
from crm_bulk.jobs.repository import Job


class DerivedJobController(Controller):
    """Dry-run previews and promotion, reverts: each new job names its source in `source_id`."""

    path = "/bulk-actions"
    tags = ["bulk-actions"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @get(
        "/{job_id:uuid}/preview",
        sync_to_thread=True,
        summary="A dry run's sample: entities with their values before and after",
        responses=problem_responses(*AUTHENTICATED, 404, 409),
    )
    def get_preview(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        limit: Annotated[
            int, QueryParameter(ge=1, le=derived.MAX_PREVIEW, description="Most entities to show")
        ] = 50,
    ) -> derived.Preview:
        """The first entities of each chunk, in input order, with the fields each would change (an import's
        new contact: every field it would have). 409 for a job that is not a dry run."""
        return derived.preview(conn, account_id=principal.account_id, job_id=job_id, limit=limit)

    @post(
        "/{job_id:uuid}/run",
        guards=[editor],
        sync_to_thread=True,
        status_code=202,
        summary="Promote a finished dry run to the real job",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409),
    )
    def run_dry_run(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Job:
        """The new job applies the dry run's target snapshot (the ids a filter matched then, the records of
        an import), not a fresh evaluation of its filter. 409 unless the job is a dry run that completed."""
        return derived.promote_dry_run(
            conn, account_id=principal.account_id, created_by=principal.user_id, job_id=job_id
        )

    @post(
        "/{job_id:uuid}/revert",
        guards=[editor],
        sync_to_thread=True,
        status_code=202,
        summary="Revert an ended bulk action",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409),
    )
    def revert(
        self,
        job_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        resources: NamedDependency[Resources],
    ) -> Job:
        """A job (`action: "revert"`) that restores what the job changed: fields and tags, deleted contacts;
        contacts an import created are deleted again. A contact changed since by anything is left alone and
        counted skipped `changed_since`. 409 while the job runs, for a dry run, and once its before-images
        are past CRM_BULK_BEFORE_IMAGE_RETENTION_DAYS. A revert can itself be reverted."""
        return derived.revert_job(
            conn,
            account_id=principal.account_id,
            created_by=principal.user_id,
            job_id=job_id,
            retention_days=resources.settings.before_image_retention_days,
        )
