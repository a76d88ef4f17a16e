//! `/v1/payments`: create, read, list, sync with the channel, close.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paymux_core::{
    Channel, ChannelError, ChannelKind, ChannelOrderNo, ChannelPayment, CreatePayment, Currency,
    Money, PaymentId, PaymentMethod, PaymentStatus,
};
use paymux_store::{AccountRecord, AttemptRecord, PaymentFilter, PaymentRecord, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::IdempotencyKey;
use paymux_engine::Engine;
use paymux_engine::apply_payment;
use paymux_engine::objects;

const DEFAULT_EXPIRES_IN: i64 = 2 * 60 * 60;
const MIN_EXPIRES_IN: i64 = 60;
const MAX_EXPIRES_IN: i64 = 15 * 24 * 60 * 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentBody {
    merchant_order_no: Option<String>,
    amount: Option<Value>,
    currency: Option<String>,
    subject: Option<String>,
    channel: Option<String>,
    method: Option<String>,
    expires_in: Option<Value>,
    #[serde(default)]
    payer: Option<PayerBody>,
    client_ip: Option<String>,
    return_url: Option<String>,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayerBody {
    openid: Option<String>,
    auth_code: Option<String>,
}

/// A validated create request.
#[derive(Debug)]
struct NewPayment {
    merchant_order_no: String,
    amount: Money,
    subject: String,
    channel: Option<ChannelKind>,
    method: PaymentMethod,
    expires_in: i64,
    openid: Option<String>,
    auth_code: Option<String>,
    client_ip: Option<String>,
    return_url: Option<String>,
    metadata: Value,
}

fn required<T>(v: Option<T>, param: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        ApiError::invalid_param(param, format!("{param} is required")).with_param(param)
    })
}

/// An amount in minor units: a JSON integer, positive, within what channels accept.
pub fn parse_amount(v: &Value, currency: Currency, param: &str) -> Result<Money, ApiError> {
    let minor = v.as_i64().filter(|_| v.is_i64() || v.is_u64()).ok_or_else(|| {
        ApiError::invalid_param(param, format!("{param} must be an integer number of fen, got {v}"))
    })?;
    Money::new(minor, currency).map_err(|e| ApiError::invalid_param(param, e.to_string()))
}

fn text(v: Option<String>, param: &str, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => {
            Err(ApiError::invalid_param(param, format!("{param} must not be empty")))
        }
        Some(s) if s.chars().count() > max => {
            Err(ApiError::invalid_param(param, format!("{param} must be at most {max} characters")))
        }
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::invalid_param(
            param,
            format!("{param} must not contain control characters"),
        )),
        Some(s) => Ok(Some(s)),
    }
}

impl CreatePaymentBody {
    fn validate(self) -> Result<NewPayment, ApiError> {
        let merchant_order_no =
            required(text(self.merchant_order_no, "merchant_order_no", 64)?, "merchant_order_no")?;
        let currency_text = required(self.currency, "currency")?;
        let currency: Currency = currency_text.parse().map_err(|e: paymux_core::MoneyError| {
            ApiError::invalid_param("currency", e.to_string())
        })?;
        let amount = parse_amount(&required(self.amount, "amount")?, currency, "amount")?;
        // 127: the shortest limit among the channels (WeChat's description).
        let subject = required(text(self.subject, "subject", 127)?, "subject")?;
        let channel = self
            .channel
            .map(|c| c.parse::<ChannelKind>())
            .transpose()
            .map_err(|e| ApiError::invalid_param("channel", e))?;
        let method: PaymentMethod = required(self.method, "method")?
            .parse()
            .map_err(|e: String| ApiError::invalid_param("method", e))?;
        let expires_in = match self.expires_in {
            None => DEFAULT_EXPIRES_IN,
            Some(v) => v.as_i64().filter(|s| (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(s)).ok_or_else(
                || {
                    ApiError::invalid_param(
                        "expires_in",
                        format!("expires_in must be whole seconds from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}"),
                    )
                },
            )?,
        };
        let (openid, auth_code) = match self.payer {
            Some(p) => {
                (text(p.openid, "payer.openid", 128)?, text(p.auth_code, "payer.auth_code", 64)?)
            }
            None => (None, None),
        };
        let client_ip = text(self.client_ip, "client_ip", 45)?;
        if let Some(ip) = &client_ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(ApiError::invalid_param(
                "client_ip",
                "client_ip must be an IPv4 or IPv6 address",
            ));
        }
        let return_url = text(self.return_url, "return_url", 256)?;
        if let Some(u) = &return_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ApiError::invalid_param("return_url", "return_url must be an http(s) URL"));
        }
        match method {
            PaymentMethod::Jsapi | PaymentMethod::MiniProgram if openid.is_none() => {
                return Err(ApiError::invalid_param(
                    "payer.openid",
                    "payer.openid is required for jsapi and mini_program",
                ));
            }
            PaymentMethod::H5 if client_ip.is_none() => {
                return Err(ApiError::invalid_param("client_ip", "client_ip is required for h5"));
            }
            PaymentMethod::Barcode if auth_code.is_none() => {
                return Err(ApiError::invalid_param(
                    "payer.auth_code",
                    "payer.auth_code is required for barcode",
                ));
            }
            _ => {}
        }
        let metadata = match self.metadata {
            None => json!({}),
            Some(Value::Object(m))
                if m.len() <= 20 && Value::Object(m.clone()).to_string().len() <= 4096 =>
            {
                Value::Object(m)
            }
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "metadata",
                    "metadata must be a JSON object of at most 20 keys and 4 KiB",
                ));
            }
        };
        Ok(NewPayment {
            merchant_order_no,
            amount,
            subject,
            channel,
            method,
            expires_in,
            openid,
            auth_code,
            client_ip,
            return_url,
            metadata,
        })
    }
}

