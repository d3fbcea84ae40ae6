-- Webhook endpoints (one account's, always scoped by account_id) and their deliveries: the outbox rows
-- written with a job's start or end, claimed by deliverers with SKIP LOCKED, and the delivery log.

-- name: lock_account
-- Serialises registrations of one account, so its endpoint bound holds.
SELECT 1 FROM accounts WHERE id = %(account_id)s FOR UPDATE

-- name: count_endpoints
SELECT count(*) FROM webhook_endpoints WHERE account_id = %(account_id)s

-- name: insert_endpoint
INSERT INTO webhook_endpoints (id, account_id, url, description, events, secret_sealed)
VALUES (%(id)s, %(account_id)s, %(url)s, %(description)s, %(events)s, %(secret_sealed)s)
RETURNING id, url, description, events, enabled, created_at, updated_at

-- name: list_endpoints
SELECT id, url, description, events, enabled, created_at, updated_at
FROM webhook_endpoints
WHERE account_id = %(account_id)s
ORDER BY created_at, id

-- name: get_endpoint
SELECT id, url, description, events, enabled, created_at, updated_at
FROM webhook_endpoints
WHERE account_id = %(account_id)s AND id = %(id)s

-- name: update_endpoint
-- A missing (NULL) field stays as it is.
UPDATE webhook_endpoints
SET url = coalesce(%(url)s, url),
    description = coalesce(%(description)s, description),
    events = coalesce(%(events)s, events),
    enabled = coalesce(%(enabled)s, enabled),
    updated_at = now()
WHERE account_id = %(account_id)s AND id = %(id)s
RETURNING id, url, description, events, enabled, created_at, updated_at

-- name: delete_endpoint
DELETE FROM webhook_endpoints WHERE account_id = %(account_id)s AND id = %(id)s RETURNING id

-- name: disable_endpoint
-- The receiver answered 410 Gone: it wants no more deliveries.
UPDATE webhook_endpoints SET enabled = false, updated_at = now() WHERE id = %(id)s

-- name: has_subscribers
-- Whether any enabled endpoint of the account wants the event: most jobs have none to tell, and then the
-- job's view need not be built.
SELECT EXISTS (
    SELECT 1 FROM webhook_endpoints
    WHERE account_id = %(account_id)s AND enabled AND %(event)s = ANY (events)
)

-- name: enqueue_event
-- One delivery per enabled endpoint of the account that subscribed to the event, in the caller's
-- transaction. The event id is derived from the job and the event, so writing the same event twice adds
-- nothing: an event never reaches an endpoint under two ids.
INSERT INTO webhook_deliveries (endpoint_id, account_id, event_id, event, job_id, payload)
SELECT e.id, e.account_id, %(event_id)s, %(event)s, %(job_id)s, %(payload)s
FROM webhook_endpoints AS e
WHERE e.account_id = %(account_id)s AND e.enabled AND %(event)s = ANY (e.events)
ON CONFLICT (endpoint_id, event_id) DO NOTHING
RETURNING id

-- name: claim_due_deliveries
-- Due deliveries of enabled endpoints, claimed for one attempt: the attempt is counted and the row leased
-- until `lease_seconds` from now, after which another deliverer may take it again (its deliverer died).
-- SKIP LOCKED lets several deliverers claim side by side, never the same row.
UPDATE webhook_deliveries AS d
SET attempts = d.attempts + 1,
    claim = %(claim)s,
    last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => %(lease_seconds)s)
FROM (
    SELECT w.id FROM webhook_deliveries AS w
    JOIN webhook_endpoints AS ep ON ep.id = w.endpoint_id
    WHERE w.status = 'pending' AND w.next_attempt_at <= now() AND ep.enabled
    ORDER BY w.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF w SKIP LOCKED
) AS due, webhook_endpoints AS e
WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_id, d.payload, d.attempts - d.round_start, e.url, e.secret_sealed

-- name: record_delivered
-- Only the holder of the current claim records its result (a lapsed claim's late answer is dropped).
UPDATE webhook_deliveries
SET status = 'succeeded', delivered_at = now(), next_attempt_at = NULL, claim = NULL,
    last_status_code = %(status_code)s, last_error = NULL
WHERE id = %(id)s AND claim = %(claim)s

-- name: record_failed_attempt
-- NULL `retry_in_seconds`: the schedule is spent and the delivery ends `failed`.
UPDATE webhook_deliveries
SET status = CASE WHEN %(retry_in_seconds)s::double precision IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => %(retry_in_seconds)s::double precision),
    claim = NULL,
    last_status_code = %(status_code)s,
    last_error = %(error)s
WHERE id = %(id)s AND claim = %(claim)s

-- name: list_deliveries
-- The endpoint's delivery log, newest first, keyset-paged by id.
SELECT d.id, d.event_id, d.event, d.job_id, d.status, d.attempts, d.last_status_code, d.last_error,
       d.last_attempt_at, d.next_attempt_at, d.created_at, d.delivered_at
FROM webhook_deliveries AS d
WHERE d.account_id = %(account_id)s AND d.endpoint_id = %(endpoint_id)s
  AND (%(before_id)s::bigint IS NULL OR d.id < %(before_id)s::bigint)
ORDER BY d.id DESC
LIMIT %(limit)s

-- name: redeliver
-- Send again at once, the same body under the same event id; the retry schedule starts over.
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), round_start = attempts, claim = NULL, delivered_at = NULL
WHERE account_id = %(account_id)s AND endpoint_id = %(endpoint_id)s AND id = %(id)s
RETURNING id, event_id, event, job_id, status, attempts, last_status_code, last_error,
          last_attempt_at, next_attempt_at, created_at, delivered_at

-- name: prune_deliveries
-- Finished deliveries past the log's retention, a batch at a time; pending ones stay whatever their age.
DELETE FROM webhook_deliveries
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE status IN ('succeeded', 'failed')
      AND coalesce(delivered_at, last_attempt_at, created_at) < now() - make_interval(days => %(days)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
