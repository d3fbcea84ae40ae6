-- Set-based chunk statements over contacts: one statement per chunk and action, fed by a temp staging table.
--
-- Shape of the id actions (update, add_tags, remove_tags): `cur` reads each staged contact once (old values,
-- for no_change and changed_fields), `upd` rewrites only rows that change (so unchanged rows stay untouched),
-- and the outer SELECT gives every found contact its code. Staged ids missing from the result were not live
-- in the account: the engine reports them `not_found`. Results are read with COPY … TO STDOUT (CSV) into
-- Polars, so no Python object is made per row.
--
-- Plans must stay per-row index lookups whatever the statistics say. A table that just grew by a million
-- rows still looks empty to the planner until autoanalyze runs; it then rates the partial unique email index
-- (deleted_at IS NULL) as tiny and happily scans an account's whole range of it per chunk, or per row.
-- So contacts are only reached by a LATERAL lookup with LIMIT 1 (a parameterised index scan) or by
-- `id = ANY(ARRAY(…))`, and the account check is wrapped in coalesce(): opaque to index matching (and, for a
-- lookup by id, to partial-index implication), it stays a filter on the primary-key or email lookup. Were the
-- account a usable condition, statistics that predate the account (its first import) would rate it at one
-- row and the (account_id, id) index would scan the account's whole range per looked-up row.
-- tests/integration/test_apply_plans.py checks these plans on a table without statistics.
--
-- changed-field bits (crm_bulk.apply.engine.CHANGE_BITS): email 1, phone 2, first_name 4, last_name 8,
-- company 16, job_title 32, custom_fields 64, tags 128, deleted_at 256.

-- name: create_id_stage
CREATE TEMP TABLE IF NOT EXISTS chunk_stage_ids (id bigint NOT NULL) ON COMMIT DELETE ROWS

-- name: clear_id_stage
-- Normally empty already (ON COMMIT DELETE ROWS); not when the caller nests the chunk in its transaction.
DELETE FROM chunk_stage_ids

-- name: copy_id_stage
COPY chunk_stage_ids (id) FROM STDIN (FORMAT BINARY)

-- name: create_import_stage
CREATE TEMP TABLE IF NOT EXISTS chunk_stage_import (
    row_no           integer NOT NULL,
    email            text    NOT NULL,
    email_normalized text    COLLATE "C" NOT NULL,
    first_name       text,
    last_name        text,
    phone            text,
    phone_e164       text    COLLATE "C",
    company          text,
    job_title        text,
    tags             text[]  COLLATE "C",
    custom_fields    jsonb
) ON COMMIT DELETE ROWS

-- name: clear_import_stage
DELETE FROM chunk_stage_import

-- name: copy_import_stage
COPY chunk_stage_import (row_no, email, email_normalized, first_name, last_name, phone, phone_e164, company,
                         job_title, tags, custom_fields) FROM STDIN (FORMAT CSV)

