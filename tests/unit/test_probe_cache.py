"""`ProbeCache`: one probe per period, whatever the number of callers."""

from __future__ import annotations

import threading
import time

from crm_bulk.api.probe_cache import ProbeCache


def test_a_result_is_reused_within_its_period_only() -> None:
    now = [100.0]
    cache: ProbeCache[int] = ProbeCache(ttl=1.0, clock=lambda: now[0])
    results = iter(range(10))
    assert cache.get(lambda: next(results)) == 0
    now[0] += 0.99
    assert cache.get(lambda: next(results)) == 0
    now[0] += 0.01
    assert cache.get(lambda: next(results)) == 1
    assert cache.probes == 2


def test_concurrent_callers_share_one_probe() -> None:
    cache: ProbeCache[str] = ProbeCache(ttl=60.0)
    calls: list[int] = []

    def slow_probe() -> str:
        calls.append(1)
        time.sleep(0.1)
        return "ok"

    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(cache.get(slow_probe))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == ["ok"] * 16
    assert len(calls) == 1
