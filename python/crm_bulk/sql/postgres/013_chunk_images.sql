-- What each applied chunk keeps beside its ledger row, so jobs can be derived from it:
--
-- `before_image` (real runs): per contact the chunk changed, its row version right after the change (the
-- row's xmin) and the values the change replaced, changed fields only. A revert restores them where the row
-- still has that version; any later write (a job, the API, SQL) gives the row a new xmin, so such a contact
-- is skipped `changed_since`. xmin costs the hot path nothing (no column, trigger or extra write per row),
-- and survives freezing (PostgreSQL keeps the raw xmin).
-- `sample` (dry runs): a bounded sample of the chunk's outcomes with before and after values, for the
-- preview; the data change itself rolled back.
-- Both are zstd-compressed Arrow IPC streams (crm_bulk.apply.images); purged after
-- CRM_BULK_BEFORE_IMAGE_RETENTION_DAYS.
CREATE TABLE bulk_action_chunk_images (
    job_id       uuid        NOT NULL,
    chunk_no     integer     NOT NULL,
    account_id   bigint      NOT NULL,
    -- Rows in before_image: the entities a revert of this chunk plans.
    image_rows   integer     NOT NULL DEFAULT 0 CHECK (image_rows >= 0),
    before_image bytea,
    sample       bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no),
    FOREIGN KEY (job_id, chunk_no) REFERENCES bulk_action_chunks (job_id, chunk_no) ON DELETE CASCADE
);
-- Already compressed: TOAST compressing again only burns CPU.
ALTER TABLE bulk_action_chunk_images ALTER COLUMN before_image SET STORAGE EXTERNAL;
ALTER TABLE bulk_action_chunk_images ALTER COLUMN sample SET STORAGE EXTERNAL;
-- The retention purge walks the oldest images first.
CREATE INDEX bulk_action_chunk_images_created_idx ON bulk_action_chunk_images (created_at);
