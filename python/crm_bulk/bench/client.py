"""The bench's HTTP client: what a user's script does with the API, and nothing else."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from crm_bulk.errors import CrmBulkError

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
PASSWORD = "bench-password-0123456789"
MAX_ENTITIES_PER_SECOND = 10_000_000
MAX_REQUESTS_PER_MINUTE = 1_000_000


@dataclass(frozen=True)
class Account:
    """A registered account, its admin's token and user id."""

    account_id: int
    user_id: int
    token: str


@dataclass(frozen=True)
class Submitted:
    """A job as the POST answered it, with the client's wall clock around the request."""

    job: dict[str, Any]
    posted_at: float
    answered_at: float


class ApiClient:
    """Thin wrapper over httpx: auth headers, 429 waits, and job polling."""

    def __init__(self, base_url: str, *, timeout: float = 900.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        while True:
            response = self._http.request(method, path, headers=headers, **kwargs)
            if response.status_code != 429:
                return response
            wait = float(response.headers.get("Retry-After", "1"))
            log.warning("%s %s rate limited; waiting %.1f s", method, path, wait)
            time.sleep(wait)

    @staticmethod
    def _ok(response: httpx.Response, *codes: int) -> Any:
        if response.status_code not in codes:
            raise CrmBulkError(
                f"{response.request.method} {response.request.url.path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        return response.json()

    def new_account(self, name: str) -> Account:
        """Register an account with a fresh admin, log in, and lift its limits to the API's maxima so the
        benchmark measures the platform, not the account's rate limits."""
        email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
        created = self._ok(
            self._request(
                "POST", "/auth/register", json={"email": email, "password": PASSWORD, "account_name": name}
            ),
            201,
        )
        token = self._ok(
            self._request("POST", "/auth/login", json={"email": email, "password": PASSWORD}), 200
        )["access_token"]
        self._ok(
            self._request(
                "PATCH",
                "/accounts/me/limits",
                token=token,
                json={
                    "entities_per_second": MAX_ENTITIES_PER_SECOND,
                    "api_requests_per_minute": MAX_REQUESTS_PER_MINUTE,
                },
            ),
            200,
        )
        return Account(account_id=int(created["account_id"]), user_id=int(created["user_id"]), token=token)

    def submit(self, account: Account, body: bytes) -> Submitted:
        """POST /bulk-actions with a pre-encoded JSON body."""
        posted = time.time()
        response = self._request(
            "POST",
            "/bulk-actions",
            token=account.token,
            content=body,
            headers={"Content-Type": "application/json"},
        )
        answered = time.time()
        return Submitted(self._ok(response, 202), posted, answered)

    def upload_csv(self, account: Account, pieces: Sequence[bytes], *, on_duplicate: str) -> Submitted:
        """POST /bulk-actions/import, the CSV streamed piece by piece."""

        def stream() -> Iterator[bytes]:
            yield from pieces

        posted = time.time()
        response = self._request(
            "POST",
            "/bulk-actions/import",
            token=account.token,
            params={"on_duplicate": on_duplicate},
            content=stream(),
            headers={"Content-Type": "text/csv"},
        )
        answered = time.time()
        return Submitted(self._ok(response, 202), posted, answered)

    def job(self, account: Account, job_id: str) -> dict[str, Any]:
        """GET /bulk-actions/{id}."""
        job: dict[str, Any] = self._ok(
            self._request("GET", f"/bulk-actions/{job_id}", token=account.token), 200
        )
        return job

    def wait_terminal(
        self, account: Account, job_id: str, *, timeout: float, poll_seconds: float = 0.1
    ) -> dict[str, Any]:
        """Poll the job until its status is terminal; `CrmBulkError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(account, job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise CrmBulkError(f"job {job_id} not terminal after {timeout:.0f} s: {job}")
            time.sleep(poll_seconds)

    def stats(self, account: Account, job_id: str) -> dict[str, Any]:
        """GET /bulk-actions/{id}/stats."""
        stats: dict[str, Any] = self._ok(
            self._request("GET", f"/bulk-actions/{job_id}/stats", token=account.token), 200
        )
        return stats


def encode_body(body: dict[str, Any]) -> bytes:
    """A request body as JSON bytes (msgspec: a million ids encode in milliseconds)."""
    return msgspec.json.encode(body)