/// Picks the channel account: the one asked for, or the first that supports the method.
async fn route(
    state: &Engine,
    merchant: Merchant,
    channel: Option<ChannelKind>,
    method: PaymentMethod,
) -> Result<(AccountRecord, Arc<dyn Channel>), ApiError> {
    let accounts = state.store.channel_accounts(merchant.id).await?;
    let mut asked_but_unsupported = false;
    let mut other_mode = None;
    for account in accounts {
        if channel.is_some_and(|c| c != account.channel) {
            continue;
        }
        // A test key never reaches a live account (and a live key never a sandbox one).
        if !merchant.sees(account.livemode) {
            other_mode.get_or_insert(account.channel);
            continue;
        }
        let adapter = state.adapter(&account)?;
        if adapter.supports(method) {
            return Ok((account, adapter));
        }
        asked_but_unsupported = true;
    }
    if let Some(other) = other_mode.filter(|_| !asked_but_unsupported) {
        let (key, account) = if merchant.livemode { ("live", "test") } else { ("test", "live") };
        return Err(ApiError::invalid(
            "livemode_mismatch",
            format!(
                "a {key} API key cannot use this merchant's {account} {other} account: test keys \
                 never move live money, and live keys never use a sandbox. Use a {account} key \
                 (sk_{account}_...), or add a {key} {other} account"
            ),
        )
        .with_param(if channel.is_some() { "channel" } else { "method" }));
    }
    let msg = match (channel, asked_but_unsupported) {
        (Some(c), true) => format!("channel {c} does not support method {method}"),
        (Some(c), false) => format!("this merchant has no {c} account"),
        (None, _) => format!("no channel account of this merchant supports method {method}"),
    };
    Err(ApiError::invalid("channel_unavailable_for_method", msg).with_param(if channel.is_some() {
        "channel"
    } else {
        "method"
    }))
}

