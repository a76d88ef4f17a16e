//! Rows to records, the same for every backend. Both schemas store the same values the same way
//! (ids, enums and JSON as text, times as unix milliseconds, amounts as integer minor units), so a
//! backend only says how to read one column ([`Columns`]) and the mapping is written once.

use std::str::FromStr;

use paymux_core::{ChannelOrderNo, Currency, EventType, Money};
use time::OffsetDateTime;

use crate::rules::{KeyRow, Subscriber};
use crate::*;

pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(v: i64) -> StoreResult<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|_| Corruption::Time(v))?)
}

fn opt_from_ms(v: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    v.map(from_ms).transpose()
}

pub(crate) fn parse<T: FromStr>(value: String, what: &'static str) -> StoreResult<T> {
    Ok(value.parse().map_err(|_| Corruption::Value { what, value })?)
}

fn json(value: &str, what: &'static str) -> StoreResult<serde_json::Value> {
    Ok(serde_json::from_str(value).map_err(|source| Corruption::Json { what, source })?)
}

fn order_no(value: String, what: &'static str) -> StoreResult<ChannelOrderNo> {
    Ok(ChannelOrderNo::from_channel(&value).ok_or(Corruption::Value { what, value })?)
}

fn money<R: Columns>(row: &R) -> StoreResult<Money> {
    let currency: Currency = parse(row.text("currency")?, "currency")?;
    Ok(Money::new(row.int("amount")?, currency).map_err(Corruption::Amount)?)
}

