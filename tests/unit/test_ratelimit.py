"""GCRA arithmetic on a controlled clock, limiter selection, and an unreachable Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_bulk.errors import BackendUnavailableError
from crm_bulk.ratelimit import InProcessLimiter, RedisLimiter, limiter_from_settings
from crm_bulk.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steady_rate_refills_one_unit_per_interval() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    for _ in range(3):
        assert limiter.acquire("k", cost=1, rate_per_second=4.0, burst=3).allowed
    refused = limiter.acquire("k", cost=1, rate_per_second=4.0, burst=3)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.acquire("k", cost=1, rate_per_second=4.0, burst=3).allowed
    assert not limiter.acquire("k", cost=1, rate_per_second=4.0, burst=3).allowed


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    assert limiter.acquire("k", cost=2, rate_per_second=1.0, burst=2).allowed
    clock.now += 3600
    full = limiter.acquire("k", cost=0, rate_per_second=1.0, burst=2)
    assert full.allowed and full.remaining == 2
    assert limiter.acquire("k", cost=2, rate_per_second=1.0, burst=2).allowed
    assert not limiter.acquire("k", cost=1, rate_per_second=1.0, burst=2).allowed


def test_reset_after_is_time_until_the_bucket_is_full() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    taken = limiter.acquire("k", cost=3, rate_per_second=10.0, burst=5)
    assert taken.reset_after == pytest.approx(0.3)
    clock.now += 0.1
    assert limiter.acquire("k", cost=0, rate_per_second=10.0, burst=5).reset_after == pytest.approx(0.2)


def test_full_buckets_are_swept_from_memory() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    for i in range(9_999):
        limiter.acquire(f"k{i}", cost=1, rate_per_second=1.0, burst=1)
    assert len(limiter) == 9_999
    clock.now += 2
    limiter.acquire("last", cost=1, rate_per_second=1.0, burst=1)
    assert len(limiter) == 1


def test_unreachable_redis_raises_backend_unavailable() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout=0.5)
    with pytest.raises(BackendUnavailableError) as caught:
        limiter.acquire("k", cost=1, rate_per_second=1.0, burst=1)
    assert caught.value.backend == "redis"
    limiter.close()


@pytest.mark.parametrize(
    ("redis_url", "kind"), [(None, InProcessLimiter), ("redis://127.0.0.1:56379/0", RedisLimiter)]
)
def test_limiter_from_settings_follows_redis_url(tmp_path: Path, redis_url: str | None, kind: type) -> None:
    limiter = limiter_from_settings(Settings(redis_url=redis_url, data_dir=tmp_path))
    assert isinstance(limiter, kind)
