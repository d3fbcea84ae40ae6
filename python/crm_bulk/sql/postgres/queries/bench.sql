-- The throughput benchmark (`crm-bulk bench`): the raw-SQL ceiling, the seed algorithm, and the job timeline.
--
-- Statements holding a `{filter}` placeholder are composed with psycopg.sql around a fragment from
-- crm_bulk.actions.filters (the same filter the platform's job gets) and therefore take positional
-- parameters, the filter's own last. Literal braces in them are doubled (`{{}}`).

-- name: create_account
INSERT INTO accounts (name, entities_per_second) VALUES (%(name)s, 10000000) RETURNING id

-- name: account_live_ids
-- Ascending, as one run of big-endian int64s (no Python object per id).
SELECT coalesce(string_agg(int8send(id), ''::bytea ORDER BY id), ''::bytea)
FROM contacts
WHERE account_id = %(account_id)s AND deleted_at IS NULL

-- name: delete_account_contacts
DELETE FROM contacts WHERE account_id = %(account_id)s

-- name: align_ceiling_account
-- After the imports: the ceiling's account keeps only the emails live in the platform's account, so every later
-- scenario changes identical data on both sides even when the platform's import left rows out.
DELETE FROM contacts AS b
WHERE b.account_id = %(ceiling_account)s
  AND NOT EXISTS (SELECT 1 FROM contacts AS a
                  WHERE a.account_id = %(platform_account)s AND a.deleted_at IS NULL
                    AND a.email_normalized = b.email_normalized)

-- name: server_version
SELECT current_setting('server_version')

-- name: job_timeline
-- Epoch seconds of a job's milestones and its ledger. A chunk's `applied_at` is its transaction's now(),
-- i.e. when its apply began; it ended `duration_ms` later.
SELECT extract(epoch FROM j.created_at)::float8,
       extract(epoch FROM j.started_at)::float8,
       extract(epoch FROM j.finished_at)::float8,
       extract(epoch FROM min(c.applied_at))::float8,
       extract(epoch FROM max(c.applied_at + make_interval(secs => c.duration_ms / 1000.0)))::float8,
       extract(epoch FROM max(c.outcomes_shipped_at))::float8,
       coalesce(sum(c.duration_ms), 0)::float8 / 1000.0,
       count(c.chunk_no),
       avg(extract(epoch FROM c.applied_at - c.released_at))::float8
FROM bulk_actions AS j
LEFT JOIN bulk_action_chunks AS c ON c.job_id = j.id
WHERE j.id = %(job_id)s
GROUP BY j.id

-- name: unshipped_chunks
SELECT count(*) FROM bulk_action_chunks WHERE job_id = %(job_id)s AND outcomes_shipped_at IS NULL

-- name: ceiling_import_stage
CREATE TEMP TABLE ceiling_stage_import (
    email            text,
    email_normalized text COLLATE "C",
    first_name       text,
    last_name        text,
    phone            text,
    phone_e164       text COLLATE "C",
    company          text,
    job_title        text,
    tags             text[] COLLATE "C",
    custom_fields    jsonb
) ON COMMIT DROP

-- name: ceiling_import_copy
COPY ceiling_stage_import (email, email_normalized, first_name, last_name, phone, phone_e164, company,
                           job_title, tags, custom_fields) FROM STDIN (FORMAT BINARY)

-- name: ceiling_import
-- The upsert the platform's `on_duplicate=update` import makes, for rows already valid, normalised and
-- de-duplicated.
INSERT INTO contacts AS c (account_id, email, email_normalized, first_name, last_name, phone, phone_e164,
                           company, job_title, tags, custom_fields)
SELECT %(account_id)s, s.email, s.email_normalized, s.first_name, s.last_name, s.phone, s.phone_e164,
       s.company, s.job_title, coalesce(s.tags, '{}'), coalesce(s.custom_fields, '{}')
FROM ceiling_stage_import AS s
ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO UPDATE
SET first_name = coalesce(excluded.first_name, c.first_name),
    last_name = coalesce(excluded.last_name, c.last_name),
    phone = coalesce(excluded.phone, c.phone),
    phone_e164 = coalesce(excluded.phone_e164, c.phone_e164),
    company = coalesce(excluded.company, c.company),
    job_title = coalesce(excluded.job_title, c.job_title),
    tags = CASE WHEN cardinality(excluded.tags) > 0 THEN excluded.tags ELSE c.tags END,
    custom_fields = c.custom_fields || excluded.custom_fields,
    updated_at = now()

-- name: ceiling_id_stage
CREATE TEMP TABLE ceiling_stage_ids (id bigint NOT NULL) ON COMMIT DROP

-- name: ceiling_id_copy
COPY ceiling_stage_ids (id) FROM STDIN (FORMAT BINARY)

-- name: ceiling_set_company_ids
-- The stream's ids are one run of the sorted list: the id bounds let the plan read only that range.
UPDATE contacts AS c
SET company = %(value)s, updated_at = now()
FROM ceiling_stage_ids AS s
WHERE c.id = s.id AND c.id BETWEEN %(first_id)s AND %(last_id)s
  AND c.account_id = %(account_id)s AND c.deleted_at IS NULL
  AND c.company IS DISTINCT FROM %(value)s

-- name: ceiling_set_job_title
-- Positional: value, value, account_id, first id, last id, filter parameters.
UPDATE contacts
SET job_title = %s, updated_at = now()
WHERE job_title IS DISTINCT FROM %s
  AND account_id = %s AND deleted_at IS NULL AND id BETWEEN %s AND %s AND ({filter})

-- name: ceiling_add_tag
-- Positional: tag, tag, account_id, first id, last id, filter parameters. Tags stay a sorted set.
UPDATE contacts
SET tags = ARRAY(SELECT DISTINCT t.tag FROM unnest(tags || ARRAY[%s]::text[]) AS t (tag) ORDER BY t.tag),
    updated_at = now()
WHERE NOT (tags @> ARRAY[%s]::text[])
  AND account_id = %s AND deleted_at IS NULL AND id BETWEEN %s AND %s AND ({filter})

-- name: ceiling_delete
-- Positional: account_id, first id, last id, filter parameters.
UPDATE contacts
SET deleted_at = now(), updated_at = now()
WHERE account_id = %s AND deleted_at IS NULL AND id BETWEEN %s AND %s AND ({filter})

-- name: seed_count
-- Positional: account_id, filter parameters.
SELECT count(*) FROM contacts WHERE account_id = %s AND deleted_at IS NULL AND ({filter})

-- name: seed_page
-- Positional: account_id, filter parameters, limit, offset.
SELECT id FROM contacts
WHERE account_id = %s AND deleted_at IS NULL AND ({filter})
ORDER BY id
LIMIT %s OFFSET %s

-- name: seed_set_job_title
UPDATE contacts SET job_title = %(value)s, updated_at = now() WHERE id = %(id)s AND account_id = %(account_id)s

-- name: seed_set_company
UPDATE contacts SET company = %(value)s, updated_at = now() WHERE id = %(id)s AND account_id = %(account_id)s

-- name: seed_add_tag
UPDATE contacts
SET tags = ARRAY(SELECT DISTINCT t.tag FROM unnest(tags || ARRAY[%(value)s]::text[]) AS t (tag) ORDER BY t.tag),
    updated_at = now()
WHERE id = %(id)s AND account_id = %(account_id)s

-- name: seed_delete
UPDATE contacts SET deleted_at = now(), updated_at = now() WHERE id = %(id)s AND account_id = %(account_id)s

-- name: seed_undelete
-- Restores the rows a seed sample deleted (untimed), so the ceiling that follows meets the same data.
UPDATE contacts SET deleted_at = NULL WHERE account_id = %(account_id)s AND id = ANY(%(ids)s::bigint[])

-- name: seed_insert
INSERT INTO contacts AS c (account_id, email, email_normalized, first_name, last_name, phone, company,
                           job_title, tags, custom_fields)
VALUES (%(account_id)s, %(email)s, %(email_normalized)s, %(first_name)s, %(last_name)s, %(phone)s,
        %(company)s, %(job_title)s, %(tags)s::text[], %(custom_fields)s::jsonb)
ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO UPDATE
SET first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone,
    company = excluded.company, job_title = excluded.job_title, tags = excluded.tags,
    custom_fields = c.custom_fields || excluded.custom_fields, updated_at = now()
