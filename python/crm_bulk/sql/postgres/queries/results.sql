-- Result files and retries of what failed: what they need of the source job beyond the job view.

-- name: job_spec
-- The stored request of the account's job (its action, changes, tags, import options); uploads in progress
-- are not jobs yet.
SELECT spec::text
FROM bulk_actions
WHERE account_id = %(account_id)s AND id = %(job_id)s AND status <> 'uploading'

-- name: set_chunk_lines
-- The input lines of a retry's chunks, row by row (sql/postgres/012_result_lines.sql).
UPDATE bulk_action_chunks AS c
SET lines = s.lines
FROM unnest(%(chunk_nos)s::int[], %(lines)s::bytea[]) AS s (chunk_no, lines)
WHERE c.job_id = %(job_id)s AND c.chunk_no = s.chunk_no
