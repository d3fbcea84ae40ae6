-- The planner: a job's target becomes ledger rows (bulk_action_chunks), each holding its chunk's input.

-- name: lock_job
-- The row lock serialises planners and import appends of one job.
SELECT account_id, action, planned, chunk_count, total, spec ? 'records' AS inline_records,
       coalesce(spec -> 'target' ? 'ids', false) AS target_ids
FROM bulk_actions
WHERE id = %(job_id)s
FOR UPDATE

-- name: target_filter
SELECT (spec -> 'target' -> 'filter')::text FROM bulk_actions WHERE id = %(job_id)s

-- name: target_ids
-- The requested ids, de-duplicated and ascending, as one run of big-endian int64s (no per-id round trip).
SELECT count(*), coalesce(string_agg(int8send(ids.id), ''::bytea ORDER BY ids.id), ''::bytea)
FROM (
    SELECT DISTINCT e.value::bigint AS id
    FROM bulk_actions AS j, jsonb_array_elements_text(j.spec -> 'target' -> 'ids') AS e (value)
    WHERE j.id = %(job_id)s
) AS ids

-- name: inline_records
SELECT (spec -> 'records')::text FROM bulk_actions WHERE id = %(job_id)s

-- name: snapshot_page
-- One keyset page of the account's live contacts matching the filter, after the previous page's last id.
-- The filter placeholder takes a fragment from crm_bulk.actions.filters (whitelisted SQL, bound parameters).
SELECT count(*), max(page.id), coalesce(string_agg(int8send(page.id), ''::bytea ORDER BY page.id), ''::bytea)
FROM (
    SELECT id
    FROM contacts
    WHERE account_id = %s AND deleted_at IS NULL AND id > %s AND ({filter})
    ORDER BY id
    LIMIT %s
) AS page


-- name: number_chunk_lines
-- Each chunk's first line (sql/postgres/012_result_lines.sql), set right after the chunks are written.
UPDATE bulk_action_chunks AS c
SET first_line = s.first_line
FROM unnest(%(chunk_nos)s::int[], %(first_lines)s::bigint[]) AS s (chunk_no, first_line)
WHERE c.job_id = %(job_id)s AND c.chunk_no = s.chunk_no
