//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go through a pool of exactly one connection: SQLite allows one writer at a time, and one
//! writer connection turns what would be lock contention (and `SQLITE_BUSY` on upgrade) into a
//! queue. Reads use their own pool and never wait for writes (WAL).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use paymux_core::{
    AccountId, ChannelKind, ChannelOrderNo, Currency, EventId, EventType, MerchantId, Money,
    PaymentId, PaymentStatus, RefundId, RefundStatus,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;

use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Maps a UNIQUE violation to `Duplicate(what)`, anything else to `Unavailable`.
fn unique_or(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(what),
        _ => unavailable(e),
    }
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("time {v}: {e}")))
}

fn opt_from_ms(v: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    v.map(from_ms).transpose()
}

fn parse<T: FromStr>(v: &str, what: &str) -> StoreResult<T> {
    v.parse().map_err(|_| StoreError::Corrupt(format!("{what} {v:?}")))
}

fn json(v: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(v).map_err(|e| StoreError::Corrupt(format!("json: {e}")))
}

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Nothing acknowledged may be lost to a power cut: FULL, never NORMAL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        MIGRATOR.run(&writer).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(unavailable)?;
        Ok(Self { writer, reader })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer.begin().await.map_err(unavailable)
    }
}

const PAYMENT_COLUMNS: &str = "id, merchant_id, merchant_order_no, amount, currency, subject, status, \
     channel, method, account_id, channel_order_no, channel_trade_no, action, amount_refunded, \
     amount_reserved, failure_code, failure_message, client_ip, return_url, payer, metadata, \
     expires_at, paid_at, created_at, updated_at";

