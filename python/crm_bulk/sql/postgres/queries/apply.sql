-- The apply engine's ledger side: lock a chunk, record it done with its outbox, add to the job's counters.

-- name: lock_chunk
-- The row lock serialises concurrent applies of one chunk: the second waits, then sees the first's state.
SELECT c.state, c.payload, c.account_id, j.action, j.params::text
FROM bulk_action_chunks AS c
JOIN bulk_actions AS j ON j.id = c.job_id
WHERE c.job_id = %(job_id)s AND c.chunk_no = %(chunk_no)s
FOR UPDATE OF c

-- name: finish_chunk
UPDATE bulk_action_chunks
SET state = 'done',
    outcomes = %(outcomes)s,
    succeeded = %(succeeded)s,
    failed = %(failed)s,
    skipped = %(skipped)s,
    attempts = greatest(attempts, %(attempt)s),
    worker = %(worker)s,
    error = NULL,
    applied_at = now(),
    duration_ms = %(duration_ms)s
WHERE job_id = %(job_id)s AND chunk_no = %(chunk_no)s

-- name: add_job_counts
-- Last statement of the chunk's transaction: the job row lock is held only until the commit.
UPDATE bulk_actions
SET succeeded = succeeded + %(succeeded)s,
    failed = failed + %(failed)s,
    skipped = skipped + %(skipped)s,
    chunks_done = chunks_done + 1
WHERE id = %(job_id)s
