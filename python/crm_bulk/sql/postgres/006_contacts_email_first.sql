-- The live-email unique index leads with the email, so an email lookup has an index that no other index can
-- stand in for.
--
-- With (account_id, email_normalized), every lookup's best condition was the account, which the (account_id,
-- id) index serves too. When statistics predate an account's rows (a new customer's first big import), the
-- planner rates that account at about one row, the two indexes tie, and it picked the smaller one: a scan of
-- the account's whole range per looked-up email (measured: 22 s for a 5,000-row import chunk against 50k rows).
-- Lookups now match the email as the index condition and check the account as an opaque filter, so the only
-- usable index is this one, whatever the statistics say (tests/integration/test_apply_plans.py).
-- ON CONFLICT (account_id, email_normalized) still infers it: arbiter inference ignores column order.
-- Prefix filters on email now range over all accounts' matching emails, with the account checked in the index.
DROP INDEX contacts_live_email_key;
CREATE UNIQUE INDEX contacts_live_email_key ON contacts (email_normalized, account_id) WHERE deleted_at IS NULL;
