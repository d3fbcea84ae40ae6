-- The progress of the jobs that live event streams watch: one statement per tick for all of them.

-- name: jobs_by_account_and_id
-- Scoped like every read: each id comes with the account that subscribed to it.
-- The columns of jobs.sql's get_job, in its order (repository._job reads both).
SELECT b.id, b.action, b.status, b.total, b.succeeded, b.failed, b.skipped, b.cancelled, b.created_at,
       b.scheduled_for, b.started_at, b.finished_at, b.created_by, b.dry_run, b.source_id, b.mapping_used,
       now()
FROM unnest(%(account_ids)s::bigint[], %(job_ids)s::uuid[]) AS w (account_id, job_id)
JOIN bulk_actions b ON b.account_id = w.account_id AND b.id = w.job_id
WHERE b.status <> 'uploading'
