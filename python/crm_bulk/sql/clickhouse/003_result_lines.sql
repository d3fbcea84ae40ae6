-- Result files by input line (see sql/postgres/012_result_lines.sql): `line` is the 1-based number of the
-- input record (import) or target entity (other actions) the outcome belongs to, `input` the import record
-- as it was sent, before normalisation, as JSON text (empty for other actions). Both are set by the
-- shipper from the chunk's ledger row; rows shipped before this migration read 0 and ''.
ALTER TABLE entity_outcomes ADD COLUMN IF NOT EXISTS line UInt64 DEFAULT 0 AFTER row_no;
ALTER TABLE entity_outcomes ADD COLUMN IF NOT EXISTS input String DEFAULT '' CODEC(ZSTD(3));
