-- The schema of migrations/sqlite/0001..0005 as it stands after them, for PostgreSQL: the same
-- tables, columns, constraints and indexes. A later change is a migration in both directories.
--
-- The dialect differences, all of them (src/postgres/mod.rs says the same for the queries):
-- * SQLite's INTEGER is 64-bit: every integer column is BIGINT here (times are unix
--   milliseconds, amounts integer fen, as in SQLite).
-- * BLOB is BYTEA.
-- * Events are paged in commit order. SQLite has one writer, so its implicit rowid is that
--   order; here an identity column `seq` stands in for it, and the writer of a merchant's events
--   holds a transaction-scoped advisory lock on that merchant, so `seq` order is commit order
--   within a merchant (the only order events are paged in).
-- * SQLite 0004's data fix-up of rows made before live and test were apart has nothing to fix
--   in a new PostgreSQL database and is left out.

CREATE TABLE merchants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- API keys are stored as SHA-256 hashes; the plaintext is shown once, when created.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    prefix      TEXT NOT NULL,
    livemode    BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE channel_accounts (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    channel     TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    livemode    BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX channel_accounts_merchant ON channel_accounts (merchant_id, channel);

CREATE TABLE payments (
    id                TEXT PRIMARY KEY,
    merchant_id       TEXT NOT NULL REFERENCES merchants(id),
    merchant_order_no TEXT NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL,
    subject           TEXT NOT NULL,
    status            TEXT NOT NULL,
    channel           TEXT NOT NULL,
    method            TEXT NOT NULL,
    account_id        TEXT NOT NULL REFERENCES channel_accounts(id),
    channel_order_no  TEXT NOT NULL,
    channel_trade_no  TEXT,
    action            TEXT,
    -- Succeeded refunds.
    amount_refunded   BIGINT NOT NULL DEFAULT 0,
    -- Every refund that has not failed (pending or succeeded): reserved before the channel call.
    amount_reserved   BIGINT NOT NULL DEFAULT 0 CHECK (amount_reserved <= amount),
    failure_code      TEXT,
    failure_message   TEXT,
    client_ip         TEXT,
    return_url        TEXT,
    payer             TEXT,
    metadata          TEXT NOT NULL,
    expires_at        BIGINT NOT NULL,
    paid_at           BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    -- When the sweeper looks at it next (or the end of a sweeper's lease on it); NULL once there
    -- is nothing more to learn.
    next_check_at     BIGINT,
    check_count       BIGINT NOT NULL DEFAULT 0,
    -- What the channel refunded beyond the amount (a refund held as failed that succeeded after
    -- all): `amount_reserved + amount_over_reserved` is always the non-failed refunds.
    amount_over_reserved BIGINT NOT NULL DEFAULT 0,
    livemode          BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (merchant_id, merchant_order_no)
);
CREATE INDEX payments_merchant ON payments (merchant_id, id);
CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;

-- One try at one channel.
CREATE TABLE attempts (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments(id),
    account_id       TEXT NOT NULL REFERENCES channel_accounts(id),
    channel          TEXT NOT NULL,
    channel_order_no TEXT NOT NULL,
    channel_data     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (account_id, channel_order_no)
);
CREATE INDEX attempts_payment ON attempts (payment_id);

CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants(id),
    payment_id         TEXT NOT NULL REFERENCES payments(id),
    merchant_refund_no TEXT NOT NULL,
    channel_refund_no  TEXT NOT NULL UNIQUE,
    amount             BIGINT NOT NULL CHECK (amount > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,
    reason             TEXT,
    channel_refund_id  TEXT,
    failure_code       TEXT,
    failure_message    TEXT,
    created_at         BIGINT NOT NULL,
    succeeded_at       BIGINT,
    updated_at         BIGINT NOT NULL,
    next_check_at      BIGINT,
    check_count        BIGINT NOT NULL DEFAULT 0,
    -- The code with which the channel refused a re-send: the refund is only queried from then on.
    resend_declined_code TEXT,
    -- When `refund.action_required` was emitted: once per refund.
    action_required_at BIGINT,
    livemode           BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (merchant_id, merchant_refund_no)
);
CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX refunds_due ON refunds (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX refunds_merchant ON refunds (merchant_id, id);

-- The outbox: written in the same transaction as the state change it reports.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    type        TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    livemode    BOOLEAN NOT NULL DEFAULT TRUE,
    -- SQLite's rowid: commit order within a merchant (see above).
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX events_merchant ON events (merchant_id, id);
CREATE INDEX events_merchant_seq ON events (merchant_id, seq);
CREATE INDEX events_merchant_mode ON events (merchant_id, livemode);

-- Every verified inbound notification, raw, before it is processed.
CREATE TABLE inbound_notifications (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    notify_id    TEXT,
    headers      TEXT NOT NULL,
    body         BYTEA NOT NULL,
    outcome      TEXT,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX inbound_unprocessed ON inbound_notifications (processed_at, received_at);
CREATE INDEX inbound_notify_id ON inbound_notifications (channel, account_id, notify_id);

-- Idempotency keys: the first response to a POST, replayed for the same key and body.
CREATE TABLE idempotency_keys (
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    -- NULL while the first request is in flight.
    response_status BIGINT,
    response_body   BYTEA,
    -- An in-flight claim older than this was abandoned (the process died) and may be taken over.
    locked_until    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    -- The payment or refund the request wrote, bound in the same transaction.
    object_id       TEXT,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    -- JSON array of event types, or NULL for every type.
    events      TEXT,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    livemode    BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);

-- One event to one endpoint: written with the event, in the same transaction (the outbox).
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events(id),
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id),
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- The retry window (3 days by default) counts from here; a manual redeliver restarts it.
    window_started_at BIGINT NOT NULL,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    id           TEXT PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    at           BIGINT NOT NULL,
    status_code  BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- Every secret a rotation replaced, signing alongside the current one until it expires.
CREATE TABLE webhook_old_secrets (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id),
    secret      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX webhook_old_secrets_endpoint ON webhook_old_secrets (endpoint_id, expires_at);

-- The secret each rotation made, by its Idempotency-Key.
CREATE TABLE webhook_rotations (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id),
    idempotency_key TEXT NOT NULL,
    secret          TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, idempotency_key)
);
