"""The limiter protocol, its decision, and the GCRA arithmetic both implementations share.

GCRA (generic cell rate algorithm) keeps one number per key: the theoretical arrival time (TAT) of the next
request if requests came exactly at `rate_per_second`. A request of `cost` units is admitted when, after
adding `cost` emission intervals, the TAT is at most `burst` intervals ahead of now. A cost larger than the
burst is admitted only when the bucket is full and then puts the key into debt, so oversized work is paced,
never refused forever. A cost of 0 asks without taking: it is allowed when one unit would be (a peek, used
to refuse a login attempt before the password is even checked).
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

# Float noise must not turn "exactly 3 left" into 2.
_EPSILON = 1e-9


class Decision(msgspec.Struct, frozen=True):
    """The answer to one `acquire`: all durations in seconds."""

    allowed: bool
    retry_after: float
    remaining: int
    limit: int
    reset_after: float


class RateLimiter(Protocol):
    """Something that admits or refuses `cost` units for `key` at a rate with a burst allowance."""

    def acquire(self, key: str, *, cost: int, rate_per_second: float, burst: int) -> Decision:
        """Take `cost` units for `key` when the bucket holds them; a refusal changes nothing."""
        ...


def check_arguments(cost: int, rate_per_second: float, burst: int) -> None:
    """Reject arguments that have no meaningful bucket."""
    if cost < 0:
        raise ValueError(f"cost must not be negative, got {cost}")
    if not rate_per_second > 0 or math.isinf(rate_per_second):
        raise ValueError(f"rate_per_second must be a positive number, got {rate_per_second}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst}")


def gcra(
    tat: float | None, now: float, *, cost: int, rate_per_second: float, burst: int
) -> tuple[Decision, float | None]:
    """The decision for one request and the new TAT to store (None: store nothing)."""
    interval = 1.0 / rate_per_second
    tolerance = interval * burst
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval * cost
    needed = max(cost, 1)
    allow_at = tat + interval * needed - tolerance if needed <= burst else tat
    if allow_at - now > _EPSILON:
        remaining = max(0, math.floor((now - (tat - tolerance)) / interval + _EPSILON))
        return Decision(False, allow_at - now, remaining, burst, tat - now), None
    remaining = max(0, math.floor((now - (new_tat - tolerance)) / interval + _EPSILON))
    return Decision(True, 0.0, remaining, burst, new_tat - now), (new_tat if cost > 0 else None)
