"""The API load run's users (locust): each polls a job and creates contacts, with no think time.

Run by `crm_bulk.bench.load` as `locust --headless`; the target comes from `CRM_BULK_BENCH_TOKEN` and
`CRM_BULK_BENCH_JOB_ID`, read when a user starts.
"""

from __future__ import annotations

import os
import uuid

from locust import FastHttpUser, constant, task


class BulkApiUser(FastHttpUser):
    """One client: `GET /bulk-actions/{id}` and `POST /contacts` in equal measure, back to back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        """Read the target job and token."""
        self.job_path = f"/bulk-actions/{os.environ['CRM_BULK_BENCH_JOB_ID']}"
        self.headers = {"Authorization": f"Bearer {os.environ['CRM_BULK_BENCH_TOKEN']}"}

    @task
    def get_job(self) -> None:
        """Poll a job, as a progress bar does."""
        self.client.get(self.job_path, headers=self.headers, name="GET /bulk-actions/{id}")

    @task
    def create_contact(self) -> None:
        """Create a contact with a fresh email."""
        email = f"load-{uuid.uuid4().hex}@example.com"
        self.client.post(
            "/contacts",
            json={"email": email, "first_name": "Load", "last_name": "Test", "company": "Acme"},
            headers=self.headers,
            name="POST /contacts",
        )
