-- The chunk ledger (`bulk_action_chunks`) and the job counters it drives: every chunk state change.
-- Lock order everywhere: chunk rows first, then the job row.

-- name: insert_chunk
INSERT INTO bulk_action_chunks (job_id, chunk_no, account_id, entity_count, payload)
VALUES (%(job_id)s, %(chunk_no)s, %(account_id)s, %(entity_count)s, %(payload)s)

-- name: add_chunks
-- An import slice was appended: the job knows more chunks and entities, but is not planned until finished.
UPDATE bulk_actions
SET chunk_count = chunk_count + %(chunks)s, total = total + %(entities)s,
    upload_seen_at = CASE WHEN status = 'uploading' THEN now() END
WHERE id = %(job_id)s

-- name: mark_planned
UPDATE bulk_actions
SET total = %(total)s, chunk_count = %(chunk_count)s, planned = true
WHERE id = %(job_id)s

-- name: finish_import
-- An upload that ends well becomes a job in one step: planned, and `queued` (or `scheduled`).
UPDATE bulk_actions
SET planned = true,
    status = CASE WHEN status <> 'uploading' THEN status
                  WHEN scheduled_for > now() THEN 'scheduled'
                  ELSE 'queued' END,
    upload_seen_at = NULL
WHERE id = %(job_id)s
RETURNING chunk_count

-- name: touch_upload
-- The upload's API process is alive (no slice completed for a while: a slow client).
UPDATE bulk_actions SET upload_seen_at = now() WHERE id = %(job_id)s AND status = 'uploading'

-- name: discard_upload
-- A failed upload leaves nothing: its job and, by ON DELETE CASCADE, every chunk written so far, in one step.
DELETE FROM bulk_actions WHERE id = %(job_id)s AND status = 'uploading' RETURNING chunk_count

-- name: discard_abandoned_uploads
-- Uploads whose API process stopped giving signs of life (it died mid-upload): discarded as a failed one is.
DELETE FROM bulk_actions
WHERE id IN (
    SELECT id FROM bulk_actions
    WHERE status = 'uploading' AND upload_seen_at < now() - make_interval(secs => %(older_than)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, account_id

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

-- name: chunk_for_worker
-- What a worker checks before pacing: is the chunk still open, at what rate may its account go, and has it
-- been delivered past the poison cap already (then it is failed without pacing).
SELECT c.state, a.entities_per_second, c.deliveries
FROM bulk_action_chunks AS c
JOIN accounts AS a ON a.id = c.account_id
WHERE c.job_id = %(job_id)s AND c.chunk_no = %(chunk_no)s

-- name: count_chunk_delivery
-- Committed on its own before the apply starts, so a delivery that kills its worker is still counted. An
-- apply of the chunk in progress elsewhere holds the row: this waits for it and then finds the chunk final.
UPDATE bulk_action_chunks
SET deliveries = deliveries + 1
WHERE job_id = %(job_id)s AND chunk_no = %(chunk_no)s AND state IN ('pending', 'released')
RETURNING deliveries

-- name: lock_chunk
-- The row lock serialises concurrent applies of one chunk: the second waits, then sees the first's state.
SELECT c.state, c.payload, c.account_id, j.action, j.params::text, j.dry_run
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