/// Reads one column of a row, typed. Each backend implements it over its own row type.
pub(crate) trait Columns {
    fn text(&self, column: &'static str) -> StoreResult<String>;
    fn opt_text(&self, column: &'static str) -> StoreResult<Option<String>>;
    fn int(&self, column: &'static str) -> StoreResult<i64>;
    fn opt_int(&self, column: &'static str) -> StoreResult<Option<i64>>;
    fn flag(&self, column: &'static str) -> StoreResult<bool>;
    fn opt_bytes(&self, column: &'static str) -> StoreResult<Option<Vec<u8>>>;
}

/// One column of a row, decoded; a column that does not decode is a corrupt row.
pub(crate) fn column<'r, R, T>(row: &'r R, column: &'static str) -> StoreResult<T>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(row
        .try_get(column)
        .map_err(|source| Corruption::Column { column, source: source.into() })?)
}

/// The JSON list of event types an endpoint subscribes to, as stored (`NULL`: every type).
pub(crate) fn event_types_json(events: Option<&[EventType]>) -> Option<String> {
    events.map(|list| {
        serde_json::Value::from(list.iter().map(|e| e.as_str()).collect::<Vec<_>>()).to_string()
    })
}

fn event_types(stored: Option<String>) -> StoreResult<Option<Vec<EventType>>> {
    stored
        .map(|list| {
            let names: Vec<String> = serde_json::from_str(&list)
                .map_err(|source| Corruption::Json { what: "endpoint events", source })?;
            names.into_iter().map(|n| parse(n, "event type")).collect()
        })
        .transpose()
}

/// A notification's headers, as stored: a JSON list of `[name, value]` pairs.
pub(crate) fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::Value::Array(
        headers
            .iter()
            .map(|(k, v)| serde_json::Value::from(vec![k.as_str(), v.as_str()]))
            .collect(),
    )
    .to_string()
}

pub(crate) const PAYMENT_COLUMNS: &str = "id, merchant_id, merchant_order_no, amount, currency, \
     subject, status, channel, method, account_id, channel_order_no, channel_trade_no, action, \
     amount_refunded, amount_reserved, failure_code, failure_message, client_ip, return_url, payer, \
     metadata, expires_at, paid_at, created_at, updated_at, check_count, livemode";

pub(crate) fn payment<R: Columns>(row: &R) -> StoreResult<PaymentRecord> {
    Ok(PaymentRecord {
        id: parse(row.text("id")?, "payment id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        merchant_order_no: row.text("merchant_order_no")?,
        amount: money(row)?,
        subject: row.text("subject")?,
        status: parse(row.text("status")?, "payment status")?,
        channel: parse(row.text("channel")?, "channel")?,
        method: parse(row.text("method")?, "method")?,
        account_id: parse(row.text("account_id")?, "account id")?,
        channel_order_no: order_no(row.text("channel_order_no")?, "channel_order_no")?,
        channel_trade_no: row.opt_text("channel_trade_no")?,
        action: row.opt_text("action")?.map(|v| json(&v, "action")).transpose()?,
        amount_refunded: row.int("amount_refunded")?,
        amount_reserved: row.int("amount_reserved")?,
        failure_code: row.opt_text("failure_code")?,
        failure_message: row.opt_text("failure_message")?,
        client_ip: row.opt_text("client_ip")?,
        return_url: row.opt_text("return_url")?,
        payer: row.opt_text("payer")?.map(|v| json(&v, "payer")).transpose()?,
        metadata: json(&row.text("metadata")?, "metadata")?,
        expires_at: from_ms(row.int("expires_at")?)?,
        paid_at: opt_from_ms(row.opt_int("paid_at")?)?,
        created_at: from_ms(row.int("created_at")?)?,
        updated_at: from_ms(row.int("updated_at")?)?,
        check_count: row.int("check_count")?,
        livemode: row.flag("livemode")?,
    })
}

pub(crate) const REFUND_COLUMNS: &str = "id, merchant_id, payment_id, merchant_refund_no, \
     channel_refund_no, amount, currency, status, reason, channel_refund_id, failure_code, \
     failure_message, created_at, succeeded_at, updated_at, check_count, livemode, \
     resend_declined_code, action_required_at, attempt_id";

pub(crate) fn refund<R: Columns>(row: &R) -> StoreResult<RefundRecord> {
    Ok(RefundRecord {
        id: parse(row.text("id")?, "refund id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        merchant_refund_no: row.text("merchant_refund_no")?,
        channel_refund_no: order_no(row.text("channel_refund_no")?, "channel_refund_no")?,
        amount: money(row)?,
        status: parse(row.text("status")?, "refund status")?,
        reason: row.opt_text("reason")?,
        channel_refund_id: row.opt_text("channel_refund_id")?,
        failure_code: row.opt_text("failure_code")?,
        failure_message: row.opt_text("failure_message")?,
        created_at: from_ms(row.int("created_at")?)?,
        succeeded_at: opt_from_ms(row.opt_int("succeeded_at")?)?,
        updated_at: from_ms(row.int("updated_at")?)?,
        check_count: row.int("check_count")?,
        livemode: row.flag("livemode")?,
        resend_declined_code: row.opt_text("resend_declined_code")?,
        action_required_at: opt_from_ms(row.opt_int("action_required_at")?)?,
        attempt_id: row.opt_text("attempt_id")?.map(|a| parse(a, "attempt id")).transpose()?,
    })
}

pub(crate) const ATTEMPT_COLUMNS: &str = "id, payment_id, account_id, channel, method, \
     channel_order_no, status, action, channel_trade_no, channel_data, watching, created_at";

pub(crate) fn attempt<R: Columns>(row: &R) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        id: parse(row.text("id")?, "attempt id")?,
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        account_id: parse(row.text("account_id")?, "account id")?,
        channel: parse(row.text("channel")?, "channel")?,
        method: parse(row.text("method")?, "method")?,
        channel_order_no: order_no(row.text("channel_order_no")?, "channel_order_no")?,
        status: parse(row.text("status")?, "attempt status")?,
        action: row.opt_text("action")?.map(|v| json(&v, "action")).transpose()?,
        channel_trade_no: row.opt_text("channel_trade_no")?,
        channel_data: json(&row.text("channel_data")?, "channel_data")?,
        watching: row.flag("watching")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

pub(crate) fn merchant<R: Columns>(row: &R) -> StoreResult<MerchantRecord> {
    Ok(MerchantRecord {
        id: parse(row.text("id")?, "merchant id")?,
        name: row.text("name")?,
        created_at: from_ms(row.int("created_at")?)?,
        duplicate_auto_refund: row.flag("duplicate_auto_refund")?,
    })
}

pub(crate) fn key_owner<R: Columns>(row: &R) -> StoreResult<ApiKeyOwner> {
    Ok(ApiKeyOwner {
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        livemode: row.flag("livemode")?,
    })
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, merchant_id, type, object_id, data, livemode, created_at";

/// The same, from `events e` in a join.
pub(crate) const DUE_EVENT_COLUMNS: &str =
    "e.id, e.merchant_id, e.type, e.object_id, e.data, e.livemode, e.created_at";

pub(crate) fn event<R: Columns>(row: &R) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: parse(row.text("id")?, "event id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        kind: parse(row.text("type")?, "event type")?,
        object_id: row.text("object_id")?,
        data: json(&row.text("data")?, "event data")?,
        livemode: row.flag("livemode")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

pub(crate) const ACCOUNT_COLUMNS: &str = "id, merchant_id, channel, config, livemode, created_at";

pub(crate) fn account<R: Columns>(row: &R) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: parse(row.text("id")?, "account id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        channel: parse(row.text("channel")?, "channel")?,
        config: json(&row.text("config")?, "account config")?,
        livemode: row.flag("livemode")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

pub(crate) const ENDPOINT_COLUMNS: &str =
    "id, merchant_id, url, secret, events, livemode, created_at";

pub(crate) fn endpoint<R: Columns>(row: &R) -> StoreResult<WebhookEndpointRecord> {
    Ok(WebhookEndpointRecord {
        id: row.text("id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        url: row.text("url")?,
        secret: row.text("secret")?,
        events: event_types(row.opt_text("events")?)?,
        livemode: row.flag("livemode")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

/// An endpoint as event routing sees it, from `id, events, livemode, deleted`.
pub(crate) fn subscriber<R: Columns>(row: &R) -> StoreResult<(String, Subscriber)> {
    Ok((
        row.text("id")?,
        Subscriber {
            livemode: row.flag("livemode")?,
            deleted: row.flag("deleted")?,
            events: event_types(row.opt_text("events")?)?,
        },
    ))
}

pub(crate) const KEY_COLUMNS: &str =
    "request_hash, response_status, response_body, locked_until, created_at, object_id";

pub(crate) fn key_row<R: Columns>(row: &R) -> StoreResult<KeyRow> {
    let response = match row.opt_int("response_status")? {
        Some(status) => Some((
            u16::try_from(status).map_err(|_| Corruption::Value {
                what: "response status",
                value: status.to_string(),
            })?,
            row.opt_bytes("response_body")?.unwrap_or_default(),
        )),
        None => None,
    };
    Ok(KeyRow {
        request_hash: row.text("request_hash")?,
        response,
        locked_until: from_ms(row.int("locked_until")?)?,
        created_at: from_ms(row.int("created_at")?)?,
        object_id: row.opt_text("object_id")?,
    })
}

/// A claimed delivery with its event, from the claim's join (the event's columns plus
/// `delivery_id, attempts, window_started_at, url, secret`).
pub(crate) fn due_delivery<R: Columns>(
    row: &R,
    previous_secrets: Vec<String>,
) -> StoreResult<DueDelivery> {
    Ok(DueDelivery {
        delivery_id: row.text("delivery_id")?,
        attempts: row.int("attempts")?,
        window_started_at: from_ms(row.int("window_started_at")?)?,
        event: event(row)?,
        url: row.text("url")?,
        secret: row.text("secret")?,
        previous_secrets,
    })
}

pub(crate) fn delivery_attempt<R: Columns>(row: &R) -> StoreResult<DeliveryAttemptRecord> {
    Ok(DeliveryAttemptRecord {
        at: from_ms(row.int("at")?)?,
        status_code: row.opt_int("status_code")?.and_then(|c| u16::try_from(c).ok()),
        latency_ms: row.int("latency_ms")?,
        error: row.opt_text("error")?,
    })
}

/// A delivery from `id, endpoint_id, url, status, next_attempt_at, delivered_at`; only a pending
/// one has a next attempt.
pub(crate) fn delivery<R: Columns>(
    row: &R,
    attempts: Vec<DeliveryAttemptRecord>,
) -> StoreResult<DeliveryRecord> {
    let status = row.text("status")?;
    Ok(DeliveryRecord {
        next_attempt_at: if status == "pending" {
            Some(from_ms(row.int("next_attempt_at")?)?)
        } else {
            None
        },
        id: row.text("id")?,
        endpoint_id: row.text("endpoint_id")?,
        url: row.text("url")?,
        status,
        attempts,
        delivered_at: opt_from_ms(row.opt_int("delivered_at")?)?,
    })
}

/// A notification's headers from their stored JSON list of `[name, value]` pairs.
fn headers(stored: &str) -> StoreResult<Vec<(String, String)>> {
    Ok(serde_json::from_str(stored)
        .map_err(|source| Corruption::Json { what: "notification headers", source })?)
}

pub(crate) const OPERATOR_TOKEN_COLUMNS: &str = "id, token_hash, label, created_at";

pub(crate) fn operator_token<R: Columns>(row: &R) -> StoreResult<OperatorTokenRecord> {
    Ok(OperatorTokenRecord {
        id: row.text("id")?,
        token_hash: row.text("token_hash")?,
        label: row.text("label")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

pub(crate) const RECEIVER_COLUMNS: &str =
    "id, merchant_id, livemode, name, accounts, registrations, created_at, deleted_at";

pub(crate) fn receiver<R: Columns>(row: &R) -> StoreResult<ReceiverRecord> {
    Ok(ReceiverRecord {
        id: parse(row.text("id")?, "receiver id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        livemode: row.flag("livemode")?,
        name: row.text("name")?,
        accounts: json(&row.text("accounts")?, "receiver accounts")?,
        registrations: json(&row.text("registrations")?, "receiver registrations")?,
        created_at: from_ms(row.int("created_at")?)?,
        deleted_at: opt_from_ms(row.opt_int("deleted_at")?)?,
    })
}

pub(crate) const ADMIN_SESSION_COLUMNS: &str = "id_hash, token_id, created_at, expires_at";

pub(crate) fn admin_session<R: Columns>(row: &R) -> StoreResult<AdminSessionRecord> {
    Ok(AdminSessionRecord {
        id_hash: row.text("id_hash")?,
        token_id: row.text("token_id")?,
        created_at: from_ms(row.int("created_at")?)?,
        expires_at: from_ms(row.int("expires_at")?)?,
    })
}

pub(crate) const OPERATOR_ACTION_COLUMNS: &str =
    "id, token_id, action, payment_id, target, outcome, detail, at";

pub(crate) fn operator_action<R: Columns>(row: &R) -> StoreResult<OperatorActionRecord> {
    Ok(OperatorActionRecord {
        id: row.text("id")?,
        token_id: row.text("token_id")?,
        action: row.text("action")?,
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        target: row.opt_text("target")?,
        outcome: row.text("outcome")?,
        detail: row.text("detail")?,
        at: from_ms(row.int("at")?)?,
    })
}

pub(crate) const INBOUND_COLUMNS: &str =
    "id, channel, account_id, notify_id, headers, body, outcome, received_at";

pub(crate) fn inbound_log<R: Columns>(row: &R) -> StoreResult<InboundLogRecord> {
    Ok(InboundLogRecord {
        id: row.text("id")?,
        channel: parse(row.text("channel")?, "channel")?,
        account_id: parse(row.text("account_id")?, "account id")?,
        notify_id: row.opt_text("notify_id")?,
        headers: headers(&row.text("headers")?)?,
        body: row.opt_bytes("body")?.unwrap_or_default(),
        outcome: row.opt_text("outcome")?,
        received_at: from_ms(row.int("received_at")?)?,
    })
}

/// A count that SQL returned as a signed integer.
fn count<R: Columns>(row: &R, column: &'static str) -> StoreResult<u64> {
    let n = row.int(column)?;
    Ok(u64::try_from(n).map_err(|_| Corruption::Value { what: "count", value: n.to_string() })?)
}

/// From `channel, bucket, status, n`.
pub(crate) fn outcome_count<R: Columns>(row: &R) -> StoreResult<OutcomeCount> {
    Ok(OutcomeCount {
        channel: parse(row.text("channel")?, "channel")?,
        bucket: row.int("bucket")?,
        status: parse(row.text("status")?, "payment status")?,
        count: count(row, "n")?,
    })
}

/// From `channel, code, message, n`.
pub(crate) fn failure_reason<R: Columns>(row: &R) -> StoreResult<FailureReason> {
    Ok(FailureReason {
        channel: parse(row.text("channel")?, "channel")?,
        code: row.text("code")?,
        message: row.text("message")?,
        count: count(row, "n")?,
    })
}

pub(crate) const SETTLEMENT_COLUMNS: &str = "payment_id, merchant_id, livemode, status, splits, \
     auto_settle_at, settled_at, release_no, created_at, updated_at";

pub(crate) fn splits_json(splits: &[SplitRecord]) -> String {
    serde_json::Value::from(
        splits.iter().filter_map(|s| serde_json::to_value(s).ok()).collect::<Vec<_>>(),
    )
    .to_string()
}

pub(crate) fn settlement<R: Columns>(row: &R) -> StoreResult<SettlementRecord> {
    let splits = row.text("splits")?;
    Ok(SettlementRecord {
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        merchant_id: parse(row.text("merchant_id")?, "merchant id")?,
        livemode: row.flag("livemode")?,
        status: parse(row.text("status")?, "settlement status")?,
        splits: serde_json::from_str(&splits)
            .map_err(|source| Corruption::Json { what: "settlement splits", source })?,
        auto_settle_at: opt_from_ms(row.opt_int("auto_settle_at")?)?,
        settled_at: opt_from_ms(row.opt_int("settled_at")?)?,
        release_no: row.opt_text("release_no")?,
        created_at: from_ms(row.int("created_at")?)?,
        updated_at: from_ms(row.int("updated_at")?)?,
    })
}

pub(crate) const LEDGER_COLUMNS: &str = "id, payment_id, account, bucket, kind, amount, created_at";

pub(crate) fn ledger_entry<R: Columns>(row: &R) -> StoreResult<LedgerEntryRecord> {
    Ok(LedgerEntryRecord {
        id: row.text("id")?,
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        account: row.text("account")?,
        bucket: parse(row.text("bucket")?, "ledger bucket")?,
        kind: parse(row.text("kind")?, "ledger kind")?,
        amount: row.int("amount")?,
        created_at: from_ms(row.int("created_at")?)?,
    })
}

pub(crate) fn balance<R: Columns>(row: &R) -> StoreResult<BalanceRecord> {
    Ok(BalanceRecord {
        account: row.text("account")?,
        held: row.int("held")?,
        settled: row.int("settled")?,
    })
}

pub(crate) fn imbalance<R: Columns>(row: &R) -> StoreResult<LedgerImbalance> {
    Ok(LedgerImbalance {
        payment_id: parse(row.text("payment_id")?, "payment id")?,
        amount: row.int("amount")?,
        paid: row.int("paid")?,
        sum: row.int("total")?,
    })
}
