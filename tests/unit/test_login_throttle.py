"""The login throttle's decisions, on the in-process limiter: which attempts are checked, which refused."""

from __future__ import annotations

from crm_bulk.auth.throttle import Bucket, LoginThrottle, charge_signup
from crm_bulk.ratelimit import InProcessLimiter

EMAIL = "ada@example.com"


def _throttle() -> LoginThrottle:
    return LoginThrottle(
        InProcessLimiter(),
        per_client=Bucket(burst=4, refill_seconds=10.0),
        per_pair=Bucket(burst=2, refill_seconds=60.0),
        per_email=Bucket(burst=3, refill_seconds=300.0),
    )


def test_the_pair_bucket_refuses_one_client_only() -> None:
    throttle = _throttle()
    for _ in range(2):
        assert throttle.admit(EMAIL, "10.0.0.1").refusal is None
        assert throttle.record_failure(EMAIL, "10.0.0.1") is None
    refusal = throttle.admit(EMAIL, "10.0.0.1").refusal
    assert refusal is not None and refusal.limit == 2
    assert throttle.admit(EMAIL, "10.0.0.2").refusal is None


def test_an_exhausted_email_is_guarded_not_locked() -> None:
    throttle = _throttle()
    for n in range(3):
        throttle.record_failure(EMAIL, f"10.0.1.{n}")
    clean = throttle.admit(EMAIL, "10.0.2.1")
    assert clean.refusal is None and clean.guarded
    # A wrong password there costs the client its whole burst: refused for the burst's refill time.
    refusal = throttle.record_failure(EMAIL, "10.0.2.1", guarded=True)
    assert refusal is not None and not refusal.allowed
    assert 39 <= refusal.retry_after <= 40
    dirty = throttle.admit(EMAIL, "10.0.2.1")
    assert dirty.refusal is not None
    assert throttle.admit("grace@example.com", "10.0.2.1").refusal is not None
    # A client that failed on another email is refused unchecked here, but not on unguarded emails.
    throttle.record_failure("grace@example.com", "10.0.2.2")
    assert throttle.admit(EMAIL, "10.0.2.2").refusal is not None
    assert throttle.admit("linus@example.com", "10.0.2.2").refusal is None


def test_sign_ups_are_counted_per_client() -> None:
    limiter = InProcessLimiter()
    bucket = Bucket(burst=2, refill_seconds=60.0)
    assert [charge_signup(limiter, "10.0.0.1", bucket).allowed for _ in range(3)] == [True, True, False]
    assert charge_signup(limiter, "10.0.0.2", bucket).allowed
