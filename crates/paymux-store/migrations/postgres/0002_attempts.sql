-- SQLite 0006 for PostgreSQL: several attempts per payment, the refund of a duplicate one, and
-- the merchant's setting for it. The same columns; the fix-up of existing rows is the same.

ALTER TABLE attempts ADD COLUMN method TEXT NOT NULL DEFAULT 'qr';
ALTER TABLE attempts ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE attempts ADD COLUMN action TEXT;
ALTER TABLE attempts ADD COLUMN channel_trade_no TEXT;
-- The sweeper still asks the channel about this attempt: it could still take money.
ALTER TABLE attempts ADD COLUMN watching BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE attempts SET
    method = p.method,
    status = p.status,
    action = p.action,
    channel_trade_no = p.channel_trade_no,
    watching = (p.status = 'pending' OR (p.status = 'closed' AND p.next_check_at IS NOT NULL))
FROM payments p WHERE p.id = attempts.payment_id;
INSERT INTO attempts (id, payment_id, account_id, channel, channel_order_no, channel_data,
                      created_at, method, status, action, channel_trade_no, watching)
    SELECT 'att_' || lower(p.channel_order_no), p.id, p.account_id, p.channel, p.channel_order_no,
           '{}', p.created_at, p.method, p.status, p.action, p.channel_trade_no,
           p.status = 'pending'
    FROM payments p
    WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.payment_id = p.id);

ALTER TABLE refunds ADD COLUMN attempt_id TEXT REFERENCES attempts(id);

ALTER TABLE merchants ADD COLUMN duplicate_auto_refund BOOLEAN NOT NULL DEFAULT TRUE;
