-- The column mapping a file import used: header → contact field, `custom_fields.<key>`, or "" for a column
-- left out. Null for jobs without a header row (JSON requests, NDJSON uploads, every other action).
ALTER TABLE bulk_actions ADD COLUMN mapping_used jsonb;
