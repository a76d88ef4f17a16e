-- Indexes no query uses, each one more b-tree every insert writes.
-- Events are read by merchant and mode in commit order: events_merchant_mode (merchant_id,
-- livemode, and the rowid every SQLite index ends with) serves that, and a prefix of it serves
-- the merchant alone (the foreign key's lookups).
DROP INDEX events_merchant;
DROP INDEX events_merchant_seq;
-- Notifications are logged with what became of them, in the transaction that processed them:
-- nothing looks for unprocessed ones.
DROP INDEX inbound_unprocessed;
