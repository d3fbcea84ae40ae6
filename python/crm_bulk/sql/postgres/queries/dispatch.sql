-- The scheduler's side of the ledger: due jobs, planning, fair release, finishing, cancelling, failing.

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

-- name: running_jobs
SELECT j.id, j.account_id, a.entities_per_second
FROM bulk_actions AS j
JOIN accounts AS a ON a.id = j.account_id
WHERE j.status = 'running' AND j.planned
ORDER BY j.created_at, j.id

-- name: try_lock_job_dispatch
-- One dispatcher per job at a time, without touching the job row (workers update its counters).
SELECT pg_try_advisory_xact_lock(%(lock_class)s, hashtext(%(job_id)s::text))

-- name: chunks_in_flight
SELECT count(*), coalesce(sum(entity_count), 0)
FROM bulk_action_chunks
WHERE job_id = %(job_id)s AND state = 'released'

-- name: pending_chunks
SELECT chunk_no, entity_count
FROM bulk_action_chunks
WHERE job_id = %(job_id)s AND state = 'pending'
ORDER BY chunk_no
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: ensure_pacing_rows
INSERT INTO dispatch_pacing (account_id, next_release_at)
SELECT a, now() - interval '1 day' FROM unnest(%(account_ids)s::bigint[]) AS a
ON CONFLICT (account_id) DO NOTHING

-- name: lock_pacing_rows
-- Sorted, so dispatchers locking overlapping sets of accounts cannot deadlock.
SELECT account_id, next_release_at, clock_timestamp()
FROM dispatch_pacing
WHERE account_id = ANY(%(account_ids)s::bigint[])
ORDER BY account_id
FOR UPDATE

-- name: store_pacing
UPDATE dispatch_pacing AS p
SET next_release_at = s.next_release_at
FROM unnest(%(account_ids)s::bigint[], %(next_release_at)s::timestamptz[]) AS s (account_id, next_release_at)
WHERE p.account_id = s.account_id

-- name: mark_released
UPDATE bulk_action_chunks AS c
SET state = 'released', released_at = now()
FROM unnest(%(job_ids)s::uuid[], %(chunk_nos)s::int[]) AS s (job_id, chunk_no)
WHERE c.job_id = s.job_id AND c.chunk_no = s.chunk_no AND c.state = 'pending'

-- name: stale_released_chunks
-- Released long ago and still open: the message may be lost (broker data loss, a purged topic); release it
-- again. A duplicate is harmless: the ledger turns the second apply into a no-op.
UPDATE bulk_action_chunks AS c
SET released_at = now()
FROM bulk_actions AS j
WHERE j.id = c.job_id AND j.status = 'running'
  AND c.state = 'released' AND c.released_at < now() - make_interval(secs => %(older_than)s)
RETURNING c.job_id, c.chunk_no, c.account_id, c.entity_count

-- name: finish_jobs
-- Jobs whose chunks are all terminal end; the status follows the counts.
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

-- name: cancel_open_chunks
-- Locks the open chunks (waiting for any apply in progress, which then is done and no longer matches).
UPDATE bulk_action_chunks
SET state = 'cancelled'
WHERE job_id = %(job_id)s AND state IN ('pending', 'released')
RETURNING chunk_no, entity_count, payload

-- name: store_terminal_outcomes
UPDATE bulk_action_chunks AS c
SET outcomes = s.outcomes
FROM unnest(%(chunk_nos)s::int[], %(outcomes)s::bytea[]) AS s (chunk_no, outcomes)
WHERE c.job_id = %(job_id)s AND c.chunk_no = s.chunk_no

-- name: add_cancelled_counts
UPDATE bulk_actions
SET cancelled = cancelled + %(entities)s,
    chunks_done = chunks_done + %(chunks)s,
    finished_at = now()
WHERE id = %(job_id)s

-- name: lock_chunk_state
SELECT state, payload, account_id FROM bulk_action_chunks
WHERE job_id = %(job_id)s AND chunk_no = %(chunk_no)s
FOR UPDATE

-- name: mark_chunk_failed
UPDATE bulk_action_chunks
SET state = 'failed', outcomes = %(outcomes)s, succeeded = 0, failed = %(failed)s, skipped = 0,
    error = %(error)s, attempts = greatest(attempts, %(attempts)s), worker = %(worker)s, applied_at = now()
WHERE job_id = %(job_id)s AND chunk_no = %(chunk_no)s

-- name: add_failed_counts
UPDATE bulk_actions
SET failed = failed + %(failed)s, chunks_done = chunks_done + 1
WHERE id = %(job_id)s

-- name: note_chunk_attempt
UPDATE bulk_action_chunks
SET attempts = greatest(attempts, %(attempts)s), error = %(error)s
WHERE job_id = %(job_id)s AND chunk_no = %(chunk_no)s AND state IN ('pending', 'released')
RETURNING account_id

-- name: chunk_for_worker
-- What a worker checks before pacing: is the chunk still open, and at what rate may its account go.
SELECT c.state, a.entities_per_second
FROM bulk_action_chunks AS c
JOIN accounts AS a ON a.id = c.account_id
WHERE c.job_id = %(job_id)s AND c.chunk_no = %(chunk_no)s
