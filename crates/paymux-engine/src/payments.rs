//! Payments: create one at a channel, read and list them, sync one with its channel, close one.
//!
//! A create writes the payment and its first attempt before the channel is called (so a crash
//! after the call leaves a row for the sweeper to settle by query), and takes only a definite
//! refusal from the channel as a failure: an unknown outcome leaves the payment pending. The
//! channel call and its answer are the attempt's (`attempts.rs`), as for every later attempt.

use std::sync::Arc;

use paymux_core::{
    AttemptId, AttemptStatus, Channel, ChannelKind, ChannelOrderNo, CreatePayment, Currency, Money,
    PaymentId, PaymentMethod, PaymentStatus,
};
use paymux_store::{AccountRecord, AttemptRecord, PaymentFilter, PaymentRecord, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use time::Duration;
use utoipa::{IntoParams, ToSchema};

use crate::access::{AnswerKey, Created};
use crate::attempts::Started;
use crate::endpoints::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::objects::{Page, Payment};

const DEFAULT_EXPIRES_IN: i64 = 2 * 60 * 60;
const MIN_EXPIRES_IN: i64 = 60;
const MAX_EXPIRES_IN: i64 = 15 * 24 * 60 * 60;

/// A request to create a payment, as a merchant sends it (`POST /v1/payments`). Every field is
/// optional here so that a missing one gets an error naming it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// The merchant's own order number, unique per merchant.
    #[schema(value_type = String, required = true)]
    pub merchant_order_no: Option<String>,
    /// Minor units (fen), as a JSON integer.
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub amount: Option<Value>,
    #[schema(schema_with = crate::schema::currency, required = true)]
    pub currency: Option<String>,
    #[schema(value_type = String, required = true)]
    pub subject: Option<String>,
    /// Omitted or `null`: routing picks a channel that supports the method.
    #[schema(schema_with = crate::schema::channel_or_null)]
    pub channel: Option<String>,
    #[schema(schema_with = crate::schema::method, required = true)]
    pub method: Option<String>,
    /// Seconds until the payment can no longer be paid (60 s to 15 days; 2 hours when omitted).
    #[schema(value_type = Option<i64>)]
    pub expires_in: Option<Value>,
    #[serde(default)]
    pub payer: Option<Payer>,
    pub client_ip: Option<String>,
    pub return_url: Option<String>,
    /// The merchant's own key-value data, handed back on the payment.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Hold the funds and split them later (docs/settlement.md).
    pub settlement: Option<crate::settlement::SettlementRequest>,
}

/// Who pays: the payer's id at the channel (JSAPI, mini programs) or the code they show
/// (barcode payments).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Payer {
    pub openid: Option<String>,
    pub auth_code: Option<String>,
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
    payer: PayerInputs,
    return_url: Option<String>,
    metadata: Value,
}

/// Who pays and from where, checked against what the method needs.
#[derive(Debug, Default)]
pub(crate) struct PayerInputs {
    pub openid: Option<String>,
    pub auth_code: Option<String>,
    pub client_ip: Option<String>,
}

/// The payer's fields of a create or attempt request, checked for `method`.
pub(crate) fn payer_inputs(
    payer: Option<Payer>,
    client_ip: Option<String>,
    method: PaymentMethod,
) -> Result<PayerInputs, EngineError> {
    let (openid, auth_code) = match payer {
        Some(p) => {
            (text(p.openid, "payer.openid", 128)?, text(p.auth_code, "payer.auth_code", 64)?)
        }
        None => (None, None),
    };
    let client_ip = text(client_ip, "client_ip", 45)?;
    if let Some(ip) = &client_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(invalid("client_ip", "client_ip must be an IPv4 or IPv6 address"));
    }
    match method {
        PaymentMethod::Jsapi | PaymentMethod::MiniProgram if openid.is_none() => {
            return Err(invalid(
                "payer.openid",
                "payer.openid is required for jsapi and mini_program",
            ));
        }
        PaymentMethod::H5 if client_ip.is_none() => {
            return Err(invalid("client_ip", "client_ip is required for h5"));
        }
        PaymentMethod::Barcode if auth_code.is_none() => {
            return Err(invalid("payer.auth_code", "payer.auth_code is required for barcode"));
        }
        _ => {}
    }
    Ok(PayerInputs { openid, auth_code, client_ip })
}

