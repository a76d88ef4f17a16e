-- Refunds as conservative as payments (issue 11).

-- A refund held as failed can still turn out to have succeeded; the channel's truth wins, even
-- past the payment's amount. Reservations are then recorded in two parts, so that
-- `amount_reserved <= amount` still holds: `amount_reserved` up to the amount, and what the
-- channel refunded beyond it here. Their sum is always the non-failed refunds.
ALTER TABLE payments ADD COLUMN amount_over_reserved BIGINT NOT NULL DEFAULT 0;

-- The business code with which the channel refused a re-send of this pending refund. A refusal of
-- a re-sent number says nothing about the original: the refund stays pending, is only queried
-- from then on, and is never sent again.
ALTER TABLE refunds ADD COLUMN resend_declined_code TEXT;
-- When `refund.action_required` was emitted (WeChat ABNORMAL): once per refund.
ALTER TABLE refunds ADD COLUMN action_required_at BIGINT;
