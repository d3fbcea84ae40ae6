-- Before-images and dry-run samples kept per applied chunk (bulk_action_chunk_images, 012_chunk_images.sql).

-- name: store_chunk_image
-- In the chunk's own transaction, after its ledger row is done.
INSERT INTO bulk_action_chunk_images (job_id, chunk_no, account_id, image_rows, before_image, sample)
VALUES (%(job_id)s, %(chunk_no)s, %(account_id)s, %(image_rows)s, %(before_image)s, %(sample)s)
ON CONFLICT (job_id, chunk_no) DO UPDATE
SET image_rows = excluded.image_rows, before_image = excluded.before_image, sample = excluded.sample

-- name: sample_after
-- A dry-run sample's values after the statement, read inside its savepoint (before the rollback).
SELECT x.id, x.email, x.phone, x.first_name, x.last_name, x.company, x.job_title, to_jsonb(x.tags)::text,
       x.custom_fields::text, x.deleted_at::text
FROM contacts AS x
WHERE x.id = ANY (%(ids)s::bigint[]) AND coalesce(x.account_id = %(account_id)s, false)

-- name: preview_samples
-- A dry run's samples in chunk order, each with the input line of its chunk's first entity.
SELECT i.chunk_no, i.sample, c.first_line
FROM (
    SELECT ch.chunk_no,
           1 + coalesce(sum(ch.entity_count) OVER (ORDER BY ch.chunk_no
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
               AS first_line
    FROM bulk_action_chunks AS ch
    WHERE ch.job_id = %(job_id)s
) AS c
JOIN bulk_action_chunk_images AS i ON i.job_id = %(job_id)s AND i.chunk_no = c.chunk_no
WHERE i.sample IS NOT NULL
ORDER BY i.chunk_no
LIMIT %(chunks)s

-- name: purge_expired_images
-- Images of jobs that ended more than the retention ago; a revert of such a job is refused (lock_source in
-- derived.sql applies the same bound to the job's finished_at).
DELETE FROM bulk_action_chunk_images
WHERE ctid = ANY (ARRAY(
    SELECT x.ctid FROM bulk_action_chunk_images AS x
    JOIN bulk_actions AS j ON j.id = x.job_id
    WHERE x.created_at < now() - make_interval(days => %(days)s)
      AND j.finished_at < now() - make_interval(days => %(days)s)
    ORDER BY x.created_at
    LIMIT %(limit)s
))
