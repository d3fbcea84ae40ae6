"""Bulk action jobs: the `bulk_actions` rows and their API view."""

from crm_bulk.jobs.repository import Job, JobPage, create_job, get_job, list_jobs

__all__ = ["Job", "JobPage", "create_job", "get_job", "list_jobs"]
