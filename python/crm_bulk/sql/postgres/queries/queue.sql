-- The embedded queue (table queue_messages, see 005_queue.sql).

-- name: publish
INSERT INTO queue_messages (topic, body)
SELECT %(topic)s, body FROM unnest(%(bodies)s::bytea[]) AS b (body)

-- name: claim
-- A message is free when unclaimed or when the backend that claimed it is gone (a pid is only trusted if
-- that backend started before the claim, so a pid reused after a restart does not keep the claim alive).
-- `picked` is MATERIALIZED: a LIMIT … SKIP LOCKED subquery that the planner rescans would hand out a fresh
-- batch per rescan and claim far more than the limit.
WITH live AS MATERIALIZED (
    SELECT pid, backend_start FROM pg_stat_activity WHERE pid IS NOT NULL
), picked AS MATERIALIZED (
    SELECT m.id
    FROM queue_messages AS m
    WHERE m.topic = %(topic)s
      AND (m.claimed_by IS NULL
           OR NOT EXISTS (SELECT 1 FROM live
                          WHERE live.pid = m.claimed_by AND live.backend_start <= m.claimed_at))
    ORDER BY m.id
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
)
UPDATE queue_messages AS q
SET claimed_by = pg_backend_pid(), claimed_at = clock_timestamp(), deliveries = q.deliveries + 1
FROM picked
WHERE q.id = picked.id
RETURNING q.id, q.body, q.deliveries

-- name: ack
DELETE FROM queue_messages WHERE id = ANY(%(ids)s::bigint[])

-- name: release
UPDATE queue_messages SET claimed_by = NULL, claimed_at = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND claimed_by = pg_backend_pid()

-- name: lag
SELECT count(*) FROM queue_messages WHERE topic = %(topic)s

-- name: dead_letter
INSERT INTO queue_dead_letters (topic, body, reason) VALUES (%(topic)s, %(body)s, %(reason)s)

-- name: read_dead_letters
SELECT body FROM queue_dead_letters WHERE topic = %(topic)s ORDER BY id