/// Which payments to list (`GET /v1/payments`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentListQuery {
    pub merchant_order_no: Option<String>,
    pub status: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput { field, message: message.into() }
}

pub(crate) fn required<T>(v: Option<T>, field: &'static str) -> Result<T, EngineError> {
    v.ok_or_else(|| invalid(field, format!("{field} is required")))
}

/// An amount in minor units: a JSON integer, positive, within what channels accept.
pub fn parse_amount(
    v: &Value,
    currency: Currency,
    field: &'static str,
) -> Result<Money, EngineError> {
    let minor = v.as_i64().filter(|_| v.is_i64() || v.is_u64()).ok_or_else(|| {
        invalid(field, format!("{field} must be an integer number of fen, got {v}"))
    })?;
    Money::new(minor, currency).map_err(|e| invalid(field, e.to_string()))
}

/// A free-text field: absent, or non-empty, at most `max` characters, no control characters.
pub(crate) fn text(
    v: Option<String>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, EngineError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Err(invalid(field, format!("{field} must not be empty"))),
        Some(s) if s.chars().count() > max => {
            Err(invalid(field, format!("{field} must be at most {max} characters")))
        }
        Some(s) if s.chars().any(char::is_control) => {
            Err(invalid(field, format!("{field} must not contain control characters")))
        }
        Some(s) => Ok(Some(s)),
    }
}

