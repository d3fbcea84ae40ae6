"""Failed logins slow down per client, per (email, client) pair and, more slowly, per email: in a way that an
attacker cannot turn against the owner of the email.

Three GCRA buckets, each charged one unit by a failed login:

- the client's (`PER_CLIENT`, every email it tries): one address cannot guess quickly across many emails;
- the pair's (`PER_PAIR`, this email from this client): one address cannot guess quickly at one email;
- the email's (`PER_EMAIL`, from every client together, slower): many addresses cannot guess quickly at
  one email.

Before the password is checked, the client's and the pair's buckets are peeked; an exhausted one refuses the
attempt (429) without checking, so guessing cannot go faster than their refill rates whatever the guesses are.
Neither bucket can be drained by anyone but the client itself.

The email's bucket is drained by whoever guesses at the email, the attacker included, so it never refuses on
its own. Once it is exhausted the email is *guarded*:

- a client with any recent failure (its bucket not full) is refused before the password is checked;
- a client without one gets its password checked as usual: the right one logs in (200), a wrong one answers
  429 instead of 401 and costs the client its whole burst, so it is refused for the burst's full refill time
  (`PER_CLIENT.burst * PER_CLIENT.refill_seconds`).

So while an email is guarded, each attacking address gets one guess per that refill time instead of a burst,
and the owner, logging in from any address that has not failed, gets in at once. Whether the password is
checked depends only on the buckets, never on the password; when it is checked, argon2 takes as long for a
right password as for a wrong one, and an unknown email is verified against a decoy (`accounts.authenticate`),
so neither the answer's timing nor the throttle tells who has an account. Keys are hashed, so the limiter's
store never holds addresses.
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

    @property
    def window_seconds(self) -> int:
        """How long an exhausted bucket takes to fill up again."""
        return int(self.burst * self.refill_seconds)


PER_CLIENT = Bucket(burst=20, refill_seconds=10.0)
PER_PAIR = Bucket(burst=5, refill_seconds=60.0)
# Ten failures, then one more every five minutes: what one person mistyping never reaches.
PER_EMAIL = Bucket(burst=10, refill_seconds=300.0)


@dataclass(frozen=True)
class Admission:
    """The throttle's answer before the password is checked.

    `refusal`: refuse now with this decision (the password is not checked). `guarded`: the email's bucket is
    exhausted, so a wrong password is to be answered with `LoginThrottle.record_failure`'s refusal.
    """

    refusal: Decision | None
    guarded: bool = False


def _hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class LoginThrottle:
    """Peeks before and charges after a failed login, in the shared limiter."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        per_email: Bucket = PER_EMAIL,
        per_client: Bucket = PER_CLIENT,
        per_pair: Bucket = PER_PAIR,
    ) -> None:
        self._limiter = limiter
        self.per_email = per_email
        self.per_client = per_client
        self.per_pair = per_pair

    def _keyed(self, email: str, client: str) -> tuple[tuple[str, Bucket], ...]:
        """(key, bucket) for the client, the pair and the email, in that order."""
        email_digest = _hashed(email.lower())
        client_digest = _hashed(client)
        return (
            (f"login:client:{client_digest}", self.per_client),
            (f"login:pair:{email_digest}:{client_digest}", self.per_pair),
            (f"login:email:{email_digest}", self.per_email),
        )

    def _acquire(self, key: str, bucket: Bucket, cost: int) -> Decision:
        return self._limiter.acquire(
            key, cost=cost, rate_per_second=bucket.rate_per_second, burst=bucket.burst
        )

    def admit(self, email: str, client: str) -> Admission:
        """Whether to check this attempt's password at all (see the module docstring)."""
        (client_key, client_bucket), (pair_key, pair_bucket), (email_key, email_bucket) = self._keyed(
            email, client
        )
        client_state = self._acquire(client_key, client_bucket, 0)
        refusals = [d for d in (client_state, self._acquire(pair_key, pair_bucket, 0)) if not d.allowed]
        if refusals:
            return Admission(max(refusals, key=lambda d: d.retry_after))
        if self._acquire(email_key, email_bucket, 0).allowed:
            return Admission(None)
        if client_state.remaining < client_bucket.burst:
            # A peek's `reset_after` is how long until the bucket is full again: the client is clean then.
            wait = client_state.reset_after
            return Admission(
                Decision(False, wait, client_state.remaining, client_bucket.burst, wait), guarded=True
            )
        return Admission(None, guarded=True)

    def record_failure(self, email: str, client: str, *, guarded: bool = False) -> Decision | None:
        """Charge one failure to each bucket; for a `guarded` email, the client's whole burst, and return the
        refusal to answer instead of "wrong password"."""
        (client_key, client_bucket), *others = self._keyed(email, client)
        cost = client_bucket.burst if guarded else 1
        charged = self._acquire(client_key, client_bucket, cost)
        for key, bucket in others:
            self._acquire(key, bucket, 1)
        if not guarded:
            return None
        wait = max(charged.reset_after, 1.0)
        return Decision(False, wait, 0, client_bucket.burst, wait)


def charge_signup(limiter: RateLimiter, client: str, bucket: Bucket) -> Decision:
    """Take one sign-up from the client's bucket: refused (and nothing taken) when it is empty.

    Every attempt counts, whatever its outcome, since each one costs a password hash."""
    return limiter.acquire(
        f"signup:client:{_hashed(client)}", cost=1, rate_per_second=bucket.rate_per_second, burst=bucket.burst
    )
