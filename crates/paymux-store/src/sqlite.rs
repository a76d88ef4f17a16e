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

/// Binds the merchant's in-flight claim of `key` to the object just written, in the caller's
/// transaction: the object and the binding commit together or not at all.
async fn bind_idempotency_key(
    tx: &mut Transaction<'static, Sqlite>,
    merchant: MerchantId,
    key: Option<&str>,
    object_id: &str,
) -> StoreResult<()> {
    let Some(key) = key else { return Ok(()) };
    sqlx::query(
        "UPDATE idempotency_keys SET object_id = ? \
         WHERE merchant_id = ? AND key = ? AND response_status IS NULL",
    )
    .bind(object_id)
    .bind(merchant.to_string())
    .bind(key)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
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

    /// Rows of `table` (payments or refunds) in one of `statuses` whose next check is due, leased
    /// until `lease_until`: pushing `next_check_at` out hides them from other sweepers till then.
    async fn claim_due_rows(
        &self,
        table: &'static str,
        columns: &'static str,
        statuses: &'static str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SqliteRow>> {
        let mut tx = self.begin().await?;
        let select = format!(
            "SELECT {columns} FROM {table} WHERE next_check_at IS NOT NULL AND next_check_at <= ? \
             AND status IN ({statuses}) ORDER BY next_check_at LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let lease = format!("UPDATE {table} SET next_check_at = ? WHERE id = ?");
        for row in &rows {
            sqlx::query(sqlx::AssertSqlSafe(lease.clone()))
                .bind(ms(lease_until))
                .bind(get::<String>(row, "id")?)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(rows)
    }

    /// Compare-and-set on a lease column: the row is still ours only while the lease we wrote is
    /// the one in it.
    async fn renew_lease(
        &self,
        table: &'static str,
        column: &'static str,
        id: String,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let sql = format!("UPDATE {table} SET {column} = ? WHERE id = ? AND {column} = ?");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(until))
            .bind(id)
            .bind(ms(held))
            .execute(&self.writer)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(done == 1)
    }

    /// The next sweeper check of a payment or refund, one step further along its backoff.
    async fn schedule_check(
        &self,
        table: &'static str,
        id: String,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {table} SET next_check_at = ?, check_count = check_count + 1 WHERE id = ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(at))
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

const PAYMENT_COLUMNS: &str = "id, merchant_id, merchant_order_no, amount, currency, subject, status, \
     channel, method, account_id, channel_order_no, channel_trade_no, action, amount_refunded, \
     amount_reserved, failure_code, failure_message, client_ip, return_url, payer, metadata, \
     expires_at, paid_at, created_at, updated_at, check_count, livemode";

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
        check_count: get(row, "check_count")?,
        livemode: get(row, "livemode")?,
    })
}

const REFUND_COLUMNS: &str = "id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
     amount, currency, status, reason, channel_refund_id, failure_code, failure_message, created_at, \
     succeeded_at, updated_at, check_count, livemode, resend_declined_code, action_required_at";

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
        check_count: get(row, "check_count")?,
        livemode: get(row, "livemode")?,
        resend_declined_code: get(row, "resend_declined_code")?,
        action_required_at: opt_from_ms(get(row, "action_required_at")?)?,
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
        livemode: get(row, "livemode")?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

fn account_from_row(row: &SqliteRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: parse(&get::<String>(row, "id")?, "account id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        channel: parse::<ChannelKind>(&get::<String>(row, "channel")?, "channel")?,
        config: json(&get::<String>(row, "config")?)?,
        livemode: get(row, "livemode")?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

/// Writes events of one mode (their object's) and, in the same transaction, a delivery to each
/// subscribed endpoint of that mode.
async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    merchant: MerchantId,
    livemode: bool,
    events: &[NewEvent],
    at: OffsetDateTime,
) -> StoreResult<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO events (id, merchant_id, type, object_id, data, livemode, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.id.to_string())
        .bind(merchant.to_string())
        .bind(e.kind.as_str())
        .bind(&e.object_id)
        .bind(e.data.to_string())
        .bind(livemode)
        .bind(ms(at))
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        // The outbox: a delivery per subscribed endpoint, in the same transaction as the event.
        let endpoints = sqlx::query(
            "SELECT id, events FROM webhook_endpoints \
             WHERE merchant_id = ? AND livemode = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(livemode)
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
        for ep in endpoints {
            let events: Option<String> = get(&ep, "events")?;
            if !subscribed(events.as_deref(), e.kind)? {
                continue;
            }
            insert_delivery(tx, &e.id.to_string(), &get::<String>(&ep, "id")?, at).await?;
        }
    }
    Ok(())
}