impl CreatePaymentRequest {
    fn validate(self) -> Result<NewPayment, EngineError> {
        let merchant_order_no =
            required(text(self.merchant_order_no, "merchant_order_no", 64)?, "merchant_order_no")?;
        let currency: Currency = required(self.currency, "currency")?
            .parse()
            .map_err(|e: paymux_core::MoneyError| invalid("currency", e.to_string()))?;
        let amount = parse_amount(&required(self.amount, "amount")?, currency, "amount")?;
        // 127: the shortest limit among the channels (WeChat's description).
        let subject = required(text(self.subject, "subject", 127)?, "subject")?;
        let channel = self
            .channel
            .map(|c| c.parse::<ChannelKind>())
            .transpose()
            .map_err(|e| invalid("channel", e))?;
        let method: PaymentMethod =
            required(self.method, "method")?.parse().map_err(|e: String| invalid("method", e))?;
        let expires_in = match self.expires_in {
            None => DEFAULT_EXPIRES_IN,
            Some(v) => v
                .as_i64()
                .filter(|s| (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(s))
                .ok_or_else(|| {
                    invalid(
                        "expires_in",
                        format!(
                            "expires_in must be whole seconds from {MIN_EXPIRES_IN} to \
                                 {MAX_EXPIRES_IN}"
                        ),
                    )
                })?,
        };
        let payer = payer_inputs(self.payer, self.client_ip, method)?;
        let return_url = text(self.return_url, "return_url", 256)?;
        if let Some(u) = &return_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(invalid("return_url", "return_url must be an http(s) URL"));
        }
        let metadata = match self.metadata {
            None => json!({}),
            Some(Value::Object(m))
                if m.len() <= 20 && Value::Object(m.clone()).to_string().len() <= 4096 =>
            {
                Value::Object(m)
            }
            Some(_) => {
                return Err(invalid(
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
            payer,
            return_url,
            metadata,
        })
    }
}

impl Engine {
    /// Creates a payment at a channel and returns it with the payer's next step (`action`).
    ///
    /// With `idempotency_key` (claimed by the caller's idempotency layer), the key is bound to the
    /// payment in the transaction that writes it, so a retry after a crash finds it, and the
    /// answer is kept for it with the channel's answer where it can be ([`Created`]).
    pub async fn create_payment(
        &self,
        caller: Caller,
        mut request: CreatePaymentRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Created<Payment>, EngineError> {
        let hold = request.settlement.take();
        let req = request.validate()?;
        let (account, adapter) = self.route(caller, req.channel, req.method).await?;
        if let Some(code) =
            req.payer.auth_code.as_deref().filter(|_| req.method == PaymentMethod::Barcode)
        {
            crate::barcode::check_auth_code(&*adapter, code)?;
        }
        let hold = match hold {
            Some(h) => Some(self.prepare_hold(caller, &*adapter, h).await?),
            None => None,
        };
        let now = crate::engine::now_ms();
        let payment_id = PaymentId::new();
        let attempt_id = AttemptId::new();
        let channel_order_no = ChannelOrderNo::of_attempt(attempt_id);
        let p = &req.payer;
        let payer = (p.openid.is_some() || p.auth_code.is_some())
            .then(|| json!({"openid": p.openid, "auth_code": p.auth_code.as_deref().map(crate::barcode::stored_auth_code)}));
        let record = PaymentRecord {
            id: payment_id,
            merchant_id: caller.merchant,
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
            client_ip: req.payer.client_ip.clone(),
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
            id: attempt_id,
            payment_id,
            account_id: account.id,
            channel: account.channel,
            method: req.method,
            channel_order_no: channel_order_no.clone(),
            status: AttemptStatus::Pending,
            action: None,
            channel_trade_no: None,
            channel_data: json!({}),
            watching: true,
            created_at: now,
        };
        // Rule 1: the payment and its attempt (and a held payment's settlement) are committed
        // before the channel is called, in one transaction.
        let settlement = hold.as_ref().map(|h| h.record(&record));
        let first_check = if req.method == PaymentMethod::Barcode {
            crate::barcode::first_check(self, &*adapter, now)
        } else {
            now + self.config.sweeper.first_check_after
        };
        match self
            .store
            .insert_payment(&record, &attempt, settlement.as_ref(), first_check, idempotency_key)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Duplicate("merchant_order_no")) => {
                let existing =
                    self.store.payment_by_order_no(caller.merchant, &req.merchant_order_no).await?;
                return Err(duplicate_number(
                    caller,
                    "merchant_order_no",
                    &req.merchant_order_no,
                    existing.map(|p| (p.id.to_string(), p.livemode)),
                ));
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
            notify_url: self.notify_url(account.channel, account.id),
            return_url: req.return_url,
            client_ip: req.payer.client_ip,
            payer_openid: req.payer.openid,
            auth_code: req.payer.auth_code,
            hold: settlement.is_some() && adapter.holds_funds(),
        };
        let settlement = settlement.as_ref().map(crate::settlement::Settlement::from);
        if req.method == PaymentMethod::Barcode {
            let mut object = crate::barcode::pay(self, adapter, record, attempt, call).await?;
            object.settlement = settlement;
            return Ok(Created::unkept(object));
        }
        let started = Started {
            payment: record,
            attempt,
            others: Vec::new(),
            settlement,
            key: AnswerKey::of(caller, idempotency_key),
        };
        self.start_attempt(adapter, started, call).await
    }

    /// Picks the channel account: the one asked for, or the first that supports the method.
    pub(crate) async fn route(
        &self,
        caller: Caller,
        channel: Option<ChannelKind>,
        method: PaymentMethod,
    ) -> Result<(AccountRecord, Arc<dyn Channel>), EngineError> {
        let accounts = self.store.channel_accounts(caller.merchant).await?;
        let field = if channel.is_some() { "channel" } else { "method" };
        let mut asked_but_unsupported = false;
        let mut other_mode = None;
        for account in accounts {
            if channel.is_some_and(|c| c != account.channel) {
                continue;
            }
            // A test key never reaches a live account (and a live key never a sandbox one).
            if !caller.sees(account.livemode) {
                other_mode.get_or_insert(account.channel);
                continue;
            }
            let adapter = self.adapter(&account)?;
            if adapter.supports(method) {
                return Ok((account, adapter));
            }
            asked_but_unsupported = true;
        }
        if let Some(other) = other_mode.filter(|_| !asked_but_unsupported) {
            let (key, account) = if caller.livemode { ("live", "test") } else { ("test", "live") };
            return Err(EngineError::Rejected {
                code: "livemode_mismatch",
                field: Some(field),
                message: format!(
                    "a {key} API key cannot use this merchant's {account} {other} account: test \
                     keys never move live money, and live keys never use a sandbox. Use a \
                     {account} key (sk_{account}_...), or add a {key} {other} account"
                ),
            });
        }
        let message = match (channel, asked_but_unsupported) {
            (Some(c), true) => format!("channel {c} does not support method {method}"),
            (Some(c), false) => format!("this merchant has no {c} account"),
            (None, _) => format!("no channel account of this merchant supports method {method}"),
        };
        Err(EngineError::Rejected {
            code: "channel_unavailable_for_method",
            field: Some(field),
            message,
        })
    }

    /// The caller's payment of its mode, by its id as text.
    pub async fn payment_record(
        &self,
        caller: Caller,
        id: &str,
    ) -> Result<PaymentRecord, EngineError> {
        let not_found = || EngineError::NotFound { what: "payment" };
        let id: PaymentId = id.parse().map_err(|_| not_found())?;
        self.store
            .payment(caller.merchant, id)
            .await?
            .filter(|p| caller.sees(p.livemode))
            .ok_or_else(not_found)
    }

    /// The caller's payment of its mode.
    pub async fn payment(&self, caller: Caller, id: &str) -> Result<Payment, EngineError> {
        self.payment_object(&self.payment_record(caller, id).await?).await
    }

    /// The caller's payments of its mode, newest first.
    pub async fn list_payments(
        &self,
        caller: Caller,
        q: PaymentListQuery,
    ) -> Result<Page<Payment>, EngineError> {
        let status = q
            .status
            .map(|s| s.parse::<PaymentStatus>())
            .transpose()
            .map_err(|e| invalid("status", e))?;
        let before =
            q.cursor.map(|c| c.parse::<PaymentId>()).transpose().map_err(|_| {
                invalid("cursor", "cursor must be a payment id from a previous page")
            })?;
        let limit = q.limit.unwrap_or(20).clamp(1, 100);
        let filter = PaymentFilter {
            livemode: caller.livemode,
            merchant_order_no: q.merchant_order_no,
            status,
            before,
            limit,
        };
        let rows = self.store.list_payments(caller.merchant, &filter).await?;
        let mut data = Vec::with_capacity(rows.len());
        for p in &rows {
            data.push(self.payment_object(p).await?);
        }
        Ok(page(data, limit, |p| p.id.clone()))
    }

    /// Asks the payment's channel now and applies its truth.
    pub async fn sync(&self, caller: Caller, id: &str) -> Result<Payment, EngineError> {
        let p = self.payment_record(caller, id).await?;
        let after = self.sync_payment(&p).await?;
        self.payment_object(&after).await
    }

    /// Closes a pending payment at its channel.
    pub async fn close(&self, caller: Caller, id: &str) -> Result<Payment, EngineError> {
        let p = self.payment_record(caller, id).await?;
        let after = self.close_payment(&p).await?;
        self.payment_object(&after).await
    }
}

/// A page of `limit` asked for: a full page may have more after it.
pub(crate) fn page<T>(data: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next = (data.len() == limit as usize).then(|| data.last().map(&cursor)).flatten();
    Page::new(data, next.is_some(), next)
}

/// A merchant number already used: the caller whose first call was lost learns which object holds
/// it, unless that object belongs to the other mode (numbers are unique across modes, but another
/// mode's object stays unseen).
pub(crate) fn duplicate_number(
    caller: Caller,
    field: &'static str,
    number: &str,
    existing: Option<(String, bool)>,
) -> EngineError {
    let kind = if field == "merchant_order_no" { "payment" } else { "refund" };
    let mut message = format!("a {kind} with {field} {number:?} already exists");
    let mut object = None;
    if let Some((id, livemode)) = existing {
        if caller.sees(livemode) {
            object = Some(id);
        } else {
            message = format!(
                "{field} {number:?} is used by a {kind} made with a {} key; {kind} numbers are \
                 unique across test and live",
                if livemode { "live" } else { "test" }
            );
        }
    }
    EngineError::DuplicateNumber { field, message, object }
}
