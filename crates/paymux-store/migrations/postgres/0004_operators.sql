-- The admin page (issue 17): operators, their sessions and what they did. The same as
-- migrations/sqlite/0008_operators.sql.

-- Operator tokens are stored as SHA-256 hashes, like API keys; the token is shown once.
CREATE TABLE operator_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A signed-in session, by the SHA-256 of its cookie; it is not found after `expires_at`.
CREATE TABLE admin_sessions (
    id_hash     TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES operator_tokens(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

-- What an operator did to a payment (sync, close, redeliver one of its events) and how it went:
-- kept apart from the events, which are the merchant's outbox and go out as webhooks.
CREATE TABLE operator_actions (
    id          TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES operator_tokens(id),
    action      TEXT NOT NULL,
    payment_id  TEXT NOT NULL REFERENCES payments(id),
    target      TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX operator_actions_payment ON operator_actions (payment_id, at);

-- The payment a notification was about, once processing found it (WeChat's bodies are
-- encrypted: the raw row alone does not say).
ALTER TABLE inbound_notifications ADD COLUMN payment_id TEXT;
CREATE INDEX inbound_payment ON inbound_notifications (payment_id);

-- The admin page lists every merchant's payments by time and counts them by creation time.
CREATE INDEX payments_created ON payments (created_at);
CREATE INDEX events_object ON events (object_id);
