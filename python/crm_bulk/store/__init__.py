"""Storage backends: PostgreSQL (entities, jobs, ledger, queue) and ClickHouse (entity log)."""
