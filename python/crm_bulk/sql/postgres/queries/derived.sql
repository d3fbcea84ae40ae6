-- Jobs derived from jobs: a dry run promoted to the real job, a revert. Both are planned when created, from
-- what the source job stored (its chunk payloads; its chunks' before-images), in one transaction.

-- name: lock_source
-- The source job, locked so two derivations of it are made one after the other.
SELECT action, status, dry_run, (spec - 'dry_run')::text, params::text, mapping_used::text,
       finished_at < now() - make_interval(days => %(retention_days)s) AS images_expired
FROM bulk_actions
WHERE id = %(job_id)s AND account_id = %(account_id)s AND status <> 'uploading'
FOR UPDATE

-- name: insert_planned_job
-- A derived job starts planned: the scheduler starts it like a finished streamed import.
INSERT INTO bulk_actions (account_id, created_by, action, spec, params, status, planned, total, chunk_count,
                          source_id, request_hash, mapping_used)
VALUES (%(account_id)s, %(created_by)s, %(action)s, %(spec)s::jsonb, %(params)s::jsonb, 'queued', true,
        %(total)s, %(chunk_count)s, %(source_id)s, %(request_hash)s, %(mapping_used)s::jsonb)
RETURNING id

-- name: source_plan
SELECT total, chunk_count FROM bulk_actions WHERE id = %(source_id)s

-- name: copy_chunks
-- The same target snapshot: the dry run's planned ids or records, chunk for chunk.
INSERT INTO bulk_action_chunks (job_id, chunk_no, account_id, entity_count, payload)
SELECT %(job_id)s, c.chunk_no, c.account_id, c.entity_count, c.payload
FROM bulk_action_chunks AS c
WHERE c.job_id = %(source_id)s

-- name: revert_plan
-- What a revert of the job restores: one chunk per source chunk that changed something.
SELECT count(*), coalesce(sum(image_rows), 0)
FROM bulk_action_chunk_images
WHERE job_id = %(source_id)s AND before_image IS NOT NULL

-- name: copy_images_as_chunks
INSERT INTO bulk_action_chunks (job_id, chunk_no, account_id, entity_count, payload)
SELECT %(job_id)s, (row_number() OVER (ORDER BY i.chunk_no) - 1)::int, i.account_id, i.image_rows,
       i.before_image
FROM bulk_action_chunk_images AS i
WHERE i.job_id = %(source_id)s AND i.before_image IS NOT NULL