fn subscribed(events: Option<&str>, kind: EventType) -> StoreResult<bool> {
    match events {
        None => Ok(true),
        Some(list) => {
            let names: Vec<String> = serde_json::from_str(list)
                .map_err(|e| StoreError::Corrupt(format!("endpoint events: {e}")))?;
            Ok(names.iter().any(|n| n == kind.as_str()))
        }
    }
}

async fn insert_delivery(
    tx: &mut Transaction<'static, Sqlite>,
    event_id: &str,
    endpoint_id: &str,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, endpoint_id, status, attempts, next_attempt_at, \
         window_started_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(format!("dlv_{}", uuid::Uuid::now_v7().simple()))
    .bind(event_id)
    .bind(endpoint_id)
    .bind(ms(at))
    .bind(ms(at))
    .bind(ms(at))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn endpoint_from_row(row: &SqliteRow) -> StoreResult<WebhookEndpointRecord> {
    let events: Option<String> = get(row, "events")?;
    let events = events
        .map(|list| {
            let names: Vec<String> = serde_json::from_str(&list)
                .map_err(|e| StoreError::Corrupt(format!("endpoint events: {e}")))?;
            names
                .iter()
                .map(|n| parse::<EventType>(n, "event type"))
                .collect::<StoreResult<Vec<_>>>()
        })
        .transpose()?;
    Ok(WebhookEndpointRecord {
        id: get(row, "id")?,
        merchant_id: parse(&get::<String>(row, "merchant_id")?, "merchant id")?,
        url: get(row, "url")?,
        secret: get(row, "secret")?,
        events,
        livemode: get(row, "livemode")?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
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

    async fn merchant_for_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>> {
        let row = sqlx::query("SELECT merchant_id, livemode FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            Ok(ApiKeyOwner {
                merchant_id: parse(&get::<String>(&r, "merchant_id")?, "merchant id")?,
                livemode: get(&r, "livemode")?,
            })
        })
        .transpose()
    }

    async fn put_channel_account(&self, a: &AccountRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO channel_accounts (id, merchant_id, channel, config, livemode, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET config = excluded.config, livemode = excluded.livemode",
        )
        .bind(a.id.to_string())
        .bind(a.merchant_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.config.to_string())
        .bind(a.livemode)
        .bind(ms(a.created_at))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn channel_account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        let row = sqlx::query(
            "SELECT id, merchant_id, channel, config, livemode, created_at FROM channel_accounts \
             WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn channel_accounts(&self, merchant: MerchantId) -> StoreResult<Vec<AccountRecord>> {
        let rows = sqlx::query(
            "SELECT id, merchant_id, channel, config, livemode, created_at FROM channel_accounts \
             WHERE merchant_id = ? ORDER BY id",
        )
        .bind(merchant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn insert_payment(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO payments (id, merchant_id, merchant_order_no, amount, currency, subject, \
             status, channel, method, account_id, channel_order_no, channel_trade_no, action, \
             amount_refunded, amount_reserved, failure_code, failure_message, client_ip, return_url, \
             payer, metadata, expires_at, paid_at, created_at, updated_at, next_check_at, livemode) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(ms(first_check_at))
        .bind(p.livemode)
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
        bind_idempotency_key(&mut tx, p.merchant_id, idempotency_key, &p.id.to_string()).await?;
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
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ? AND livemode = ? \
             AND (? IS NULL OR merchant_order_no = ?) AND (? IS NULL OR status = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let order_no = filter.merchant_order_no.as_deref();
        let status = filter.status.map(|s| s.as_str());
        let before = filter.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(filter.livemode)
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
               failure_code = ?, failure_message = ?, updated_at = ?, \
               next_check_at = CASE WHEN ? THEN NULL ELSE next_check_at END \
             WHERE id = ? AND status = ? RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_trade_no)
        .bind(c.paid_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        // Closed keeps being checked until its expiry: a payer may still pay a QR code.
        .bind(c.to != PaymentStatus::Closed)
        .bind(c.payment_id.to_string())
        .bind(c.from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        insert_events(&mut tx, c.merchant_id, get(&changed, "livemode")?, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn insert_refund(
        &self,
        r: &RefundRecord,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT status, amount, amount_reserved + amount_over_reserved AS reserved \
             FROM payments WHERE id = ?",
        )
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
             WHERE id = ? AND status = 'succeeded' \
               AND amount_reserved + amount_over_reserved + ? <= amount",
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
            let already: i64 = get(&row, "reserved")?;
            return Err(StoreError::RefundExceedsAmount {
                requested: r.amount.minor(),
                available: amount - already,
            });
        }
        sqlx::query(
            "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
             amount, currency, status, reason, channel_refund_id, failure_code, failure_message, \
             created_at, succeeded_at, updated_at, next_check_at, livemode) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(ms(first_check_at))
        .bind(r.livemode)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "merchant_refund_no"))?;
        bind_idempotency_key(&mut tx, r.merchant_id, idempotency_key, &r.id.to_string()).await?;
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

    async fn list_refunds(
        &self,
        merchant: MerchantId,
        filter: &RefundFilter,
    ) -> StoreResult<Vec<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = ? AND livemode = ? \
             AND (? IS NULL OR payment_id = ?) AND (? IS NULL OR merchant_refund_no = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let payment = filter.payment_id.map(|p| p.to_string());
        let refund_no = filter.merchant_refund_no.as_deref();
        let before = filter.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(filter.livemode)
            .bind(payment.clone())
            .bind(payment)
            .bind(refund_no)
            .bind(refund_no)
            .bind(before.clone())
            .bind(before)
            .bind(i64::from(filter.limit.clamp(1, 100)))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(refund_from_row).collect()
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
               updated_at = ?, next_check_at = NULL \
             WHERE id = ? AND status = ? RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_refund_id)
        .bind(c.succeeded_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(c.refund_id.to_string())
        .bind(c.from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        let livemode: bool = get(&changed, "livemode")?;
        // How the payment's reservations move, and whether its refunds go up with this one.
        let (reserve, refunded) = match (c.from, c.to) {
            (RefundStatus::Pending, RefundStatus::Succeeded) => (0, c.amount),
            // Its reservation was released when it failed: the money moved, so it is taken again.
            (RefundStatus::Failed, RefundStatus::Succeeded) => (c.amount, c.amount),
            (_, RefundStatus::Failed) => (-c.amount, 0),
            _ => return Ok(false),
        };
        let row = sqlx::query(
            "SELECT amount, amount_reserved + amount_over_reserved AS reserved FROM payments \
             WHERE id = ?",
        )
        .bind(c.payment_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound)?;
        let amount: i64 = get(&row, "amount")?;
        let reserved = get::<i64>(&row, "reserved")? + reserve;
        // The total is kept whole; the part past the amount goes to amount_over_reserved, so
        // that amount_reserved stays within the amount.
        sqlx::query(
            "UPDATE payments SET amount_refunded = amount_refunded + ?, amount_reserved = ?, \
             amount_over_reserved = ?, updated_at = ? WHERE id = ?",
        )
        .bind(refunded)
        .bind(reserved.clamp(0, amount))
        .bind((reserved - amount).max(0))
        .bind(ms(c.at))
        .bind(c.payment_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        insert_events(&mut tx, c.merchant_id, livemode, &c.events, c.at).await?;
        if reserve > 0 && reserved > amount {
            insert_events(&mut tx, c.merchant_id, livemode, &c.over_refund_events, c.at).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn stop_refund_resends(&self, id: RefundId, code: &str) -> StoreResult<()> {
        sqlx::query("UPDATE refunds SET resend_declined_code = ? WHERE id = ?")
            .bind(code)
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn mark_refund_action_required(&self, c: &RefundActionRequired) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET action_required_at = ?, \
               channel_refund_id = COALESCE(?, channel_refund_id), updated_at = ? \
             WHERE id = ? AND status = 'pending' AND action_required_at IS NULL RETURNING livemode",
        )
        .bind(ms(c.at))
        .bind(&c.channel_refund_id)
        .bind(ms(c.at))
        .bind(c.refund_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        let livemode: bool = get(&changed, "livemode")?;
        insert_events(&mut tx, c.merchant_id, livemode, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        after: Option<EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, merchant_id, type, object_id, data, livemode, created_at FROM events \
             WHERE merchant_id = ? AND livemode = ? \
               AND (? IS NULL OR rowid > (SELECT rowid FROM events WHERE id = ?)) \
             ORDER BY rowid LIMIT ?",
        )
        .bind(merchant.to_string())
        .bind(livemode)
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
            "SELECT id, merchant_id, type, object_id, data, livemode, created_at FROM events \
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

    async fn inbound_already_applied(
        &self,
        channel: ChannelKind,
        account: AccountId,
        notify_id: &str,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM inbound_notifications WHERE channel = ? AND account_id = ? \
             AND notify_id = ? AND outcome IN ('applied', 'unchanged') LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(account.to_string())
        .bind(notify_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(row.is_some())
    }

    async fn idempotency_begin(
        &self,
        merchant: MerchantId,
        key: &str,
        request_hash: &str,
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        retain_after: OffsetDateTime,
    ) -> StoreResult<IdempotencyBegin> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT request_hash, response_status, response_body, locked_until, created_at, \
             object_id FROM idempotency_keys WHERE merchant_id = ? AND key = ?",
        )
        .bind(merchant.to_string())
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(row) = row {
            let created: i64 = get(&row, "created_at")?;
            let expired = created < ms(retain_after);
            let status: Option<i64> = get(&row, "response_status")?;
            let abandoned = status.is_none() && get::<i64>(&row, "locked_until")? < ms(now);
            let same_request = get::<String>(&row, "request_hash")? == request_hash;
            // A key taken over from a dead process still belongs to the request it was made for.
            if !expired && !same_request {
                return Ok(IdempotencyBegin::Mismatch);
            }
            if !expired
                && abandoned
                && let Some(object_id) = get::<Option<String>>(&row, "object_id")?
            {
                // The dead request wrote its object: running it again would collide with it.
                return Ok(IdempotencyBegin::Recover { object_id });
            }
            if !expired && !abandoned {
                return Ok(match status {
                    Some(status) => IdempotencyBegin::Replay {
                        status: u16::try_from(status)
                            .map_err(|_| StoreError::Corrupt("response status".into()))?,
                        body: get::<Option<Vec<u8>>>(&row, "response_body")?.unwrap_or_default(),
                    },
                    None => IdempotencyBegin::InFlight,
                });
            }
            sqlx::query("DELETE FROM idempotency_keys WHERE merchant_id = ? AND key = ?")
                .bind(merchant.to_string())
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_until, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(merchant.to_string())
        .bind(key)
        .bind(request_hash)
        .bind(ms(lock_until))
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(IdempotencyBegin::Started)
    }

    async fn idempotency_finish(
        &self,
        merchant: MerchantId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = ?, response_body = ? \
             WHERE merchant_id = ? AND key = ?",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(merchant.to_string())
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(ms(before))
            .execute(&self.writer)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(done)
    }

    async fn idempotency_release(&self, merchant: MerchantId, key: &str) -> StoreResult<()> {
        sqlx::query(
            // A claim bound to an object it wrote is never forgotten: the object exists.
            "DELETE FROM idempotency_keys WHERE merchant_id = ? AND key = ? \
             AND response_status IS NULL AND object_id IS NULL",
        )
        .bind(merchant.to_string())
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_due_payments(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRecord>> {
        let rows = self
            .claim_due_rows(
                "payments",
                PAYMENT_COLUMNS,
                "'pending', 'closed'",
                now,
                lease_until,
                limit,
            )
            .await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn stop_payment_checks(&self, id: PaymentId) -> StoreResult<()> {
        sqlx::query("UPDATE payments SET next_check_at = NULL WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn schedule_payment_check(&self, id: PaymentId, at: OffsetDateTime) -> StoreResult<()> {
        self.schedule_check("payments", id.to_string(), at).await
    }

    async fn claim_due_refunds(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<RefundRecord>> {
        let rows = self
            .claim_due_rows("refunds", REFUND_COLUMNS, "'pending'", now, lease_until, limit)
            .await?;
        rows.iter().map(refund_from_row).collect()
    }

    async fn schedule_refund_check(&self, id: RefundId, at: OffsetDateTime) -> StoreResult<()> {
        self.schedule_check("refunds", id.to_string(), at).await
    }

    async fn renew_payment_lease(
        &self,
        id: PaymentId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("payments", "next_check_at", id.to_string(), held, until).await
    }

    async fn renew_refund_lease(
        &self,
        id: RefundId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("refunds", "next_check_at", id.to_string(), held, until).await
    }

    async fn payment_by_id(&self, id: PaymentId) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn create_webhook_endpoint(&self, ep: &WebhookEndpointRecord) -> StoreResult<()> {
        let events = ep
            .events
            .as_ref()
            .map(|list| serde_json::to_string(&list.iter().map(|e| e.as_str()).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, events, livemode, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&ep.id)
        .bind(ep.merchant_id.to_string())
        .bind(&ep.url)
        .bind(&ep.secret)
        .bind(events)
        .bind(ep.livemode)
        .bind(ms(ep.created_at))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn webhook_endpoints(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<WebhookEndpointRecord>> {
        let rows = sqlx::query(
            "SELECT id, merchant_id, url, secret, events, livemode, created_at \
             FROM webhook_endpoints WHERE merchant_id = ? AND livemode = ? AND NOT deleted \
             ORDER BY id",
        )
        .bind(merchant.to_string())
        .bind(livemode)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn webhook_endpoint(
        &self,
        merchant: MerchantId,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>> {
        let row = sqlx::query(
            "SELECT id, merchant_id, url, secret, events, livemode, created_at \
             FROM webhook_endpoints WHERE merchant_id = ? AND id = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn rotate_webhook_secret(
        &self,
        merchant: MerchantId,
        id: &str,
        rotation: &SecretRotation<'_>,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.begin().await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT secret FROM webhook_endpoints WHERE merchant_id = ? AND id = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(current) = current else { return Ok(None) };
        if let Some(key) = rotation.idempotency_key {
            let made: Option<String> = sqlx::query_scalar(
                "SELECT secret FROM webhook_rotations WHERE endpoint_id = ? AND idempotency_key = ?",
            )
            .bind(id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if made.is_some() {
                return Ok(made);
            }
            sqlx::query(
                "INSERT INTO webhook_rotations (endpoint_id, idempotency_key, secret) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(key)
            .bind(rotation.secret)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        sqlx::query("DELETE FROM webhook_old_secrets WHERE endpoint_id = ? AND expires_at <= ?")
            .bind(id)
            .bind(ms(rotation.now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO webhook_old_secrets (endpoint_id, secret, expires_at) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(&current)
        .bind(ms(rotation.old_expires_at))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("UPDATE webhook_endpoints SET secret = ? WHERE id = ?")
            .bind(rotation.secret)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(rotation.secret.to_owned()))
    }

    async fn delete_webhook_endpoint(&self, merchant: MerchantId, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET deleted = TRUE WHERE merchant_id = ? AND id = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if done == 1 {
            // Nothing more goes to a deleted endpoint.
            sqlx::query(
                "UPDATE deliveries SET status = 'canceled' WHERE endpoint_id = ? AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(done == 1)
    }

    async fn claim_due_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT d.id AS delivery_id, d.attempts, d.window_started_at, w.id AS endpoint_id, \
               w.url, w.secret, e.id, e.merchant_id, e.type, e.object_id, e.data, e.livemode, e.created_at \
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
               JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND NOT w.deleted \
               AND (d.locked_until IS NULL OR d.locked_until <= ?) \
             ORDER BY d.next_attempt_at LIMIT ?",
        )
        .bind(ms(now))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let due = DueDelivery {
                delivery_id: get(row, "delivery_id")?,
                attempts: get(row, "attempts")?,
                window_started_at: from_ms(get(row, "window_started_at")?)?,
                event: event_from_row(row)?,
                url: get(row, "url")?,
                secret: get(row, "secret")?,
                previous_secrets: sqlx::query_scalar(
                    "SELECT secret FROM webhook_old_secrets WHERE endpoint_id = ? \
                     AND expires_at > ? ORDER BY expires_at DESC",
                )
                .bind(get::<String>(row, "endpoint_id")?)
                .bind(ms(now))
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?,
            };
            sqlx::query("UPDATE deliveries SET locked_until = ? WHERE id = ?")
                .bind(ms(lease_until))
                .bind(&due.delivery_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            out.push(due);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
    }

    async fn renew_delivery_lease(
        &self,
        delivery_id: &str,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("deliveries", "locked_until", delivery_id.to_owned(), held, until).await
    }

    async fn record_delivery_attempt(
        &self,
        delivery_id: &str,
        a: &DeliveryAttemptRecord,
        next: DeliveryNext,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (id, delivery_id, at, status_code, latency_ms, error) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(format!("att_{}", uuid::Uuid::now_v7().simple()))
        .bind(delivery_id)
        .bind(ms(a.at))
        .bind(a.status_code.map(i64::from))
        .bind(a.latency_ms)
        .bind(&a.error)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (status, next_at, delivered_at) = match next {
            DeliveryNext::Delivered => ("delivered", a.at, Some(ms(a.at))),
            DeliveryNext::RetryAt(at) => ("pending", at, None),
            DeliveryNext::Failed => ("failed", a.at, None),
        };
        sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
             delivered_at = COALESCE(?, delivered_at), locked_until = NULL WHERE id = ?",
        )
        .bind(status)
        .bind(ms(next_at))
        .bind(delivered_at)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn deliveries_for_event(
        &self,
        merchant: MerchantId,
        event: EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT d.id, d.endpoint_id, w.url, d.status, d.next_attempt_at, d.delivered_at \
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
               JOIN events e ON e.id = d.event_id \
             WHERE d.event_id = ? AND e.merchant_id = ? ORDER BY d.id",
        )
        .bind(event.to_string())
        .bind(merchant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = get(row, "id")?;
            let attempts = sqlx::query(
                "SELECT at, status_code, latency_ms, error FROM delivery_attempts \
                 WHERE delivery_id = ? ORDER BY at, id",
            )
            .bind(&id)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|a| {
                Ok(DeliveryAttemptRecord {
                    at: from_ms(get(a, "at")?)?,
                    status_code: get::<Option<i64>>(a, "status_code")?
                        .and_then(|c| u16::try_from(c).ok()),
                    latency_ms: get(a, "latency_ms")?,
                    error: get(a, "error")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
            let status: String = get(row, "status")?;
            out.push(DeliveryRecord {
                next_attempt_at: if status == "pending" {
                    Some(from_ms(get(row, "next_attempt_at")?)?)
                } else {
                    None
                },
                id,
                endpoint_id: get(row, "endpoint_id")?,
                url: get(row, "url")?,
                status,
                attempts,
                delivered_at: opt_from_ms(get(row, "delivered_at")?)?,
            });
        }
        Ok(out)
    }

    async fn redeliver_event(
        &self,
        merchant: MerchantId,
        event: EventId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT type, livemode FROM events WHERE id = ? AND merchant_id = ?")
            .bind(event.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)?;
        let kind = parse::<EventType>(&get::<String>(&row, "type")?, "event type")?;
        let livemode: bool = get(&row, "livemode")?;
        let endpoints = sqlx::query(
            "SELECT id, events FROM webhook_endpoints \
             WHERE merchant_id = ? AND livemode = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(livemode)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut count = 0;
        for ep in endpoints {
            let events: Option<String> = get(&ep, "events")?;
            if !subscribed(events.as_deref(), kind)? {
                continue;
            }
            let endpoint_id: String = get(&ep, "id")?;
            let updated = sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, window_started_at = ?, \
                 locked_until = NULL WHERE event_id = ? AND endpoint_id = ?",
            )
            .bind(ms(now))
            .bind(ms(now))
            .bind(event.to_string())
            .bind(&endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            if updated == 0 {
                insert_delivery(&mut tx, &event.to_string(), &endpoint_id, now).await?;
            }
            count += 1;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(count)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }
}