-- name: update_chunk
-- Every contact gets the same changes; `touch_*` says which fields the request writes. A new email may be
-- taken by one contact only: by none when another live contact of the account holds it, else by the
-- lowest staged id; the others are skipped duplicate_email (a unique violation never aborts the chunk).
WITH cur AS (
    SELECT c.id, c.email,
           CASE WHEN %(touch_email)s AND (c.email IS DISTINCT FROM %(email)s
                                          OR c.email_normalized IS DISTINCT FROM %(email_normalized)s)
                THEN 1 ELSE 0 END
         + CASE WHEN %(touch_phone)s AND (c.phone IS DISTINCT FROM %(phone)s
                                          OR c.phone_e164 IS DISTINCT FROM %(phone_e164)s)
                THEN 2 ELSE 0 END
         + CASE WHEN %(touch_first_name)s AND c.first_name IS DISTINCT FROM %(first_name)s THEN 4 ELSE 0 END
         + CASE WHEN %(touch_last_name)s AND c.last_name IS DISTINCT FROM %(last_name)s THEN 8 ELSE 0 END
         + CASE WHEN %(touch_company)s AND c.company IS DISTINCT FROM %(company)s THEN 16 ELSE 0 END
         + CASE WHEN %(touch_job_title)s AND c.job_title IS DISTINCT FROM %(job_title)s THEN 32 ELSE 0 END
         + CASE WHEN %(touch_custom_fields)s
                     AND (c.custom_fields || %(cf_merge)s::jsonb) - %(cf_remove)s::text[] <> c.custom_fields
                THEN 64 ELSE 0 END AS mask,
           %(touch_email)s AND c.email_normalized IS DISTINCT FROM %(email_normalized)s AS moves_email
    FROM chunk_stage_ids AS s
    CROSS JOIN LATERAL (
        SELECT x.* FROM contacts AS x
        WHERE x.id = s.id AND coalesce(x.account_id = %(account_id)s AND x.deleted_at IS NULL, false)
        LIMIT 1
    ) AS c
),
decided AS (
    SELECT cur.id, cur.email, cur.mask,
           CASE WHEN cur.moves_email AND cur.mask <> 0
                THEN cur.id <> (SELECT min(m.id) FROM cur AS m WHERE m.moves_email AND m.mask <> 0)
                     OR EXISTS (SELECT 1 FROM contacts AS o
                                WHERE o.email_normalized = %(email_normalized)s AND o.deleted_at IS NULL
                                  AND coalesce(o.account_id = %(account_id)s, false) AND o.id <> cur.id)
                ELSE false END AS duplicate
    FROM cur
),
upd AS (
    UPDATE contacts AS c
    SET email = CASE WHEN %(touch_email)s THEN %(email)s ELSE c.email END,
        email_normalized = CASE WHEN %(touch_email)s THEN %(email_normalized)s ELSE c.email_normalized END,
        phone = CASE WHEN %(touch_phone)s THEN %(phone)s ELSE c.phone END,
        phone_e164 = CASE WHEN %(touch_phone)s THEN %(phone_e164)s ELSE c.phone_e164 END,
        first_name = CASE WHEN %(touch_first_name)s THEN %(first_name)s ELSE c.first_name END,
        last_name = CASE WHEN %(touch_last_name)s THEN %(last_name)s ELSE c.last_name END,
        company = CASE WHEN %(touch_company)s THEN %(company)s ELSE c.company END,
        job_title = CASE WHEN %(touch_job_title)s THEN %(job_title)s ELSE c.job_title END,
        custom_fields = CASE WHEN %(touch_custom_fields)s
                             THEN (c.custom_fields || %(cf_merge)s::jsonb) - %(cf_remove)s::text[]
                             ELSE c.custom_fields END,
        updated_at = now()
    WHERE c.id = ANY (ARRAY(SELECT d.id FROM decided AS d WHERE d.mask <> 0 AND NOT d.duplicate))
      -- Re-checked on the row version the update finally locks (a concurrent soft delete wins).
      AND coalesce(c.account_id = %(account_id)s AND c.deleted_at IS NULL, false)
    RETURNING c.id, c.email
)
SELECT d.id, coalesce(u.email, d.email) AS email,
       CASE WHEN u.id IS NOT NULL THEN 'succeeded'
            WHEN d.duplicate THEN 'duplicate_email'
            WHEN d.mask = 0 THEN 'no_change'
            ELSE 'not_found' END AS code,
       d.mask
FROM decided AS d
LEFT JOIN upd AS u ON u.id = d.id

-- name: delete_chunk
-- Soft delete; an id already deleted, unknown, or in another account is not returned (not_found).
UPDATE contacts AS c
SET deleted_at = now(), updated_at = now()
WHERE c.id = ANY (ARRAY(SELECT s.id FROM chunk_stage_ids AS s))
  AND coalesce(c.account_id = %(account_id)s AND c.deleted_at IS NULL, false)
RETURNING c.id, c.email, 'succeeded' AS code, 256 AS mask

-- name: add_tags_chunk
-- Tags are a sorted (byte order), duplicate-free set; a contact already holding every tag is no_change.
WITH cur AS (
    SELECT c.id, c.email, NOT (c.tags @> %(tags)s::text[]) AS changes
    FROM chunk_stage_ids AS s
    CROSS JOIN LATERAL (
        SELECT x.id, x.email, x.tags FROM contacts AS x
        WHERE x.id = s.id AND coalesce(x.account_id = %(account_id)s AND x.deleted_at IS NULL, false)
        LIMIT 1
    ) AS c
),
upd AS (
    UPDATE contacts AS c
    SET tags = ARRAY(SELECT DISTINCT t.tag FROM unnest(c.tags || %(tags)s::text[]) AS t (tag) ORDER BY t.tag),
        updated_at = now()
    WHERE c.id = ANY (ARRAY(SELECT cur.id FROM cur WHERE cur.changes))
      AND coalesce(c.account_id = %(account_id)s AND c.deleted_at IS NULL, false)
    RETURNING c.id, c.email
)
SELECT cur.id, coalesce(u.email, cur.email) AS email,
       CASE WHEN u.id IS NOT NULL THEN 'succeeded' WHEN cur.changes THEN 'not_found' ELSE 'no_change' END AS code,
       CASE WHEN u.id IS NOT NULL THEN 128 ELSE 0 END AS mask
