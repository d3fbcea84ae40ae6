"""Failed logins slow down per email and per client address.

Each failure takes one unit from two GCRA buckets (the email's and the client's). Before a password is even
checked, both buckets are peeked; an exhausted one refuses the attempt with the time to wait, so guessing
cannot go faster than the refill rate, whatever the guesses are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from crm_bulk.ratelimit import Decision, RateLimiter


@dataclass(frozen=True)
class Bucket:
    """A burst of failures tolerated, then one more every `refill_seconds`."""

    burst: int
    refill_seconds: float

    @property
    def rate_per_second(self) -> float:
        """The refill rate."""
        return 1.0 / self.refill_seconds


PER_EMAIL = Bucket(burst=5, refill_seconds=60.0)
PER_CLIENT = Bucket(burst=20, refill_seconds=10.0)


class LoginThrottle:
    """Peeks before and charges after a failed login, in the shared limiter."""

    def __init__(
        self, limiter: RateLimiter, *, per_email: Bucket = PER_EMAIL, per_client: Bucket = PER_CLIENT
    ) -> None:
        self._limiter = limiter
        self._buckets = (per_email, per_client)

    def _keys(self, email: str, client: str) -> tuple[str, str]:
        # Hashed so the limiter's store never holds the addresses themselves.
        digest = hashlib.sha256(email.lower().encode()).hexdigest()[:32]
        return f"login:email:{digest}", f"login:client:{client}"

    def refusal(self, email: str, client: str) -> Decision | None:
        """The refusing decision with the longest wait when either bucket is exhausted, else None."""
        refusals = []
        for key, bucket in zip(self._keys(email, client), self._buckets, strict=True):
            decision = self._limiter.acquire(
                key, cost=0, rate_per_second=bucket.rate_per_second, burst=bucket.burst
            )
            if not decision.allowed:
                refusals.append(decision)
        return max(refusals, key=lambda d: d.retry_after, default=None)

    def record_failure(self, email: str, client: str) -> None:
        """Charge one failure to both buckets."""
        for key, bucket in zip(self._keys(email, client), self._buckets, strict=True):
            self._limiter.acquire(key, cost=1, rate_per_second=bucket.rate_per_second, burst=bucket.burst)
