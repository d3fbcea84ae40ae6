-- Bulk action jobs and their chunk ledger.
--
-- A job's counters are bumped by every applied chunk, so the table keeps free space for HOT updates
-- (status and scheduled_for, the only indexed columns that change, change a few times per job).
CREATE TABLE bulk_actions (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id      bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_by      bigint      REFERENCES users (id) ON DELETE SET NULL,
    action          text        NOT NULL CHECK (action IN ('update', 'delete', 'add_tags', 'remove_tags', 'import')),
    -- The validated request; large inline inputs (ids, records) are replaced by their counts once planned.
    spec            jsonb       NOT NULL,
    -- The action's own parameters (changes, tags, on_duplicate) without the bulky target ids or records:
    -- read by every chunk, so it must stay small enough not to be TOASTed.
    params          jsonb       NOT NULL DEFAULT '{}',
    status          text        NOT NULL CHECK (status IN (
                        'scheduled', 'queued', 'running', 'completed', 'completed_with_errors', 'failed',
                        'cancelled')),
    planned         boolean     NOT NULL DEFAULT false,
    total           bigint      NOT NULL DEFAULT 0 CHECK (total >= 0),
    succeeded       bigint      NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed          bigint      NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped         bigint      NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    cancelled       bigint      NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    chunk_count     integer     NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    chunks_done     integer     NOT NULL DEFAULT 0 CHECK (chunks_done >= 0),
    scheduled_for   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    error           text,
    idempotency_key text,
    request_hash    text
) WITH (fillfactor = 70);

CREATE UNIQUE INDEX bulk_actions_idempotency_key
    ON bulk_actions (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- An account's jobs, newest first (keyset on created_at, id).
CREATE INDEX bulk_actions_account_recent_idx ON bulk_actions (account_id, created_at DESC, id DESC);
-- Scheduled jobs coming due, and the unfinished jobs the scheduler watches.
CREATE INDEX bulk_actions_due_idx ON bulk_actions (scheduled_for) WHERE status = 'scheduled';
CREATE INDEX bulk_actions_active_idx ON bulk_actions (created_at) WHERE status IN ('queued', 'running');

-- The ledger: one row per chunk. Its state, the chunk's data change and the job counters commit together,
-- which is what makes a redelivered chunk a no-op.
CREATE TABLE bulk_action_chunks (
    job_id              uuid        NOT NULL REFERENCES bulk_actions (id) ON DELETE CASCADE,
    chunk_no            integer     NOT NULL CHECK (chunk_no >= 0),
    account_id          bigint      NOT NULL,
    entity_count        integer     NOT NULL CHECK (entity_count >= 0),
    state               text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'released', 'done', 'failed', 'cancelled')),
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Arrow IPC stream of the chunk's input: `id` int64 for id/filter/all targets, contact columns for imports.
    payload             bytea       NOT NULL,
    -- The outbox: Arrow IPC stream, one final outcome row per entity; cleared once shipped to ClickHouse.
    outcomes            bytea,
    outcomes_shipped_at timestamptz,
    succeeded           integer     NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed              integer     NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped             integer     NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    error               text,
    worker              text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    released_at         timestamptz,
    applied_at          timestamptz,
    duration_ms         integer,
    PRIMARY KEY (job_id, chunk_no)
);
-- Arrow buffers are compressed (zstd) before they are stored; TOAST compressing them again only burns CPU.
ALTER TABLE bulk_action_chunks ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE bulk_action_chunks ALTER COLUMN outcomes SET STORAGE EXTERNAL;

-- The shipper's work list: outboxes written but not yet in ClickHouse.
CREATE INDEX bulk_action_chunks_unshipped_idx
    ON bulk_action_chunks (job_id, chunk_no) WHERE outcomes IS NOT NULL AND outcomes_shipped_at IS NULL;
