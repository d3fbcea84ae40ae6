"""GCRA buckets in Redis: one atomic Lua call per decision, timed by the Redis server's clock."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis

from crm_bulk.env_values import redact
from crm_bulk.errors import BackendUnavailableError
from crm_bulk.ratelimit.base import Decision, check_arguments

KEY_PREFIX = "crm-bulk:rl:"
_MICROS = 1_000_000


def _script_text() -> str:
    return (resources.files("crm_bulk.ratelimit") / "gcra.lua").read_text()


class RedisLimiter:
    """The scale-out limiter: every process sharing `url` (and `key_prefix`) shares the buckets."""

    def __init__(self, url: str, *, socket_timeout: float = 2.0, key_prefix: str = KEY_PREFIX) -> None:
        self._url = url
        self._prefix = key_prefix
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        # EVALSHA with a transparent EVAL fallback when the server has not seen the script yet.
        self._script: Any = self._client.register_script(_script_text())
        self._calls = 0

    def acquire(self, key: str, *, cost: int, rate_per_second: float, burst: int) -> Decision:
        """Admit or refuse `cost` units for `key`; BackendUnavailableError when Redis does not answer."""
        check_arguments(cost, rate_per_second, burst)
        try:
            allowed, remaining, retry_us, reset_us = self._script(
                keys=[self._prefix + key], args=[cost, repr(float(rate_per_second)), burst]
            )
        except redis.RedisError as exc:
            raise BackendUnavailableError("redis", "CRM_BULK_REDIS_URL", str(exc)) from exc
        self._calls += 1
        return Decision(
            allowed=bool(allowed),
            retry_after=int(retry_us) / _MICROS,
            remaining=int(remaining),
            limit=burst,
            reset_after=int(reset_us) / _MICROS,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisLimiter({redact(self._url)!r}, calls={self._calls})"
