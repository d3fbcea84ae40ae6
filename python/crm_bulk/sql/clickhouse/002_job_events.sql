-- The job's lifecycle: planned, started, chunk_retried, dead_lettered, paced, cancelled, finished.
-- `event_id` is the Postgres outbox id, the identity that makes a re-shipped event collapse into one row.
CREATE TABLE IF NOT EXISTS job_events
(
    account_id UInt64,
    job_id     UUID,
    event_id   UInt64,
    at         DateTime64(3, 'UTC'),
    event      LowCardinality(String),
    chunk_no   Nullable(UInt32),
    detail     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (account_id, job_id, at, event_id);
