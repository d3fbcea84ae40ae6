-- Tenancy: accounts, the users who log in, and which role a user holds in which account.
CREATE TABLE accounts (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    api_requests_per_minute integer     NOT NULL DEFAULT 600 CHECK (api_requests_per_minute > 0),
    entities_per_second     integer     NOT NULL DEFAULT 50000 CHECK (entities_per_second > 0),
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are compared case-insensitively; the application stores them lower-cased.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);
