-- Several attempts per payment (issue 15): the payer may switch channels, the first success wins,
-- and a second attempt that is paid too is recorded and refunded on its own.

-- What each attempt was, as the payment showed it when it was its only attempt.
ALTER TABLE attempts ADD COLUMN method TEXT NOT NULL DEFAULT 'qr';
ALTER TABLE attempts ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE attempts ADD COLUMN action TEXT;
ALTER TABLE attempts ADD COLUMN channel_trade_no TEXT;
-- The sweeper still asks the channel about this attempt: it could still take money.
ALTER TABLE attempts ADD COLUMN watching BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE attempts SET
    method = (SELECT p.method FROM payments p WHERE p.id = attempts.payment_id),
    status = (SELECT p.status FROM payments p WHERE p.id = attempts.payment_id),
    action = (SELECT p.action FROM payments p WHERE p.id = attempts.payment_id),
    channel_trade_no = (SELECT p.channel_trade_no FROM payments p WHERE p.id = attempts.payment_id),
    -- A closed payment was watched while the sweeper still had it; pending ones always are.
    watching = (SELECT p.status = 'pending' OR (p.status = 'closed' AND p.next_check_at IS NOT NULL)
                FROM payments p WHERE p.id = attempts.payment_id);
-- Every payment has its attempt (one was always written with it); a row without one would be a
-- hand edit, and gets the attempt it describes.
INSERT INTO attempts (id, payment_id, account_id, channel, channel_order_no, channel_data,
                      created_at, method, status, action, channel_trade_no, watching)
    SELECT 'att_' || lower(p.channel_order_no), p.id, p.account_id, p.channel, p.channel_order_no,
           '{}', p.created_at, p.method, p.status, p.action, p.channel_trade_no,
           p.status = 'pending'
    FROM payments p
    WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.payment_id = p.id);

-- The automatic refund of a duplicate attempt names it; it never counts against the payment's
-- refundable amount. Merchant refunds leave it NULL.
ALTER TABLE refunds ADD COLUMN attempt_id TEXT REFERENCES attempts(id);

-- A merchant's setting: refund a duplicate payment automatically (on by default).
ALTER TABLE merchants ADD COLUMN duplicate_auto_refund BOOLEAN NOT NULL DEFAULT TRUE;
