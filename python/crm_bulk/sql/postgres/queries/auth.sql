-- Registration, login and the per-request principal lookup.

-- name: insert_account
INSERT INTO accounts (name) VALUES (%(name)s) RETURNING id;

-- name: insert_user
-- The unique index is on lower(email): a second spelling of a known address inserts nothing.
INSERT INTO users (email, password_hash) VALUES (%(email)s, %(password_hash)s)
ON CONFLICT (lower(email)) DO NOTHING
RETURNING id;

-- name: insert_membership
INSERT INTO memberships (user_id, account_id, role) VALUES (%(user_id)s, %(account_id)s, %(role)s)
RETURNING created_at;

-- name: login_candidate
-- A user belongs to one account; the oldest membership decides if that ever changes.
SELECT u.id, u.password_hash, m.account_id
FROM users u
JOIN memberships m ON m.user_id = u.id
WHERE lower(u.email) = lower(%(email)s)
ORDER BY m.created_at
LIMIT 1;

-- name: update_password_hash
UPDATE users SET password_hash = %(password_hash)s WHERE id = %(user_id)s;

-- name: principal
-- Runs on every authenticated request: the role and limits in force now, so a removed member or a changed
-- role takes effect at once rather than when the token expires.
SELECT m.role, a.api_requests_per_minute, a.entities_per_second
FROM memberships m
JOIN accounts a ON a.id = m.account_id
WHERE m.user_id = %(user_id)s AND m.account_id = %(account_id)s;
