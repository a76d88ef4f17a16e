-- Recovery after a lost answer: an idempotency key is bound, in the transaction that writes it, to
-- the payment or refund its request created. A retry after the first run died replays that object.
ALTER TABLE idempotency_keys ADD COLUMN object_id TEXT;

-- Refunds are listed per merchant, newest first (per payment, `refunds_payment` serves).
CREATE INDEX refunds_merchant ON refunds (merchant_id, id);
