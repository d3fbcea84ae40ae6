-- name: record_event
INSERT INTO job_events_outbox (job_id, account_id, event, chunk_no, detail)
VALUES (%(job_id)s, %(account_id)s, %(event)s, %(chunk_no)s, %(detail)s)
