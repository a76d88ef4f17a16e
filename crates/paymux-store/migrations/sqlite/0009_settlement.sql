-- Escrow and profit sharing (docs/settlement.md): receivers, each held payment's settlement with
-- its splits, and the ledger of every movement of money.

-- A merchant's receivers. `accounts` is the per-channel account the merchant gave
-- ({"wechat": {...}, "alipay": {...}, ...}); `registrations` what each channel answered when paymux
-- registered the receiver there. A deleted receiver keeps its row (splits name it) with deleted_at.
CREATE TABLE receivers (
    id            TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL REFERENCES merchants(id),
    livemode      BOOLEAN NOT NULL,
    name          TEXT NOT NULL,
    accounts      TEXT NOT NULL,
    registrations TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE INDEX receivers_by_merchant ON receivers (merchant_id, livemode, id);

-- One row per held payment. `splits` is the JSON list of {receiver, ratio_bps, amount, status,
-- out_order_no, failure}; `next_check_at` is when the sweeper looks at it next (auto-settle, or an
-- unknown split outcome to query); a claim leases it by moving next_check_at, as for payments.
-- `release_no` is paymux's number for releasing the rest to the merchant at a channel that holds
-- the funds (set when settling starts, kept across retries).
CREATE TABLE settlements (
    payment_id     TEXT PRIMARY KEY REFERENCES payments(id),
    merchant_id    TEXT NOT NULL REFERENCES merchants(id),
    livemode       BOOLEAN NOT NULL,
    status         TEXT NOT NULL,
    splits         TEXT NOT NULL,
    auto_settle_at BIGINT,
    settled_at     BIGINT,
    next_check_at  BIGINT,
    release_no     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX settlements_due ON settlements (next_check_at);

-- Every movement of money, signed, against one account (`merchant`, a receiver's id, or `channel`
-- for money entering or leaving through the channel) and one bucket (held, settled, external).
-- A payment's entries sum to zero.
CREATE TABLE ledger_entries (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    livemode    BOOLEAN NOT NULL,
    payment_id  TEXT NOT NULL REFERENCES payments(id),
    account     TEXT NOT NULL,
    bucket      TEXT NOT NULL CHECK (bucket IN ('held', 'settled', 'external')),
    kind        TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ledger_by_merchant ON ledger_entries (merchant_id, livemode, created_at);
CREATE INDEX ledger_by_payment ON ledger_entries (payment_id);
