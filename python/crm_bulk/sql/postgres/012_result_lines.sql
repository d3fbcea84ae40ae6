-- Result files by input line: each chunk's first line, so the log shipper can give every entity outcome the
-- line of the input record it came from (`first_line + row_no`, row_no being its position in the chunk).
--
-- A line is the record's 1-based number in the job's input: for an import, among the data records of the
-- file (a CSV's header row is not one; a record whose quoted field holds line breaks is one) or of the
-- inline `records` list; for other actions, among the target's snapshot of ids, in chunk order. The planner
-- sets it when it writes the chunks, from the records (or ids) written before them. Chunks planned before
-- this column existed have none; the shipper then counts the entities of the chunks before them.
ALTER TABLE bulk_action_chunks ADD COLUMN first_line bigint CHECK (first_line >= 1);

-- A retry of an import keeps the lines of the records it retries: a chunk whose rows are not consecutive
-- lines of its own job's input holds them here, one big-endian int64 per row (the shipper then reads the
-- line of row n from it instead of `first_line + n`), so a retry's results name the lines of the file the
-- records first came from, and a retry of a retry corrects records by those same lines.
ALTER TABLE bulk_action_chunks ADD COLUMN lines bytea;
