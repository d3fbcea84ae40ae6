-- The caller's account, its limits and its members. Every statement is scoped by account_id.

-- name: get_account
SELECT id, name, api_requests_per_minute, entities_per_second, created_at
FROM accounts
WHERE id = %(account_id)s;

-- name: lock_account
-- Serialises member changes of one account, so two admins cannot demote each other to no admin at all.
SELECT id FROM accounts WHERE id = %(account_id)s FOR UPDATE;

-- name: update_limits
UPDATE accounts
SET api_requests_per_minute = coalesce(%(api_requests_per_minute)s, api_requests_per_minute),
    entities_per_second = coalesce(%(entities_per_second)s, entities_per_second)
WHERE id = %(account_id)s
RETURNING id, name, api_requests_per_minute, entities_per_second, created_at;

-- name: list_members
SELECT u.id, u.email, m.role, m.created_at
FROM memberships m
JOIN users u ON u.id = m.user_id
WHERE m.account_id = %(account_id)s
ORDER BY u.id;

-- name: get_member
SELECT u.id, u.email, m.role, m.created_at
FROM memberships m
JOIN users u ON u.id = m.user_id
WHERE m.account_id = %(account_id)s AND m.user_id = %(user_id)s;

-- name: count_admins
SELECT count(*) FROM memberships WHERE account_id = %(account_id)s AND role = 'admin';

-- name: update_member_role
UPDATE memberships SET role = %(role)s
WHERE account_id = %(account_id)s AND user_id = %(user_id)s
RETURNING user_id;

-- name: delete_membership
DELETE FROM memberships
WHERE account_id = %(account_id)s AND user_id = %(user_id)s
RETURNING user_id;

-- name: delete_user_without_memberships
-- A user belongs to one account; once that membership is gone the login goes with it.
DELETE FROM users u
WHERE u.id = %(user_id)s AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id);
