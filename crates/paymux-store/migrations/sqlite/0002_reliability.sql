-- Idempotency keys: the first response to a POST, replayed for the same key and body.
CREATE TABLE idempotency_keys (
    merchant_id    TEXT NOT NULL REFERENCES merchants(id),
    key            TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    -- NULL while the first request is in flight.
    response_status INTEGER,
    response_body  BLOB,
    -- An in-flight claim older than this was abandoned (the process died) and may be taken over.
    locked_until   BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- When the sweeper looks at a payment or refund next, and how often it has. NULL once there is
-- nothing more to learn (succeeded, failed, or closed and past its expiry).
ALTER TABLE payments ADD COLUMN next_check_at BIGINT;
ALTER TABLE payments ADD COLUMN check_count INTEGER NOT NULL DEFAULT 0;
CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;
ALTER TABLE refunds ADD COLUMN next_check_at BIGINT;
ALTER TABLE refunds ADD COLUMN check_count INTEGER NOT NULL DEFAULT 0;
CREATE INDEX refunds_due ON refunds (next_check_at) WHERE next_check_at IS NOT NULL;

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    -- After a rotation the old secret keeps signing too, until it expires (24 h).
    previous_secret            TEXT,
    previous_secret_expires_at BIGINT,
    -- JSON array of event types, or NULL for every type.
    events      TEXT,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);

-- One event to one endpoint: written with the event, in the same transaction (the outbox).
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events(id),
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id),
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- The retry window (3 days by default) counts from here; a manual redeliver restarts it.
    window_started_at BIGINT NOT NULL,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
-- Events are paged in commit order (rowid), which their time-ordered ids need not follow; an index
-- on merchant_id alone keeps its entries in rowid order.
CREATE INDEX events_merchant_seq ON events (merchant_id); -- entries are ordered by (merchant_id, rowid)
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    id           TEXT PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    at           BIGINT NOT NULL,
    status_code  INTEGER,
    latency_ms   BIGINT NOT NULL,
    error        TEXT,
    response_snippet TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

CREATE INDEX inbound_notify_id ON inbound_notifications (channel, account_id, notify_id);
