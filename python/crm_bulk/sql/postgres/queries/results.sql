-- Result files and retries of what failed: what they need of the source job beyond the job view.

-- name: job_spec
-- The stored request of the account's job (its action, changes, tags, import options); uploads in progress
-- are not jobs yet.
SELECT spec::text
FROM bulk_actions
WHERE account_id = %(account_id)s AND id = %(job_id)s AND status <> 'uploading'
