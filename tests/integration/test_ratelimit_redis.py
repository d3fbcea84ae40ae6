"""One contract suite for both limiters: in process and Redis (the real server via `redis_url`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from crm_bulk.ratelimit import InProcessLimiter, RateLimiter, RedisLimiter
from crm_bulk.ratelimit.redis_limiter import KEY_PREFIX

# Redis measures time on its own clock, so allow a little slack around computed waits.
SLACK = 0.05


@pytest.fixture(params=["in-process", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "in-process":
        yield InProcessLimiter()
        return
    made = RedisLimiter(request.getfixturevalue("redis_url"))
    yield made
    made.close()


def _key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_burst_is_admitted_then_refused(limiter: RateLimiter) -> None:
    key = _key()
    remaining = [limiter.acquire(key, cost=1, rate_per_second=2.0, burst=4) for _ in range(4)]
    assert [d.allowed for d in remaining] == [True] * 4
    assert [d.remaining for d in remaining] == [3, 2, 1, 0]
    refused = limiter.acquire(key, cost=1, rate_per_second=2.0, burst=4)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit == 4
    assert 0.5 - SLACK < refused.retry_after <= 0.5 + SLACK
    assert 2.0 - SLACK < refused.reset_after <= 2.0 + SLACK


def test_refusal_takes_nothing_and_waiting_admits(limiter: RateLimiter) -> None:
    key = _key()
    assert limiter.acquire(key, cost=2, rate_per_second=20.0, burst=2).allowed
    first = limiter.acquire(key, cost=1, rate_per_second=20.0, burst=2)
    second = limiter.acquire(key, cost=1, rate_per_second=20.0, burst=2)
    assert not first.allowed and not second.allowed
    assert second.retry_after <= first.retry_after
    time.sleep(second.retry_after + 0.01)
    assert limiter.acquire(key, cost=1, rate_per_second=20.0, burst=2).allowed


def test_cost_takes_that_many_units(limiter: RateLimiter) -> None:
    key = _key()
    taken = limiter.acquire(key, cost=3, rate_per_second=1.0, burst=5)
    assert taken.allowed and taken.remaining == 2
    assert not limiter.acquire(key, cost=3, rate_per_second=1.0, burst=5).allowed
    rest = limiter.acquire(key, cost=2, rate_per_second=1.0, burst=5)
    assert rest.allowed and rest.remaining == 0


def test_cost_above_burst_is_admitted_when_full_and_then_paced(limiter: RateLimiter) -> None:
    key = _key()
    big = limiter.acquire(key, cost=10, rate_per_second=10.0, burst=4)
    assert big.allowed and big.remaining == 0
    assert 1.0 - SLACK < big.reset_after <= 1.0 + SLACK
    after = limiter.acquire(key, cost=1, rate_per_second=10.0, burst=4)
    # Debt of 10 intervals minus the 4 the burst tolerates, plus the unit asked for: 7 intervals.
    assert not after.allowed
    assert 0.7 - SLACK < after.retry_after <= 0.7 + SLACK


def test_cost_zero_peeks_without_taking(limiter: RateLimiter) -> None:
    key = _key()
    peek = limiter.acquire(key, cost=0, rate_per_second=0.01, burst=2)
    assert peek.allowed and peek.remaining == 2
    assert limiter.acquire(key, cost=2, rate_per_second=0.01, burst=2).allowed
    exhausted = limiter.acquire(key, cost=0, rate_per_second=0.01, burst=2)
    assert not exhausted.allowed
    assert exhausted.retry_after > 90


def test_keys_are_independent(limiter: RateLimiter) -> None:
    first, second = _key(), _key()
    assert limiter.acquire(first, cost=1, rate_per_second=0.01, burst=1).allowed
    assert not limiter.acquire(first, cost=1, rate_per_second=0.01, burst=1).allowed
    assert limiter.acquire(second, cost=1, rate_per_second=0.01, burst=1).allowed


def test_concurrent_callers_never_exceed_the_burst(limiter: RateLimiter) -> None:
    key = _key()
    admitted: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(20):
            decision = limiter.acquire(key, cost=1, rate_per_second=0.001, burst=25)
            with lock:
                admitted.append(decision.allowed)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 120
    assert sum(admitted) == 25


@pytest.mark.parametrize(
    ("cost", "rate", "burst"), [(-1, 1.0, 1), (1, 0.0, 1), (1, -2.0, 1), (1, float("inf"), 1), (1, 1.0, 0)]
)
def test_meaningless_arguments_are_rejected(limiter: RateLimiter, cost: int, rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        limiter.acquire(_key(), cost=cost, rate_per_second=rate, burst=burst)


def test_redis_buckets_expire_when_full_again(redis_url: str) -> None:
    made = RedisLimiter(redis_url)
    key = _key()
    try:
        made.acquire(key, cost=3, rate_per_second=2.0, burst=5)
        client = redis.Redis.from_url(redis_url)
        ttl_ms = client.pttl(KEY_PREFIX + key)
        client.close()
        assert 1000 <= ttl_ms <= 1500
    finally:
        made.close()


def test_redis_limiters_share_buckets(redis_url: str) -> None:
    first, second = RedisLimiter(redis_url), RedisLimiter(redis_url)
    key = _key()
    try:
        assert first.acquire(key, cost=1, rate_per_second=0.01, burst=1).allowed
        assert not second.acquire(key, cost=1, rate_per_second=0.01, burst=1).allowed
    finally:
        first.close()
        second.close()
