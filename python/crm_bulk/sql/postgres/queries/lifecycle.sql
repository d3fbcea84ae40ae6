-- Job status changes: due jobs queued, planned jobs started, finished jobs ended, cancels, planning failures.

-- name: promote_due_jobs
-- Scheduled jobs whose time has come join the queue; SKIP LOCKED lets several schedulers share the work.
UPDATE bulk_actions AS j
SET status = 'queued'
FROM (
    SELECT id FROM bulk_actions
    WHERE status = 'scheduled' AND scheduled_for <= now()
    ORDER BY scheduled_for
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS due
WHERE j.id = due.id
RETURNING j.id, j.account_id

-- name: lock_job_to_plan
-- One queued job that still needs planning (streamed imports are planned by their upload).
SELECT id, account_id
FROM bulk_actions
WHERE status = 'queued' AND NOT planned AND (action <> 'import' OR spec ? 'records')
ORDER BY created_at
LIMIT 1
FOR UPDATE SKIP LOCKED

-- name: start_job
UPDATE bulk_actions
SET status = 'running', started_at = coalesce(started_at, now())
WHERE id = %(job_id)s AND status = 'queued' AND planned
RETURNING account_id, total, chunk_count

-- name: lock_planned_jobs
-- Queued jobs whose chunks are already written (finished streamed imports).
SELECT id
FROM bulk_actions
WHERE status = 'queued' AND planned
ORDER BY created_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: fail_job
UPDATE bulk_actions
SET status = 'failed', error = %(error)s, started_at = coalesce(started_at, now()), finished_at = now()
WHERE id = %(job_id)s AND status IN ('queued', 'running')
RETURNING account_id

-- name: finish_jobs
-- Jobs whose chunks are all terminal and whose outcomes are all in ClickHouse end; the status follows the
-- counts. An outbox still waiting for the shipper keeps its job running, so a job that reads terminal has a
-- complete log (stats, logs, errors); the partial outbox index makes the check one probe.
UPDATE bulk_actions AS j
SET status = CASE
        WHEN j.failed = 0 THEN 'completed'
        WHEN j.succeeded + j.skipped = 0 THEN 'failed'
        ELSE 'completed_with_errors'
    END,
    finished_at = now()
FROM (
    SELECT b.id FROM bulk_actions AS b
    WHERE b.status = 'running' AND b.planned AND b.chunks_done >= b.chunk_count
      AND NOT EXISTS (SELECT 1 FROM bulk_action_chunks AS c
                      WHERE c.job_id = b.id AND c.state IN ('pending', 'released'))
      AND NOT EXISTS (SELECT 1 FROM bulk_action_chunks AS o
                      WHERE o.job_id = b.id AND o.outcomes IS NOT NULL AND o.outcomes_shipped_at IS NULL)
    FOR UPDATE OF b SKIP LOCKED
) AS done
WHERE j.id = done.id
RETURNING j.id, j.account_id, j.status, j.total, j.succeeded, j.failed, j.skipped, j.cancelled

-- name: cancelled_jobs_with_open_chunks
SELECT DISTINCT c.job_id, j.account_id
FROM bulk_action_chunks AS c
JOIN bulk_actions AS j ON j.id = c.job_id
WHERE c.state IN ('pending', 'released') AND j.status = 'cancelled'

-- name: cancel_job_status
UPDATE bulk_actions
SET status = 'cancelled'
WHERE id = %(job_id)s AND account_id = %(account_id)s
  AND status IN ('scheduled', 'queued', 'running')
RETURNING status

-- name: job_status
SELECT status FROM bulk_actions WHERE id = %(job_id)s AND account_id = %(account_id)s
