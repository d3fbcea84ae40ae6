-- Streamed imports in progress: a job in `uploading` has its chunks written slice by slice, each slice in a
-- short transaction of its own, so an upload never holds a connection while it waits on its client.
--
-- No scheduler query matches `uploading` (they read `scheduled`, `queued`, `running`), and the API's reads
-- leave such jobs out, so an upload is neither runnable nor visible until it ends well and turns `queued`
-- (or `scheduled`) in one statement. An upload that fails is deleted in one statement, its chunks with it
-- (ON DELETE CASCADE). `upload_seen_at` is the last sign of life of the upload's API process: one that died
-- mid-upload leaves its job behind, and the scheduler deletes it once that sign is old.
ALTER TABLE bulk_actions DROP CONSTRAINT bulk_actions_status_check;
ALTER TABLE bulk_actions ADD CONSTRAINT bulk_actions_status_check CHECK (status IN (
    'uploading', 'scheduled', 'queued', 'running', 'completed', 'completed_with_errors', 'failed', 'cancelled'));
ALTER TABLE bulk_actions ADD COLUMN upload_seen_at timestamptz;
CREATE INDEX bulk_actions_uploading_idx ON bulk_actions (upload_seen_at) WHERE status = 'uploading';
