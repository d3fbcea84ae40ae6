-- One row per target entity of every chunk: the final outcome the chunk recorded in its outbox.
-- Re-shipping a chunk (the shipper died between the insert and marking the ledger) inserts identical rows,
-- so the table is a ReplacingMergeTree whose sorting key holds the entity's identity (job, chunk, row) and
-- every read uses FINAL. Insert-token deduplication cannot do this: the token covers one whole INSERT, and
-- the shipper packs many chunks into one insert whose make-up differs from one attempt to the next.
-- `outcome` sits before (chunk_no, row_no) so per-outcome reads (errors, filtered logs) are key ranges; an
-- entity's outcome comes from the same immutable outbox bytes on every shipment, so the key stays unique.
CREATE TABLE IF NOT EXISTS entity_outcomes
(
    account_id     UInt64,
    job_id         UUID,
    chunk_no       UInt32,
    row_no         UInt32,
    entity_id      Nullable(Int64),
    email          String,
    action         LowCardinality(String),
    outcome        LowCardinality(String),
    code           LowCardinality(String),
    message        String,
    changed_fields Array(String),
    attempt        UInt16,
    worker         String,
    applied_at     DateTime64(3, 'UTC'),
    -- The chunk's apply time from the ledger, repeated on its rows (compresses to almost nothing) so the
    -- stats endpoint gets chunk latency percentiles without a Postgres round trip.
    duration_ms    Nullable(UInt32),
    -- Snapshot ids are planned in ascending order, so a granule's id range is tight and lookups by id skip.
    INDEX entity_id_minmax entity_id TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(applied_at)
ORDER BY (account_id, job_id, outcome, chunk_no, row_no);
