"""Rate limits: a GCRA token bucket behind one protocol, in process (embedded) or in Redis (scale-out).

The API paces requests per account with it; workers pace entities per account with the same interface.
"""

from crm_bulk.ratelimit.base import Decision, RateLimiter
from crm_bulk.ratelimit.inprocess import InProcessLimiter
from crm_bulk.ratelimit.redis_limiter import RedisLimiter
from crm_bulk.settings import Settings


def limiter_from_settings(settings: Settings) -> RateLimiter:
    """Redis when `redis_url` is set, else an in-process limiter (one process: the embedded deployment)."""
    if settings.redis_url is not None:
        return RedisLimiter(settings.redis_url)
    return InProcessLimiter()


__all__ = ["Decision", "InProcessLimiter", "RateLimiter", "RedisLimiter", "limiter_from_settings"]