FROM cur
LEFT JOIN upd AS u ON u.id = cur.id

-- name: remove_tags_chunk
-- A contact holding none of the tags is no_change.
WITH cur AS (
    SELECT c.id, c.email, c.tags && %(tags)s::text[] AS changes
    FROM chunk_stage_ids AS s
    CROSS JOIN LATERAL (
        SELECT x.id, x.email, x.tags FROM contacts AS x
        WHERE x.id = s.id AND coalesce(x.account_id = %(account_id)s AND x.deleted_at IS NULL, false)
        LIMIT 1
    ) AS c
),
upd AS (
    UPDATE contacts AS c
    SET tags = ARRAY(SELECT DISTINCT t.tag FROM unnest(c.tags) AS t (tag)
                     WHERE t.tag <> ALL (%(tags)s::text[]) ORDER BY t.tag),
        updated_at = now()
    WHERE c.id = ANY (ARRAY(SELECT cur.id FROM cur WHERE cur.changes))
      AND coalesce(c.account_id = %(account_id)s AND c.deleted_at IS NULL, false)
    RETURNING c.id, c.email
)
SELECT cur.id, coalesce(u.email, cur.email) AS email,
       CASE WHEN u.id IS NOT NULL THEN 'succeeded' WHEN cur.changes THEN 'not_found' ELSE 'no_change' END AS code,
       CASE WHEN u.id IS NOT NULL THEN 128 ELSE 0 END AS mask
FROM cur
LEFT JOIN upd AS u ON u.id = cur.id

-- name: import_chunk_skip
-- Insert new emails; an existing live contact is duplicate_email, or duplicate_in_input when an earlier
-- chunk of this same job wrote it (last_import_job). Rows are inserted in email order, so two chunks
-- meeting the same emails wait on each other in one order instead of deadlocking.
WITH ins AS (
    INSERT INTO contacts AS c (account_id, email, email_normalized, first_name, last_name, phone, phone_e164,
                               company, job_title, tags, custom_fields, last_import_job)
    SELECT %(account_id)s, s.email, s.email_normalized, s.first_name, s.last_name, s.phone, s.phone_e164,
           s.company, s.job_title, coalesce(s.tags, '{}'), coalesce(s.custom_fields, '{}'), %(job_id)s::uuid
    FROM chunk_stage_import AS s
    ORDER BY s.email_normalized
    ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO NOTHING
    RETURNING c.id, c.email_normalized
)
SELECT s.row_no, coalesce(ins.id, e.id) AS entity_id,
       CASE WHEN ins.id IS NOT NULL THEN 'succeeded'
            WHEN e.last_import_job = %(job_id)s::uuid THEN 'duplicate_in_input'
            WHEN e.id IS NOT NULL THEN 'duplicate_email' END AS code,
       0 AS mask
FROM chunk_stage_import AS s
LEFT JOIN ins ON ins.email_normalized = s.email_normalized
-- Only rows that were not inserted look for the existing contact (statement snapshot: the old row).
LEFT JOIN LATERAL (
    SELECT x.id, x.last_import_job
    FROM contacts AS x
    WHERE ins.id IS NULL
      AND x.email_normalized = s.email_normalized AND x.deleted_at IS NULL
      AND coalesce(x.account_id = %(account_id)s, false)
    LIMIT 1
) AS e ON true

