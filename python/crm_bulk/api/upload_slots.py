"""Admission of streamed uploads: how many may be in progress at once in this API process, in total and per
account; one over either cap answers 429 with `Retry-After`.

An upload holds no database connection while it waits on its client (`crm_bulk.api.import_session`), but
each slice it completes is written with one, and a slow client still ties up a request thread's share of the
process. The total cap stays below the connection pool's size (checked in
`crm_bulk.api.resources.Resources.from_settings`), so uploads writing all at once can never take every
connection; the per-account cap keeps one tenant from taking every slot. The counts are per process: the
pool they protect is per process too.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from litestar.exceptions import TooManyRequestsException

from crm_bulk import metrics

# Seconds a refused client is asked to wait: a stalled upload frees its slot within the idle timeout, a
# working one when its body ends; a few seconds keeps retries from hammering either way.
RETRY_AFTER_SECONDS = 5


class UploadSlots:
    """Counts uploads in progress; `hold` admits one or refuses it with 429."""

    def __init__(self, *, total: int, per_account: int) -> None:
        self.total = total
        self.per_account = per_account
        self._lock = threading.Lock()
        self._by_account: Counter[int] = Counter()
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Uploads in progress now."""
        return self._in_use

    @contextmanager
    def hold(self, account_id: int) -> Iterator[None]:
        """One slot for the block; `TooManyRequestsException` (429, `Retry-After`) when none is free."""
        self._take(account_id)
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= 1
                self._by_account[account_id] -= 1
                if self._by_account[account_id] <= 0:
                    del self._by_account[account_id]

    def _take(self, account_id: int) -> None:
        with self._lock:
            if self._by_account[account_id] >= self.per_account:
                refusal = f"the account already has {self.per_account} uploads in progress"
            elif self._in_use >= self.total:
                refusal = f"{self.total} uploads are in progress; the server takes no more right now"
            else:
                self._by_account[account_id] += 1
                self._in_use += 1
                return
        metrics.RATE_LIMITED.labels(limit="upload").inc()
        raise TooManyRequestsException(
            f"{refusal} (try again in a few seconds)", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
