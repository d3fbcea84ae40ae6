-- name: job_events
SELECT event_id, at, event, chunk_no, detail
FROM job_events FINAL
WHERE account_id = {account_id:UInt64} AND job_id = {job_id:UUID}
ORDER BY at, event_id
LIMIT {limit:UInt32}
