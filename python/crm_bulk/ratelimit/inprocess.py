"""GCRA buckets in this process's memory: the embedded deployment's limiter (one API process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from crm_bulk.ratelimit.base import Decision, check_arguments, gcra

# Keys whose TAT lies in the past hold no state worth keeping; sweep them every this many calls.
_SWEEP_EVERY = 10_000


class InProcessLimiter:
    """Thread-safe GCRA keyed by string; `clock` is monotonic seconds (injectable for tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}
        self._calls = 0

    def acquire(self, key: str, *, cost: int, rate_per_second: float, burst: int) -> Decision:
        """Admit or refuse `cost` units for `key`; see `crm_bulk.ratelimit.base.gcra`."""
        check_arguments(cost, rate_per_second, burst)
        with self._lock:
            now = self._clock()
            decision, new_tat = gcra(
                self._tats.get(key), now, cost=cost, rate_per_second=rate_per_second, burst=burst
            )
            if new_tat is not None:
                self._tats[key] = new_tat
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                self._sweep(now)
        return decision

    def _sweep(self, now: float) -> None:
        """Forget keys whose buckets are full again (a missing key means a full bucket)."""
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    def __len__(self) -> int:
        return len(self._tats)

    def __repr__(self) -> str:
        return f"InProcessLimiter(keys={len(self._tats)}, calls={self._calls})"
