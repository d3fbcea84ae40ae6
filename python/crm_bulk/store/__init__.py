"""PostgreSQL storage: the migrations of the entities, jobs, ledger and queue tables (the entity log in
ClickHouse lives in `crm_bulk.entitylog`)."""
