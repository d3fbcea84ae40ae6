-- Job lifecycle events, written in the same transaction as the change they describe and moved to
-- ClickHouse `job_events` by the shipper, which deletes them here once they are stored there.
CREATE TABLE job_events_outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid        NOT NULL,
    account_id bigint      NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    event      text        NOT NULL CHECK (event IN (
                   'planned', 'started', 'chunk_retried', 'dead_lettered', 'paced', 'cancelled', 'finished')),
    chunk_no   integer     NULL,
    detail     text        NOT NULL DEFAULT ''
);