fn payment_from_row(row: &SqliteRow) -> StoreResult<PaymentRecord> {
    let currency: Currency = parse(&get::<String>(row, "currency")?, "currency")?;
    let amount = Money::new(get(row, "amount")?, currency)
        .map_err(|e| StoreError::Corrupt(format!("amount: {e}")))?;
    let channel_order_no: String = get(row, "channel_order_no")?;
    Ok(PaymentRecord {
        id: parse(&get::<String>(row, "id")?, "payment id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        merchant_order_no: get(row, "merchant_order_no")?,
        amount,
        subject: get(row, "subject")?,
        status: parse_payment_status(&get::<String>(row, "status")?)?,
        channel: parse(&get::<String>(row, "channel")?, "channel")?,
        method: parse(&get::<String>(row, "method")?, "method")?,
        account_id: parse(&get::<String>(row, "account_id")?, "account id")?,
        channel_order_no: ChannelOrderNo::from_channel(&channel_order_no)
            .ok_or_else(|| StoreError::Corrupt("channel_order_no".into()))?,
        channel_trade_no: get(row, "channel_trade_no")?,
        action: get::<Option<String>>(row, "action")?.as_deref().map(json).transpose()?,
        amount_refunded: get(row, "amount_refunded")?,
        amount_reserved: get(row, "amount_reserved")?,
        failure_code: get(row, "failure_code")?,
        failure_message: get(row, "failure_message")?,
        client_ip: get(row, "client_ip")?,
        return_url: get(row, "return_url")?,
        payer: get::<Option<String>>(row, "payer")?.as_deref().map(json).transpose()?,
        metadata: json(&get::<String>(row, "metadata")?)?,
        expires_at: from_ms(get(row, "expires_at")?)?,
        paid_at: opt_from_ms(get(row, "paid_at")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
    })
}

const REFUND_COLUMNS: &str = "id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
     amount, currency, status, reason, channel_refund_id, failure_code, failure_message, created_at, \
     succeeded_at, updated_at";

fn refund_from_row(row: &SqliteRow) -> StoreResult<RefundRecord> {
    let currency: Currency = parse(&get::<String>(row, "currency")?, "currency")?;
    let amount = Money::new(get(row, "amount")?, currency)
        .map_err(|e| StoreError::Corrupt(format!("amount: {e}")))?;
    let no: String = get(row, "channel_refund_no")?;
    Ok(RefundRecord {
        id: parse(&get::<String>(row, "id")?, "refund id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        payment_id: parse(&get::<String>(row, "payment_id")?, "payment id")?,
        merchant_refund_no: get(row, "merchant_refund_no")?,
        channel_refund_no: ChannelOrderNo::from_channel(&no)
            .ok_or_else(|| StoreError::Corrupt("channel_refund_no".into()))?,
        amount,
        status: parse_refund_status(&get::<String>(row, "status")?)?,
        reason: get(row, "reason")?,
        channel_refund_id: get(row, "channel_refund_id")?,
        failure_code: get(row, "failure_code")?,
        failure_message: get(row, "failure_message")?,
        created_at: from_ms(get(row, "created_at")?)?,
        succeeded_at: opt_from_ms(get(row, "succeeded_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<AttemptRecord> {
    let no: String = get(row, "channel_order_no")?;
    Ok(AttemptRecord {
        id: get(row, "id")?,
        payment_id: parse(&get::<String>(row, "payment_id")?, "payment id")?,
        account_id: parse(&get::<String>(row, "account_id")?, "account id")?,
        channel: parse(&get::<String>(row, "channel")?, "channel")?,
        channel_order_no: ChannelOrderNo::from_channel(&no)
            .ok_or_else(|| StoreError::Corrupt("channel_order_no".into()))?,
        channel_data: json(&get::<String>(row, "channel_data")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: parse(&get::<String>(row, "id")?, "event id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        kind: parse::<EventType>(&get::<String>(row, "type")?, "event type")?,
        object_id: get(row, "object_id")?,
        data: json(&get::<String>(row, "data")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

fn account_from_row(row: &SqliteRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: parse(&get::<String>(row, "id")?, "account id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        channel: parse::<ChannelKind>(&get::<String>(row, "channel")?, "channel")?,
        config: json(&get::<String>(row, "config")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    merchant: MerchantId,
    events: &[NewEvent],
    at: OffsetDateTime,
) -> StoreResult<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO events (id, merchant_id, type, object_id, data, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(e.id.to_string())
        .bind(merchant.to_string())
        .bind(e.kind.as_str())
        .bind(&e.object_id)
        .bind(e.data.to_string())
        .bind(ms(at))
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_merchant(&self, name: &str) -> StoreResult<MerchantId> {
        let id = MerchantId::new();
        sqlx::query("INSERT INTO merchants (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.to_string())
            .bind(name)
            .bind(ms(OffsetDateTime::now_utc()))
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn merchant(&self, id: MerchantId) -> StoreResult<Option<MerchantRecord>> {
        let row = sqlx::query("SELECT id, name, created_at FROM merchants WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            Ok(MerchantRecord {
                id: parse(&get::<String>(&r, "id")?, "merchant id")?,
                name: get(&r, "name")?,
                created_at: from_ms(get(&r, "created_at")?)?,
            })
        })
        .transpose()
    }

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_hash, merchant_id, prefix, livemode, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.key_hash)
        .bind(key.merchant_id.to_string())
        .bind(&key.prefix)
        .bind(key.livemode)
        .bind(ms(OffsetDateTime::now_utc()))
        .execute(&self.writer)
        .await
        .map_err(|e| unique_or(e, "api key"))?;
        Ok(())
    }

    async fn merchant_for_key(&self, key_hash: &str) -> StoreResult<Option<MerchantId>> {
        let row = sqlx::query("SELECT merchant_id FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.map(|r| parse(&get::<String>(&r, "merchant_id")?, "merchant id")).transpose()
    }

    async fn put_channel_account(&self, a: &AccountRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO channel_accounts (id, merchant_id, channel, config, created_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET config = excluded.config",
        )
        .bind(a.id.to_string())
        .bind(a.merchant_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.config.to_string())
        .bind(ms(a.created_at))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn channel_account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        let row = sqlx::query(
            "SELECT id, merchant_id, channel, config, created_at FROM channel_accounts WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn channel_accounts(&self, merchant: MerchantId) -> StoreResult<Vec<AccountRecord>> {
        let rows = sqlx::query(
            "SELECT id, merchant_id, channel, config, created_at FROM channel_accounts \
             WHERE merchant_id = ? ORDER BY id",
        )
        .bind(merchant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn insert_payment(&self, p: &PaymentRecord, a: &AttemptRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO payments (id, merchant_id, merchant_order_no, amount, currency, subject, \
             status, channel, method, account_id, channel_order_no, channel_trade_no, action, \
             amount_refunded, amount_reserved, failure_code, failure_message, client_ip, return_url, \
             payer, metadata, expires_at, paid_at, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.to_string())
        .bind(p.merchant_id.to_string())
        .bind(&p.merchant_order_no)
        .bind(p.amount.minor())
        .bind(p.amount.currency().code())
        .bind(&p.subject)
        .bind(p.status.as_str())
        .bind(p.channel.as_str())
        .bind(p.method.as_str())
        .bind(p.account_id.to_string())
        .bind(p.channel_order_no.as_str())
        .bind(&p.channel_trade_no)
        .bind(p.action.as_ref().map(|v| v.to_string()))
        .bind(p.amount_refunded)
        .bind(p.amount_reserved)
        .bind(&p.failure_code)
        .bind(&p.failure_message)
        .bind(&p.client_ip)
        .bind(&p.return_url)
        .bind(p.payer.as_ref().map(|v| v.to_string()))
        .bind(p.metadata.to_string())
        .bind(ms(p.expires_at))
        .bind(p.paid_at.map(ms))
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "merchant_order_no"))?;
        sqlx::query(
            "INSERT INTO attempts (id, payment_id, account_id, channel, channel_order_no, \
             channel_data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(a.payment_id.to_string())
        .bind(a.account_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.channel_order_no.as_str())
        .bind(a.channel_data.to_string())
        .bind(ms(a.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "channel_order_no"))?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_created(
        &self,
        payment: PaymentId,
        action: &serde_json::Value,
        channel_data: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE payments SET action = ?, updated_at = ? WHERE id = ?")
            .bind(action.to_string())
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(payment.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE attempts SET channel_data = ? WHERE payment_id = ?")
            .bind(channel_data.to_string())
            .bind(payment.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn payment(
        &self,
        merchant: MerchantId,
        id: PaymentId,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql =
            format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ? AND merchant_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn payment_by_order_no(
        &self,
        merchant: MerchantId,
        merchant_order_no: &str,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ? AND merchant_order_no = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(merchant_order_no)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn list_payments(
        &self,
        merchant: MerchantId,
        filter: &PaymentFilter,
    ) -> StoreResult<Vec<PaymentRecord>> {
        // Optional filters as `? IS NULL OR col = ?`: one static statement, no string building.
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ? \
             AND (? IS NULL OR merchant_order_no = ?) AND (? IS NULL OR status = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let order_no = filter.merchant_order_no.as_deref();
        let status = filter.status.map(|s| s.as_str());
        let before = filter.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(order_no)
            .bind(order_no)
            .bind(status)
            .bind(status)
            .bind(before.clone())
            .bind(before)
            .bind(i64::from(filter.limit.clamp(1, 100)))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn attempt_for_payment(&self, payment: PaymentId) -> StoreResult<Option<AttemptRecord>> {
        let row = sqlx::query(
            "SELECT id, payment_id, account_id, channel, channel_order_no, channel_data, created_at \
             FROM attempts WHERE payment_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(payment.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(attempt_from_row).transpose()
    }

    async fn attempt_by_channel_order_no(
        &self,
        account: AccountId,
        channel_order_no: &ChannelOrderNo,
    ) -> StoreResult<Option<AttemptRecord>> {
        let row = sqlx::query(
            "SELECT id, payment_id, account_id, channel, channel_order_no, channel_data, created_at \
             FROM attempts WHERE account_id = ? AND channel_order_no = ?",
        )
        .bind(account.to_string())
        .bind(channel_order_no.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(attempt_from_row).transpose()
    }

    async fn transition_payment(&self, c: &PaymentTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE payments SET status = ?, \
               channel_trade_no = COALESCE(?, channel_trade_no), \
               paid_at = COALESCE(?, paid_at), \
               failure_code = ?, failure_message = ?, updated_at = ? \
             WHERE id = ? AND status = ?",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_trade_no)
        .bind(c.paid_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(c.payment_id.to_string())
        .bind(c.from.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if done != 1 {
            return Ok(false);
        }
        insert_events(&mut tx, c.merchant_id, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn insert_refund(&self, r: &RefundRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT status, amount, amount_reserved FROM payments WHERE id = ?")
            .bind(r.payment_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)?;
        let status = parse_payment_status(&get::<String>(&row, "status")?)?;
        if status != PaymentStatus::Succeeded {
            return Err(StoreError::PaymentNotRefundable(status));
        }
        // The reservation itself is guarded in SQL, so the check and the write cannot drift apart.
        let reserved = sqlx::query(
            "UPDATE payments SET amount_reserved = amount_reserved + ? \
             WHERE id = ? AND status = 'succeeded' AND amount_reserved + ? <= amount",
        )
        .bind(r.amount.minor())
        .bind(r.payment_id.to_string())
        .bind(r.amount.minor())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if reserved != 1 {
            let amount: i64 = get(&row, "amount")?;
            let already: i64 = get(&row, "amount_reserved")?;
            return Err(StoreError::RefundExceedsAmount {
                requested: r.amount.minor(),
                available: amount - already,
            });
        }
        sqlx::query(
            "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
             amount, currency, status, reason, channel_refund_id, failure_code, failure_message, \
             created_at, succeeded_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.to_string())
        .bind(r.merchant_id.to_string())
        .bind(r.payment_id.to_string())
        .bind(&r.merchant_refund_no)
        .bind(r.channel_refund_no.as_str())
        .bind(r.amount.minor())
        .bind(r.amount.currency().code())
        .bind(r.status.as_str())
        .bind(&r.reason)
        .bind(&r.channel_refund_id)
        .bind(&r.failure_code)
        .bind(&r.failure_message)
        .bind(ms(r.created_at))
        .bind(r.succeeded_at.map(ms))
        .bind(ms(r.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "merchant_refund_no"))?;
        tx.commit().await.map_err(unavailable)
    }

    async fn refund(
        &self,
        merchant: MerchantId,
        id: RefundId,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ? AND merchant_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(refund_from_row).transpose()
    }

    async fn refund_by_merchant_refund_no(
        &self,
        merchant: MerchantId,
        merchant_refund_no: &str,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = ? AND merchant_refund_no = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(merchant_refund_no)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(refund_from_row).transpose()
    }

    async fn refund_by_channel_refund_no(
        &self,
        channel_refund_no: &ChannelOrderNo,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE channel_refund_no = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(channel_refund_no.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(refund_from_row).transpose()
    }

    async fn transition_refund(&self, c: &RefundTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET status = ?, channel_refund_id = COALESCE(?, channel_refund_id), \
               succeeded_at = COALESCE(?, succeeded_at), failure_code = ?, failure_message = ?, \
               updated_at = ? \
             WHERE id = ? AND status = ?",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_refund_id)
        .bind(c.succeeded_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(c.refund_id.to_string())
        .bind(c.from.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if done != 1 {
            return Ok(false);
        }
        let money_sql = match c.to {
            RefundStatus::Succeeded => {
                "UPDATE payments SET amount_refunded = amount_refunded + ?, updated_at = ? WHERE id = ?"
            }
            RefundStatus::Failed => {
                "UPDATE payments SET amount_reserved = amount_reserved - ?, updated_at = ? WHERE id = ?"
            }
            RefundStatus::Pending => return Ok(false),
        };
        sqlx::query(money_sql)
            .bind(c.amount)
            .bind(ms(c.at))
            .bind(c.payment_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        insert_events(&mut tx, c.merchant_id, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn events(
        &self,
        merchant: MerchantId,
        after: Option<EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, merchant_id, type, object_id, data, created_at FROM events \
             WHERE merchant_id = ? AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
        )
        .bind(merchant.to_string())
        .bind(after.map(|a| a.to_string()))
        .bind(after.map(|a| a.to_string()))
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event(&self, merchant: MerchantId, id: EventId) -> StoreResult<Option<EventRecord>> {
        let row = sqlx::query(
            "SELECT id, merchant_id, type, object_id, data, created_at FROM events \
             WHERE id = ? AND merchant_id = ?",
        )
        .bind(id.to_string())
        .bind(merchant.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn log_inbound(&self, n: &InboundRecord) -> StoreResult<()> {
        let headers = serde_json::to_string(&n.headers)
            .map_err(|e| StoreError::Corrupt(format!("headers: {e}")))?;
        sqlx::query(
            "INSERT INTO inbound_notifications (id, channel, account_id, notify_id, headers, body, \
             received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&n.id)
        .bind(n.channel.as_str())
        .bind(n.account_id.to_string())
        .bind(&n.notify_id)
        .bind(headers)
        .bind(&n.body)
        .bind(ms(n.received_at))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn mark_inbound(&self, id: &str, outcome: &str) -> StoreResult<()> {
        sqlx::query("UPDATE inbound_notifications SET outcome = ?, processed_at = ? WHERE id = ?")
            .bind(outcome)
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }
}