-- name: import_chunk_update
-- Insert new emails; merge the provided (non-null) fields into an existing live contact: scalars replace,
-- a non-empty tags set replaces, custom_fields merge (jsonb ||). Identical rows are not rewritten
-- (no_change); a row an earlier chunk of this job wrote is duplicate_in_input.
WITH ins AS (
    INSERT INTO contacts AS c (account_id, email, email_normalized, first_name, last_name, phone, phone_e164,
                               company, job_title, tags, custom_fields, last_import_job)
    SELECT %(account_id)s, s.email, s.email_normalized, s.first_name, s.last_name, s.phone, s.phone_e164,
           s.company, s.job_title, coalesce(s.tags, '{}'), coalesce(s.custom_fields, '{}'), %(job_id)s::uuid
    FROM chunk_stage_import AS s
    ORDER BY s.email_normalized
    ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO UPDATE
    SET first_name = coalesce(excluded.first_name, c.first_name),
        last_name = coalesce(excluded.last_name, c.last_name),
        phone = coalesce(excluded.phone, c.phone),
        phone_e164 = CASE WHEN excluded.phone IS NULL THEN c.phone_e164 ELSE excluded.phone_e164 END,
        company = coalesce(excluded.company, c.company),
        job_title = coalesce(excluded.job_title, c.job_title),
        tags = CASE WHEN cardinality(excluded.tags) > 0 THEN excluded.tags ELSE c.tags END,
        custom_fields = c.custom_fields || excluded.custom_fields,
        last_import_job = excluded.last_import_job,
        updated_at = now()
    WHERE c.last_import_job IS DISTINCT FROM excluded.last_import_job
      AND ((excluded.phone IS NOT NULL AND (excluded.phone IS DISTINCT FROM c.phone
                                           OR excluded.phone_e164 IS DISTINCT FROM c.phone_e164))
           OR (excluded.first_name IS NOT NULL AND excluded.first_name IS DISTINCT FROM c.first_name)
           OR (excluded.last_name IS NOT NULL AND excluded.last_name IS DISTINCT FROM c.last_name)
           OR (excluded.company IS NOT NULL AND excluded.company IS DISTINCT FROM c.company)
           OR (excluded.job_title IS NOT NULL AND excluded.job_title IS DISTINCT FROM c.job_title)
           OR (cardinality(excluded.tags) > 0 AND excluded.tags IS DISTINCT FROM c.tags)
           OR (c.custom_fields || excluded.custom_fields) <> c.custom_fields)
    -- old.* is the row before this statement's update (NULL for an inserted row): an updated row's changed
    -- fields come from it, with no second lookup.
    RETURNING c.id, c.email_normalized,
        CASE WHEN old.id IS NULL THEN 0 ELSE
            CASE WHEN old.phone IS DISTINCT FROM c.phone OR old.phone_e164 IS DISTINCT FROM c.phone_e164
                 THEN 2 ELSE 0 END
          + CASE WHEN old.first_name IS DISTINCT FROM c.first_name THEN 4 ELSE 0 END
          + CASE WHEN old.last_name IS DISTINCT FROM c.last_name THEN 8 ELSE 0 END
          + CASE WHEN old.company IS DISTINCT FROM c.company THEN 16 ELSE 0 END
          + CASE WHEN old.job_title IS DISTINCT FROM c.job_title THEN 32 ELSE 0 END
          + CASE WHEN old.custom_fields <> c.custom_fields THEN 64 ELSE 0 END
          + CASE WHEN old.tags IS DISTINCT FROM c.tags THEN 128 ELSE 0 END
        END AS mask
)
SELECT s.row_no, coalesce(ins.id, e.id) AS entity_id,
       CASE WHEN ins.id IS NOT NULL THEN 'succeeded'
            WHEN e.last_import_job = %(job_id)s::uuid THEN 'duplicate_in_input'
            WHEN e.id IS NOT NULL THEN 'no_change' END AS code,
       coalesce(ins.mask, 0) AS mask
FROM chunk_stage_import AS s
LEFT JOIN ins ON ins.email_normalized = s.email_normalized
-- Only rows neither inserted nor updated look for the existing contact (statement snapshot: the old row).
LEFT JOIN LATERAL (
    SELECT x.id, x.last_import_job
    FROM contacts AS x
    WHERE ins.id IS NULL
      AND x.email_normalized = s.email_normalized AND x.deleted_at IS NULL
      AND coalesce(x.account_id = %(account_id)s, false)
    LIMIT 1
) AS e ON true

-- name: import_lookup
-- Rows the import statement could not place: the conflicting contact was committed by another transaction
-- after the statement's snapshot. A new statement sees it.
-- `own` is 0/1, not boolean: the result comes back as CSV, where PostgreSQL writes booleans as t/f.
SELECT s.row_no, c.id, (c.last_import_job IS NOT DISTINCT FROM %(job_id)s::uuid)::int AS own
FROM chunk_stage_import AS s
CROSS JOIN LATERAL (
    SELECT x.id, x.last_import_job FROM contacts AS x
    WHERE x.email_normalized = s.email_normalized AND x.deleted_at IS NULL
      AND coalesce(x.account_id = %(account_id)s, false)
    LIMIT 1
) AS c
WHERE s.row_no = ANY (%(row_nos)s::integer[])
