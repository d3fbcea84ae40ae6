-- The apply-engine benchmark's own statements (benchmarks/bench_apply.py): throw-away databases, their
-- preparation, table statistics and the COPY format comparison. The ceiling and the seed algorithm use the
-- package's bench queries (crm_bulk/sql/postgres/queries/bench.sql).
--
-- Placeholders in braces are database names (psycopg.sql.Identifier) or a storage parameter's value
-- (psycopg.sql.Literal), composed in because DDL takes no bind parameters.

-- name: create_database
CREATE DATABASE {name}

-- name: clone_database
-- FILE_COPY: a copy of the template's files, quick for a large template and without WAL for every page.
CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY

-- name: drop_database
DROP DATABASE IF EXISTS {name} WITH (FORCE)

-- name: checkpoint
CHECKPOINT

-- name: set_contacts_fillfactor
ALTER TABLE contacts SET (fillfactor = {fillfactor})

-- name: freeze_and_analyze
VACUUM (FREEZE, ANALYZE)

-- name: clear_statistics_snapshot
SELECT pg_stat_clear_snapshot()

-- name: contacts_statistics
SELECT n_tup_upd, n_tup_hot_upd, pg_table_size('contacts'), pg_indexes_size('contacts')
FROM pg_stat_user_tables
WHERE relname = 'contacts'

-- name: copy_import_stage_binary
-- The platform's import staging table (created by the contacts queries), every column in table order.
COPY chunk_stage_import FROM STDIN (FORMAT BINARY)
