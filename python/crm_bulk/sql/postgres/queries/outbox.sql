-- The shipper's side of the two outboxes: chunk outcomes in the ledger, job events in job_events_outbox.

-- name: claim_unshipped_outcomes
-- Row locks keep concurrent shippers on disjoint chunks; SKIP LOCKED lets them pass each other. The
-- applied_at fallbacks keep the value identical on every shipment of a chunk that never ran (cancelled).
-- first_line numbers the chunk's outcomes by input line (`lines`, when set, lists them row by row); a chunk
-- planned before first_line was recorded counts the entities of the chunks before it. An import's payload travels too: its records go into the log as sent.
SELECT c.job_id,
       c.chunk_no,
       c.account_id,
       j.action,
       c.attempts,
       coalesce(c.worker, '') AS worker,
       coalesce(c.applied_at, c.released_at, j.finished_at, j.created_at) AS applied_at,
       c.duration_ms,
       c.outcomes,
       coalesce(c.first_line, 1 + (SELECT coalesce(sum(p.entity_count), 0) FROM bulk_action_chunks AS p
                                   WHERE p.job_id = c.job_id AND p.chunk_no < c.chunk_no)) AS first_line,
       CASE WHEN j.action = 'import' THEN c.payload END AS payload,
       c.lines
FROM bulk_action_chunks AS c
JOIN bulk_actions AS j ON j.id = c.job_id
WHERE c.outcomes IS NOT NULL AND c.outcomes_shipped_at IS NULL
LIMIT %(limit)s
FOR UPDATE OF c SKIP LOCKED

-- name: mark_outcomes_shipped
-- The outbox bytes are dropped once ClickHouse holds them; outcomes_shipped_at records when.
UPDATE bulk_action_chunks AS c
SET outcomes = NULL, outcomes_shipped_at = now()
FROM unnest(%(job_ids)s::uuid[], %(chunk_nos)s::int[]) AS s (job_id, chunk_no)
WHERE c.job_id = s.job_id AND c.chunk_no = s.chunk_no

-- name: claim_unshipped_events
SELECT id, job_id, account_id, at, event, chunk_no, detail
FROM job_events_outbox
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: delete_shipped_events
DELETE FROM job_events_outbox WHERE id = ANY(%(ids)s::bigint[])
