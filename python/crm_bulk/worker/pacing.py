"""Per-account entity pacing in the worker: a token bucket (Redis in scale-out, in-process when embedded) that
a chunk's entities must fit before it is applied. It delays; it never drops.

The dispatcher already releases an account's chunks on its rate's schedule and keeps at most two seconds of
the rate in flight (`crm_bulk.ratelimit.pacing`). Queueing jitter delivers those chunks in bunches, so the
bucket's burst covers that much (a worker waiting on an on-schedule chunk would block the other accounts'
chunks behind it); the bucket is the hard cap for whatever bypasses the schedule, such as redeliveries.
"""

from __future__ import annotations

import logging
import threading
import time

from crm_bulk.errors import BackendUnavailableError
from crm_bulk.ratelimit import RateLimiter
from crm_bulk.ratelimit.pacing import IN_FLIGHT_SECONDS, PACING_SLACK

log = logging.getLogger(__name__)

# Bucket burst in seconds of the account's rate: the dispatcher's in-flight horizon plus its pacing slack.
BURST_SECONDS = IN_FLIGHT_SECONDS + PACING_SLACK.total_seconds()


class PacingInterruptedError(Exception):
    """The worker is stopping while a chunk waits for its budget; the chunk is left for redelivery."""


class EntityPacer:
    """Waits until an account's bucket admits a chunk's entities (key `<namespace>:entities:<account>`)."""

    def __init__(self, limiter: RateLimiter, *, namespace: str, stop: threading.Event) -> None:
        self._limiter = limiter
        self._namespace = namespace
        self._stop = stop
        self.waited_seconds = 0.0
        self.limiter_failures = 0

    def __repr__(self) -> str:
        waited = f"{self.waited_seconds:.1f}s"
        return f"EntityPacer({self._limiter!r}, waited={waited}, failures={self.limiter_failures})"

    def key(self, account_id: int) -> str:
        """The bucket of an account's entities."""
        return f"{self._namespace}:entities:{account_id}"

    def wait_for(self, account_id: int, entities: int, rate_per_second: float) -> float:
        """Block until `entities` fit the account's bucket at `rate_per_second`; return the seconds waited.

        The burst is `BURST_SECONDS` of the rate or one chunk, whichever is larger, so a chunk bigger than
        that is admitted once the bucket is full and paid for afterwards.
        """
        if entities <= 0:
            return 0.0
        burst = max(entities, int(rate_per_second * BURST_SECONDS))
        started = time.monotonic()
        while True:
            try:
                decision = self._limiter.acquire(
                    self.key(account_id), cost=entities, rate_per_second=rate_per_second, burst=burst
                )
            except BackendUnavailableError as exc:
                # The dispatcher's release schedule still holds the account to its rate; do not stall work.
                self.limiter_failures += 1
                log.warning(
                    "entity limiter unavailable, applying account %s chunk unpaced: %s", account_id, exc
                )
                break
            if decision.allowed:
                break
            if self._stop.wait(decision.retry_after):
                raise PacingInterruptedError(
                    f"stopping while account {account_id} waits for {entities} entities"
                )
        waited = time.monotonic() - started
        self.waited_seconds += waited
        return waited
