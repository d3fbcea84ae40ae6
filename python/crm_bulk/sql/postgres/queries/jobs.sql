-- Job rows (bulk_actions): creation with idempotency keys, reads scoped by account.

-- name: insert_job
-- A concurrent request with the same idempotency key inserts nothing; the caller then reads that job.
-- A streamed upload's job starts `uploading` (see 007_uploading_jobs.sql) and turns queued when it ends.
INSERT INTO bulk_actions (account_id, created_by, action, spec, params, status, scheduled_for, idempotency_key,
                          request_hash, upload_seen_at, dry_run, source_id, mapping_used)
VALUES (%(account_id)s, %(created_by)s, %(action)s, %(spec)s::jsonb, %(params)s::jsonb,
        CASE WHEN %(uploading)s THEN 'uploading'
             WHEN %(scheduled_for)s::timestamptz > now() THEN 'scheduled'
             ELSE 'queued' END,
        %(scheduled_for)s, %(idempotency_key)s, %(request_hash)s,
        CASE WHEN %(uploading)s THEN now() END, %(dry_run)s, %(source_id)s, %(mapping_used)s::jsonb)
ON CONFLICT (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, action, status, total, succeeded, failed, skipped, cancelled, created_at, scheduled_for,
          started_at, finished_at, created_by, dry_run, source_id, mapping_used, now()

-- name: job_by_idempotency_key
SELECT id, request_hash, created_at < now() - interval '24 hours' AS expired
FROM bulk_actions
WHERE account_id = %(account_id)s AND idempotency_key = %(idempotency_key)s

-- name: set_request_hash
UPDATE bulk_actions SET request_hash = %(request_hash)s WHERE id = %(job_id)s

-- name: release_idempotency_key
-- A key is remembered for 24 hours; after that it may name a new job.
UPDATE bulk_actions SET idempotency_key = NULL WHERE id = %(job_id)s

-- name: get_job
SELECT id, action, status, total, succeeded, failed, skipped, cancelled, created_at, scheduled_for,
       started_at, finished_at, created_by, dry_run, source_id, mapping_used, now()
FROM bulk_actions
-- An upload in progress is not a job yet: it appears once its body has been read whole.
WHERE account_id = %(account_id)s AND id = %(job_id)s AND status <> 'uploading'

-- name: list_jobs
-- Newest first; the cursor is the (created_at, id) of the last job of the previous page.
SELECT id, action, status, total, succeeded, failed, skipped, cancelled, created_at, scheduled_for,
       started_at, finished_at, created_by, dry_run, source_id, mapping_used, now()
FROM bulk_actions
WHERE account_id = %(account_id)s AND status <> 'uploading'
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
