-- Contacts: the entities bulk actions change. Deletes are soft (deleted_at), so ids stay stable for the log.
--
-- fillfactor 85, chosen with the fillfactor sweep of benchmarks/bench_apply.py: the free 15% of each page
-- keeps updates of unindexed columns (names, job title, updated_at) HOT, i.e. without index writes, for
-- bulk updates of scattered rows (a filter's matches), at about 17% more table than fillfactor 100.
CREATE TABLE contacts (
    id               bigint      GENERATED ALWAYS AS IDENTITY (CACHE 64) PRIMARY KEY,
    account_id       bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email            text        NOT NULL,
    -- "C" collation: byte order, so prefix filters (^@) can use the btree on any database locale.
    email_normalized text        COLLATE "C" NOT NULL,
    first_name       text,
    last_name        text,
    phone            text,
    phone_e164       text        COLLATE "C",
    company          text,
    job_title        text,
    -- A sorted (byte order), duplicate-free set: every writer keeps it that way, so equal sets compare equal.
    tags             text[]      COLLATE "C" NOT NULL DEFAULT '{}',
    custom_fields    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    -- The import job that last wrote the row: a later chunk of the same job meeting the email knows the row
    -- came from its own input (duplicate_in_input) rather than from before the job (duplicate_email).
    last_import_job  uuid
) WITH (fillfactor = 85);

-- One live contact per normalised email and account; soft-deleted rows free their email.
CREATE UNIQUE INDEX contacts_live_email_key ON contacts (account_id, email_normalized) WHERE deleted_at IS NULL;

-- Keyset pagination over an account's contacts (planner snapshots, `all` targets, listing).
-- Deliberately not partial on deleted_at: with no statistics yet (a table that just grew), the planner rates
-- every `deleted_at IS NULL` partial index as holding 0.5% of the rows, and an (account_id, …) index then ties
-- with the unique email index for an email lookup: measured, it picked this kind of index and scanned the whole
-- account per looked-up row. Full indexes keep the unique index the clear choice.
CREATE INDEX contacts_account_id_idx ON contacts (account_id, id);

-- Filter language: company (eq/in/starts_with, id order within one company for keyset pages), phone lookups,
-- tags `contains`/`in` (array containment / overlap), custom_fields.<key> `eq` (jsonb containment).
CREATE INDEX contacts_company_idx ON contacts (account_id, company, id);
CREATE INDEX contacts_phone_idx ON contacts (account_id, phone_e164) WHERE deleted_at IS NULL AND phone_e164 IS NOT NULL;
CREATE INDEX contacts_tags_idx ON contacts USING gin (tags);
CREATE INDEX contacts_custom_fields_idx ON contacts USING gin (custom_fields jsonb_path_ops);
-- created_at follows insertion (id) order, so a BRIN range index is tiny and, being summarizing, does not
-- stop updates from being HOT (PostgreSQL >= 16). updated_at is deliberately left unindexed for the same reason.
CREATE INDEX contacts_created_at_brin ON contacts USING brin (created_at);
