-- Jobs derived from jobs: dry runs, their promotion to the real job, reverts and retries.
--
-- `dry_run`: the job runs in full (planning, validation, dedup, the set-based statement) but every chunk's
-- data change rolls back; its counters, outcomes and log are kept as for any job.
-- `source_id`: the job this one was derived from (the dry run it promotes, the job it reverts or retries).
-- Deleting the source keeps the derived job, which then simply names no source.
-- A retry keeps its source's action; a revert is an action of its own, restoring its source's before-images.
ALTER TABLE bulk_actions ADD COLUMN dry_run boolean NOT NULL DEFAULT false;
ALTER TABLE bulk_actions ADD COLUMN source_id uuid REFERENCES bulk_actions (id) ON DELETE SET NULL;
ALTER TABLE bulk_actions DROP CONSTRAINT bulk_actions_action_check;
ALTER TABLE bulk_actions ADD CONSTRAINT bulk_actions_action_check
    CHECK (action IN ('update', 'delete', 'add_tags', 'remove_tags', 'import', 'revert'));
-- The jobs derived from a job (ON DELETE SET NULL looks them up; so does "was this job already reverted").
CREATE INDEX bulk_actions_source_idx ON bulk_actions (source_id) WHERE source_id IS NOT NULL;
