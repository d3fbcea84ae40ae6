-- Single contacts through the API. Every statement is scoped by account and sees live (not deleted) rows only.
-- As bulk imports do, `email` and `phone` keep what the client sent and `email_normalized` / `phone_e164` the
-- normalised forms; reads answer with the normalised forms, whoever wrote the row.

-- name: insert_contact
INSERT INTO contacts (account_id, email, email_normalized, first_name, last_name, phone, phone_e164, company,
                      job_title, tags, custom_fields)
VALUES (%(account_id)s, %(email)s, %(email_normalized)s, %(first_name)s, %(last_name)s, %(phone)s, %(phone_e164)s,
        %(company)s, %(job_title)s, %(tags)s, %(custom_fields)s)
ON CONFLICT (account_id, email_normalized) WHERE deleted_at IS NULL DO NOTHING
RETURNING id, email_normalized AS email, first_name, last_name, phone_e164 AS phone, company, job_title, tags,
       custom_fields, created_at, updated_at;

-- name: live_id_by_email
-- The account check is opaque to index matching so the email index is the only candidate (see contacts.sql).
SELECT id FROM contacts
WHERE email_normalized = %(email_normalized)s AND deleted_at IS NULL AND coalesce(account_id = %(account_id)s, false);

-- name: get_contact
SELECT id, email_normalized AS email, first_name, last_name, phone_e164 AS phone, company, job_title, tags,
       custom_fields, created_at, updated_at
FROM contacts
WHERE account_id = %(account_id)s AND id = %(id)s AND deleted_at IS NULL;

-- name: lock_contact
-- The raw email and phone, so that a PATCH of other fields keeps them as the client sent them.
SELECT id, email, first_name, last_name, phone, company, job_title, tags, custom_fields, created_at, updated_at
FROM contacts
WHERE account_id = %(account_id)s AND id = %(id)s AND deleted_at IS NULL
FOR UPDATE;

-- name: replace_contact
UPDATE contacts
SET email = %(email)s, email_normalized = %(email_normalized)s, first_name = %(first_name)s,
    last_name = %(last_name)s, phone = %(phone)s, phone_e164 = %(phone_e164)s, company = %(company)s,
    job_title = %(job_title)s,
    tags = %(tags)s, custom_fields = %(custom_fields)s, updated_at = now()
WHERE account_id = %(account_id)s AND id = %(id)s AND deleted_at IS NULL
RETURNING id, email_normalized AS email, first_name, last_name, phone_e164 AS phone, company, job_title, tags,
       custom_fields, created_at, updated_at;

-- name: delete_contact
UPDATE contacts SET deleted_at = now(), updated_at = now()
WHERE account_id = %(account_id)s AND id = %(id)s AND deleted_at IS NULL
RETURNING id;

-- name: list_contacts
-- Keyset page in id order. The placeholder in braces takes the compiled filter language (bound parameters
-- only), so the statement takes positional parameters: account, after id, the filter's, limit.
SELECT id, email_normalized AS email, first_name, last_name, phone_e164 AS phone, company, job_title, tags,
       custom_fields, created_at, updated_at
FROM contacts
WHERE account_id = %s AND deleted_at IS NULL AND id > %s AND ({filter})
ORDER BY id
LIMIT %s;
