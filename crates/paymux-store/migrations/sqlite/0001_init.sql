-- Times are unix milliseconds (BIGINT); amounts are integer minor units (fen).
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
    created_at  BIGINT NOT NULL
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
    UNIQUE (merchant_id, merchant_order_no)
);
CREATE INDEX payments_merchant ON payments (merchant_id, id);

-- One try at one channel. The first version makes one attempt per payment.
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
    UNIQUE (merchant_id, merchant_refund_no)
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- The outbox: written in the same transaction as the state change it reports.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    type        TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_merchant ON events (merchant_id, id);

-- Every verified inbound notification, raw, before it is processed.
CREATE TABLE inbound_notifications (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    notify_id    TEXT,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    outcome      TEXT,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX inbound_unprocessed ON inbound_notifications (processed_at, received_at);
