"""A result reused for a short while, so a flood of health requests probes each backend once per period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Readiness probes poll every few seconds; a second's staleness is below what they can notice.
DEFAULT_TTL_SECONDS = 1.0


class ProbeCache(Generic[T]):
    """The last result of a probe, reused for `ttl` seconds; thread-safe.

    Callers that arrive while a probe runs wait for it and share its result, rather than each starting
    another: at most one probe per `ttl`, whatever the request rate."""

    def __init__(
        self, *, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._taken_at = 0.0
        self.probes = 0

    def __repr__(self) -> str:
        return f"ProbeCache(ttl={self._ttl}, probes={self.probes})"

    def get(self, probe: Callable[[], T]) -> T:
        """The cached result, or `probe()`'s when the cache is empty or older than `ttl`."""
        with self._lock:
            if self._value is None or self._clock() - self._taken_at >= self._ttl:
                self._value = probe()
                # Timed from the end of the probe: a slow probe (a backend timing out) still yields a full
                # period of reuse.
                self._taken_at = self._clock()
                self.probes += 1
            return self._value
