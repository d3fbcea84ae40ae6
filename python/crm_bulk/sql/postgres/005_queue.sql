-- The embedded queue (a table consumed with FOR UPDATE SKIP LOCKED), its dead letters, and dispatch state.
--
-- A consumer claims a message by stamping its connection's backend pid; the claim holds only while that
-- backend lives (checked against pg_stat_activity), so a killed worker's messages come back as soon as its
-- connection is gone, and acknowledgements (DELETE) are durable one by one without long transactions.
CREATE TABLE queue_messages (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text        NOT NULL,
    body        bytea       NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    claimed_by  integer,
    claimed_at  timestamptz,
    deliveries  integer     NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
CREATE INDEX queue_messages_topic_idx ON queue_messages (topic, id);

-- Chunks that exhausted their retries or failed permanently; `body` is the MessagePack DeadLetter.
CREATE TABLE queue_dead_letters (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text        NOT NULL,
    body       bytea       NOT NULL,
    reason     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_dead_letters_topic_idx ON queue_dead_letters (topic, id);

-- Entity pacing at release: the earliest time the dispatcher may release the next chunk of an account, so
-- a rate-limited account's chunks wait in the ledger instead of holding worker processes.
CREATE TABLE dispatch_pacing (
    account_id      bigint      PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    next_release_at timestamptz NOT NULL
);

-- The dispatcher's and finaliser's view of unfinished chunks (a small slice of a large ledger).
CREATE INDEX bulk_action_chunks_open_idx
    ON bulk_action_chunks (job_id, chunk_no) WHERE state IN ('pending', 'released');