pub async fn create(
    State(state): State<Engine>,
    merchant: Merchant,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreatePaymentBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = body.validate()?;
    let (account, adapter) = route(&state, merchant, req.channel, req.method).await?;
    let now = OffsetDateTime::now_utc();
    let payment_id = PaymentId::new();
    let channel_order_no = ChannelOrderNo::generate();
    let payer = (req.openid.is_some() || req.auth_code.is_some())
        .then(|| json!({"openid": req.openid, "auth_code": req.auth_code.as_ref().map(|_| "***")}));
    let mut record = PaymentRecord {
        id: payment_id,
        merchant_id: merchant.id,
        merchant_order_no: req.merchant_order_no.clone(),
        amount: req.amount,
        subject: req.subject.clone(),
        status: PaymentStatus::Pending,
        channel: account.channel,
        method: req.method,
        account_id: account.id,
        channel_order_no: channel_order_no.clone(),
        channel_trade_no: None,
        action: None,
        amount_refunded: 0,
        amount_reserved: 0,
        failure_code: None,
        failure_message: None,
        client_ip: req.client_ip.clone(),
        return_url: req.return_url.clone(),
        payer,
        metadata: req.metadata,
        expires_at: now + Duration::seconds(req.expires_in),
        paid_at: None,
        created_at: now,
        updated_at: now,
        check_count: 0,
        livemode: account.livemode,
    };
    let attempt = AttemptRecord {
        id: format!("att_{}", channel_order_no.as_str().to_ascii_lowercase()),
        payment_id,
        account_id: account.id,
        channel: account.channel,
        channel_order_no: channel_order_no.clone(),
        channel_data: json!({}),
        created_at: now,
    };
    // Rule 1: the payment and its attempt are committed before the channel is called.
    let first_check = now + state.config.sweeper.first_check_after;
    let key = IdempotencyKey::of(&idempotency_key);
    match state.store.insert_payment(&record, &attempt, first_check, key).await {
        Ok(()) => {}
        Err(StoreError::Duplicate("merchant_order_no")) => {
            let mut err = ApiError::conflict(
                "duplicate_merchant_order_no",
                format!(
                    "a payment with merchant_order_no {:?} already exists",
                    req.merchant_order_no
                ),
            )
            .with_param("merchant_order_no");
            // The merchant whose first call was lost finds what it created.
            if let Some(existing) =
                state.store.payment_by_order_no(merchant.id, &req.merchant_order_no).await?
            {
                // Numbers are unique per merchant across modes; another mode's object stays unseen.
                if merchant.sees(existing.livemode) {
                    err = err.with_object(existing.id);
                } else {
                    err.body.message = format!(
                        "merchant_order_no {:?} is used by a payment made with a {} key; order \
                         numbers are unique across test and live",
                        req.merchant_order_no,
                        if existing.livemode { "live" } else { "test" }
                    );
                }
            }
            return Err(err);
        }
        Err(e) => return Err(e.into()),
    }
    let call = CreatePayment {
        channel_order_no,
        amount: req.amount,
        subject: req.subject,
        method: req.method,
        created_at: now,
        expires_at: record.expires_at,
        notify_url: state.notify_url(account.channel, account.id),
        return_url: req.return_url,
        client_ip: req.client_ip,
        payer_openid: req.openid,
        auth_code: req.auth_code,
    };
    // From the channel call to the commit of its answer runs on its own task: a client that
    // hangs up cannot cut it in the middle.
    let task = tokio::spawn(async move {
        let outcome = adapter.create(&call).await;
        paymux_engine::failpoint::hit(paymux_engine::failpoint::AFTER_CHANNEL_CREATE).await;
        match outcome {
            Ok(created) => {
                let action = serde_json::to_value(&created.action)
                    .map_err(|e| ApiError::internal(format!("action: {e}")))?;
                state
                    .store
                    .record_created(payment_id, &action, &created.channel_data)
                    .await
                    .map_err(|e| ApiError::store_after_channel(e, payment_id))?;
                record.action = Some(action);
                Ok((StatusCode::CREATED, Json(objects::payment(&record))))
            }
            Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                // A definite refusal: nothing exists at the channel, so the payment failed.
                let (code, message) = match &e {
                    ChannelError::Declined { code, message } => (code.clone(), message.clone()),
                    other => ("invalid_request".to_owned(), other.to_string()),
                };
                apply_payment(&*state.store, &record, &ChannelPayment::Failed { code, message })
                    .await
                    .map_err(|s| ApiError::store_after_channel(s, payment_id))?;
                Err(ApiError::channel(e).with_object(payment_id))
            }
            Err(e) => {
                // Unknown: the payment stays pending; the sweeper (or a sync) settles it by query.
                tracing::warn!(payment = %payment_id, error = %e, "create outcome unknown; payment stays pending");
                Err(ApiError::channel(e).with_object(payment_id))
            }
        }
    });
    task.await.map_err(|_| {
        ApiError::internal(format!("payment {payment_id} was interrupted; it stays pending"))
    })?
}

async fn load(state: &Engine, merchant: Merchant, id: &str) -> Result<PaymentRecord, ApiError> {
    let id: PaymentId = id.parse().map_err(|_| ApiError::not_found("payment"))?;
    state
        .store
        .payment(merchant.id, id)
        .await?
        .filter(|p| merchant.sees(p.livemode))
        .ok_or_else(|| ApiError::not_found("payment"))
}

pub async fn get(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(objects::payment(&load(&state, merchant, &id).await?)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    merchant_order_no: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .map(|s| s.parse::<PaymentStatus>())
        .transpose()
        .map_err(|e| ApiError::invalid_param("status", e))?;
    let before = q.cursor.map(|c| c.parse::<PaymentId>()).transpose().map_err(|_| {
        ApiError::invalid_param("cursor", "cursor must be a payment id from a previous page")
    })?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let filter = PaymentFilter {
        livemode: merchant.livemode,
        merchant_order_no: q.merchant_order_no,
        status,
        before,
        limit,
    };
    let rows = state.store.list_payments(merchant.id, &filter).await?;
    let next =
        (rows.len() == limit as usize).then(|| rows.last().map(|p| p.id.to_string())).flatten();
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(objects::payment).collect::<Vec<_>>(),
        "has_more": next.is_some(),
        "next_cursor": next,
    })))
}

pub async fn sync(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = load(&state, merchant, &id).await?;
    Ok(Json(objects::payment(&state.sync_payment(&p).await?)))
}

pub async fn close(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = load(&state, merchant, &id).await?;
    Ok(Json(objects::payment(&state.close_payment(&p).await?)))
}
