-- Bookkeeping of sql/clickhouse/NNN_name.sql files applied to this database.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version

-- name: applied_versions
SELECT DISTINCT version FROM schema_migrations ORDER BY version

-- name: record_version
-- INSERT … SELECT: query parameters are substituted there on every ClickHouse version, unlike in VALUES.
INSERT INTO schema_migrations (version, name) SELECT {version:UInt32}, {name:String}
