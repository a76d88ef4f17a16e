-- Recovery after a lost answer: an idempotency key is bound, in the transaction that writes it, to
-- the payment or refund its request created. A retry after the first run died replays that object.
ALTER TABLE idempotency_keys ADD COLUMN object_id TEXT;

-- Refunds are listed per merchant, newest first (per payment, `refunds_payment` serves).
CREATE INDEX refunds_merchant ON refunds (merchant_id, id);

-- Live and test apart. A channel account is test (the sandbox's mocks or a channel's own sandbox)
-- or live; every payment, refund, event and webhook endpoint carries the mode it was made in, and
-- an API key sees only its own mode. The default is live: a row whose mode is not known for sure
-- stays out of reach of test keys.
ALTER TABLE channel_accounts ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE;
-- Existing accounts: test only when they point at this machine (the sandbox's mocks) or at
-- Alipay's sandbox; every other account may hold real credentials, so it is live.
UPDATE channel_accounts SET livemode = FALSE WHERE id IN (
    SELECT id FROM (
        SELECT id, lower(COALESCE(json_extract(config, '$.gateway_url'),
                                  json_extract(config, '$.base_url'), '')) AS url
        FROM channel_accounts
    )
    WHERE url LIKE 'http://127.%' OR url LIKE 'https://127.%'
       OR url LIKE 'http://localhost:%' OR url LIKE 'http://localhost/%'
       OR url LIKE 'https://localhost:%' OR url LIKE 'https://localhost/%'
       OR url LIKE 'http://[::1]%' OR url LIKE 'https://[::1]%'
       OR url LIKE 'https://openapi-sandbox.dl.alipaydev.com/%'
);

-- Existing objects take the mode of the account their money went through.
ALTER TABLE payments ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE payments SET livemode =
    (SELECT a.livemode FROM channel_accounts a WHERE a.id = payments.account_id);
ALTER TABLE refunds ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE refunds SET livemode = (SELECT p.livemode FROM payments p WHERE p.id = refunds.payment_id);
ALTER TABLE events ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE events SET livemode = COALESCE(
    (SELECT p.livemode FROM payments p WHERE p.id = events.object_id),
    (SELECT r.livemode FROM refunds r WHERE r.id = events.object_id),
    TRUE);
-- An existing endpoint served both modes; it keeps the live events if its merchant has a live
-- account (those are the ones that matter), else the test ones.
ALTER TABLE webhook_endpoints ADD COLUMN livemode BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE webhook_endpoints SET livemode = EXISTS (
    SELECT 1 FROM channel_accounts a
    WHERE a.merchant_id = webhook_endpoints.merchant_id AND a.livemode);
CREATE INDEX events_merchant_mode ON events (merchant_id, livemode);
