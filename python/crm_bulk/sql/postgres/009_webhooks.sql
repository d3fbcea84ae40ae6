-- Completion webhooks: an account's endpoints, and one delivery row per (event, endpoint), written in the
-- transaction that starts or ends the job, so an event is never lost and never announced twice.
CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    events      text[]      NOT NULL CHECK (cardinality(events) > 0),
    enabled     boolean     NOT NULL DEFAULT true,
    -- The signing secret sealed with AES-256-GCM (nonce || ciphertext, the endpoint id as associated
    -- data): it must be recoverable to sign, and a database dump alone does not reveal it.
    secret_sealed bytea     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_account_idx ON webhook_endpoints (account_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    account_id      bigint      NOT NULL,
    -- The `webhook-id` header: derived from (job, event), the same on every attempt and every endpoint.
    event_id        text        NOT NULL,
    event           text        NOT NULL,
    job_id          uuid        NOT NULL,
    -- The exact body signed and sent, fixed when the event happened.
    payload         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Attempts made before the last redelivery: the retry schedule restarts from there.
    round_start     integer     NOT NULL DEFAULT 0,
    -- When pending: the next attempt, or while an attempt is in flight, when its claim lapses.
    next_attempt_at timestamptz NULL DEFAULT now(),
    claim           uuid        NULL,
    last_attempt_at timestamptz NULL,
    last_status_code integer    NULL,
    last_error      text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (endpoint_id, id);
