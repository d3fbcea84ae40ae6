"""Long-lived clients of the API process, opened in the app's lifespan and closed there."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from crm_bulk.api.client_address import TrustedProxies
from crm_bulk.api.probe_cache import ProbeCache
from crm_bulk.api.upload_slots import UploadSlots
from crm_bulk.auth.throttle import LoginThrottle
from crm_bulk.auth.tokens import TokenCodec
from crm_bulk.entitylog.clickhouse import ClickHouseEngine
from crm_bulk.entitylog.host import HostEngine, StoreHost
from crm_bulk.entitylog.store import ClickHouseStore
from crm_bulk.health import BackendStatus
from crm_bulk.ratelimit import RateLimiter, RedisLimiter, limiter_from_settings
from crm_bulk.settings import API_POOL_SIZE, Settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

POOL_TIMEOUT_SECONDS = 10.0
# A reconnect attempt that keeps failing gives up after this long (psycopg_pool's default is 300 s), so its
# backoff (1, 2, 4, 8, 16 s ...) never outlasts a restart by more: once it gives up, the next request grows
# the pool with an immediate connect.
RECONNECT_TIMEOUT_SECONDS = 2.0
# Shown in `pg_stat_activity`, so an operator tells the API's connections from the workers'.
APPLICATION_NAME = "crm-bulk-api"


@dataclass
class Resources:
    """What request handlers share. With chDB, `store_host` is the child process that owns the engine (and
    ships the outboxes into it); `store` reaches it from here."""

    settings: Settings
    database_url: str
    store: ClickHouseStore
    limiter: RateLimiter
    tokens: TokenCodec
    login_throttle: LoginThrottle
    uploads: UploadSlots
    store_host: StoreHost | None = None
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    # The backends' health, probed at most once a second for /healthz and /readyz.
    health_probes: ProbeCache[dict[str, BackendStatus]] = field(default_factory=ProbeCache, repr=False)
    _pool: ConnectionPool[psycopg.Connection[Any]] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resources:
        """Resources for resolved `settings` (`deployment.running_database`); nothing is connected yet."""
        limiter = limiter_from_settings(settings)
        url = settings.postgres_dsn
        host = StoreHost(settings) if settings.clickhouse_embedded else None
        return cls(
            settings=settings,
            database_url=url,
            store=ClickHouseStore(
                ClickHouseEngine(settings.clickhouse_dsn) if host is None else HostEngine(host)
            ),
            limiter=limiter,
            tokens=TokenCodec.from_settings(settings),
            login_throttle=LoginThrottle(limiter),
            uploads=UploadSlots(total=settings.max_uploads, per_account=settings.max_uploads_per_account),
            store_host=host,
            proxies=TrustedProxies.from_settings(settings),
        )

    def open(self) -> None:
        """Start the PostgreSQL pool; connections are made in the background, so a down database does not stop
        the process from serving `/healthz` and `/readyz`."""
        if self._pool is None:
            self._pool = ConnectionPool(
                self.database_url,
                min_size=1,
                max_size=API_POOL_SIZE,
                timeout=POOL_TIMEOUT_SECONDS,
                open=False,
                name="crm-bulk-api",
                kwargs={"application_name": APPLICATION_NAME},
                check=self._check_pooled,
                reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            )
            self._pool.open(wait=False)

    def _check_pooled(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's checkout check (one round trip): a connection the server dropped is never handed to a
        request. One dropped connection mostly means all were (a restart, an operator's terminate): the idle
        ones are swept at once, or each would be found on a later checkout, after a growing backoff sleep."""
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            if self._pool is not None:
                self._pool.check()
            raise

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction that commits when the block ends without an exception; with
        `autocommit`, one for code that manages its own transactions."""
        if self._pool is None:
            self.open()
        assert self._pool is not None
        with self._pool.connection() as conn:
            if not autocommit:
                yield conn
                return
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    def in_transaction(
        self, work: Callable[Concatenate[psycopg.Connection[Any], P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`work(conn, *args, **kwargs)` on a pooled connection in one transaction, the connection given back
        as soon as `work` returns: for callers that go on to slower work (ClickHouse, an upload's body, the
        login throttle) and must not hold one meanwhile. Blocks: call it from a worker thread."""
        with self.connection() as conn:
            return work(conn, *args, **kwargs)

    def pool_has_room(self, *, wait: float) -> bool:
        """Whether the pool can give a connection within `wait` seconds: at once when one is idle or the pool
        may still grow, else by waiting for one (in line behind the requests already waiting)."""
        if self._pool is None:
            return False
        stats = self._pool.get_stats()
        if stats.get("pool_available", 0) > 0 and stats.get("requests_waiting", 0) == 0:
            return True
        if stats.get("pool_size", 0) < API_POOL_SIZE and stats.get("requests_waiting", 0) == 0:
            return True
        try:
            conn = self._pool.getconn(timeout=wait)
        except PoolTimeout:
            return False
        self._pool.putconn(conn)
        return True

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (`pool_size`, `pool_available`, `requests_waiting`, …); empty before `open`."""
        return {} if self._pool is None else self._pool.get_stats()

    def close(self) -> None:
        """Release every client."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.store.close()
        if self.store_host is not None:
            self.store_host.stop()
        if isinstance(self.limiter, RedisLimiter):
            self.limiter.close()
