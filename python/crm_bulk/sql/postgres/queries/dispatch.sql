-- Fair release: which running jobs have room in their window, and each account's shared pacing schedule.

-- name: running_jobs
SELECT j.id, j.account_id, a.entities_per_second
FROM bulk_actions AS j
JOIN accounts AS a ON a.id = j.account_id
WHERE j.status = 'running' AND j.planned
ORDER BY j.created_at, j.id

-- name: try_lock_job_dispatch
-- One dispatcher per job at a time, without touching the job row (workers update its counters).
SELECT pg_try_advisory_xact_lock(%(lock_class)s, hashtext(%(job_id)s::text))

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
