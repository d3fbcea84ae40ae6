-- Reads of the entity log for the API. Every statement is scoped by account AND job, and reads FINAL so a
-- chunk shipped twice counts once (see 001_entity_outcomes.sql).

-- name: outcome_code_counts
SELECT outcome, code, count() AS n
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
GROUP BY outcome, code

-- name: throughput
SELECT toStartOfInterval(applied_at, toIntervalSecond({bucket_seconds:UInt32})) AS t, count() AS entities
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
GROUP BY t
ORDER BY t

-- name: chunk_latency
-- One duration per chunk, so percentiles weigh chunks, not the entities in them; chunks without a duration
-- (cancelled before they ran) do not count.
SELECT
    count() AS chunks,
    quantilesExact(0.5, 0.95, 0.99)(duration) AS q
FROM
(
    SELECT chunk_no, any(duration_ms) AS duration
    FROM entity_outcomes FINAL
    WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
    GROUP BY chunk_no
    HAVING duration IS NOT NULL
)

-- name: logs_page
-- Keyset pagination on the sorting key after (account_id, job_id); an empty outcome and a NULL entity id
-- mean "no filter".
SELECT outcome, chunk_no, row_no, entity_id, email, code, message, applied_at
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
  AND (outcome, chunk_no, row_no) > ({after_outcome:String}, {after_chunk:UInt32}, {after_row:UInt32})
  AND (empty({outcome:String}) OR outcome = {outcome:String})
  AND ({entity_id:Nullable(Int64)} IS NULL OR entity_id = {entity_id:Nullable(Int64)})
ORDER BY outcome, chunk_no, row_no
LIMIT {limit:UInt32}

-- name: error_summary
SELECT code, count() AS n
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID} AND outcome IN ('failed', 'skipped')
GROUP BY code
ORDER BY n DESC, code

-- name: errors_page
SELECT outcome, chunk_no, row_no, entity_id, email, code, message, applied_at
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID} AND outcome IN ('failed', 'skipped')
  AND (outcome, chunk_no, row_no) > ({after_outcome:String}, {after_chunk:UInt32}, {after_row:UInt32})
ORDER BY outcome, chunk_no, row_no
LIMIT {limit:UInt32}

-- name: count_rows
-- Rows as the reads see them (FINAL), for the shipper's tests and operators.
SELECT count() FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}

-- name: results
-- A job's result file, in input order: by chunk then row, which is line order (lines are numbered that
-- way, sql/clickhouse/003_result_lines.sql). An entity skipped because the job was cancelled is a
-- `cancelled` result here, as in the job's counts. `outcomes` narrows the key range; `results` selects.
SELECT line,
       entity_id,
       if(outcome = 'skipped' AND code = 'cancelled', 'cancelled', outcome) AS result,
       code,
       message,
       changed_fields,
       input
FROM entity_outcomes FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
  AND outcome IN {outcomes:Array(String)}
  AND result IN {results:Array(String)}
ORDER BY chunk_no, row_no
-- Blocks of a few thousand rows: the reader streams them (ClickHouseEngine.stream), one at a time.
SETTINGS max_block_size = 8192
