//! [`UnionpayChannel`]: the [`Channel`] adapter over HTTP.
//!
//! Requests are signed form POSTs; answers are raw `k=v&` bodies, trusted only once they verify
//! through the `signPubKeyCert` they carry. Anything else leaves the outcome unknown.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, BarcodePaid, BarcodeSchedule, Channel, ChannelError, ChannelKind,
    ChannelOrderNo, ChannelPayment, ChannelRefund, CreatePayment, CreatedPayment, InboundRequest,
    Money, Notification, NotificationAck, PaymentAction, PaymentMethod, PaymentRef, RefundRequest,
};
use paymux_crypto::{Certificate, RsaPrivateKey};
use serde_json::json;
use time::OffsetDateTime;

use crate::UnionpayAccountConfig;
use crate::protocol::{
    self, ACCESS_TYPE_MERCHANT, APP_TRANS_PATH, BACK_TRANS_PATH, BIZ_TYPE_GATEWAY, BIZ_TYPE_NONE,
    CHANNEL_TYPE_MOBILE, CHANNEL_TYPE_PC, CURRENCY_CNY, ENCODING, FRONT_TRANS_PATH, Fields,
    MerchantSigner, NOTIFY_ACK, QUERY_TRANS_PATH, TXN_SUB_TYPE_CONSUME, TXN_SUB_TYPE_NONE,
    TXN_SUB_TYPE_QR, TXN_TYPE_CONSUME, TXN_TYPE_CONSUME_CANCEL, TXN_TYPE_QUERY, TXN_TYPE_REFUND,
    UnionpayVerifier, VERSION,
};

/// The source of "now" for expiry checks and certificate validity; injectable for tests.
mod barcode;

pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The content type of a request, as the ACP SDK sends it.
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=UTF-8";

/// A full refund sent on the payment's Beijing day before this hour is a consume cancel: a
/// cancel is accepted only before that day's settlement, and this keeps a margin before
/// UnionPay's day cut-off (commonly given as 23:00).
const CANCEL_BEFORE_HOUR: u8 = 22;

/// One UnionPay merchant's adapter. Keys and certificates are parsed once, in
/// [`UnionpayChannel::new`].
#[derive(Clone)]
pub struct UnionpayChannel {
    mer_id: String,
    gateway_url: String,
    signer: MerchantSigner,
    verifier: UnionpayVerifier,
    http: reqwest::Client,
    clock: Clock,
}

impl fmt::Debug for UnionpayChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionpayChannel")
            .field("mer_id", &self.mer_id)
            .field("gateway_url", &self.gateway_url)
            .field("cert_id", &self.signer.cert_id())
            .finish_non_exhaustive()
    }
}

/// What a query says about one transaction (a consume, refund or cancel).
enum Status {
    /// `respCode=34`: UnionPay holds no such transaction (not opened yet, or not arrived).
    NotFound,
    /// `origRespCode` 03/04/05: still in process.
    InProcess,
    Succeeded {
        query_id: String,
        amount: Money,
        at: Option<OffsetDateTime>,
    },
    Failed {
        code: String,
        message: String,
    },
}

impl UnionpayChannel {
    /// Parses the keys and certificates and builds the HTTP client once. `timeout` bounds each
    /// whole call; a call that runs out of it is `Unknown { timed_out: true }`.
    pub fn new(config: &UnionpayAccountConfig, timeout: Duration) -> Result<Self, ChannelError> {
        let invalid = |what: &str, e: &dyn fmt::Display| {
            ChannelError::invalid(format!("unionpay: {what}: {e}"))
        };
        if config.mer_id.len() != 15 || !config.mer_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::invalid("unionpay: mer_id must be 15 digits"));
        }
        let key = RsaPrivateKey::load(&config.merchant_private_key)
            .map_err(|e| invalid("merchant_private_key", &e))?;
        let cert = Certificate::from_pem(&config.merchant_certificate)
            .map_err(|e| invalid("merchant_certificate", &e))?;
        let signer =
            MerchantSigner::new(key, &cert).map_err(|e| invalid("merchant_certificate", &e))?;
        let root = Certificate::from_pem(&config.root_certificate)
            .map_err(|e| invalid("root_certificate", &e))?;
        let intermediate = Certificate::from_pem(&config.intermediate_certificate)
            .map_err(|e| invalid("intermediate_certificate", &e))?;
        if config.signer_owner.is_empty() {
            return Err(ChannelError::invalid("unionpay: signer_owner is empty"));
        }
        let verifier = UnionpayVerifier::new(root, intermediate, config.signer_owner.clone());
        let url =
            reqwest::Url::parse(&config.gateway_url).map_err(|e| invalid("gateway_url", &e))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(ChannelError::invalid(
                "unionpay: gateway_url must be an http(s) URL without a query",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| invalid("HTTP client", &e))?;
        Ok(Self {
            mer_id: config.mer_id.clone(),
            gateway_url: config.gateway_url.trim_end_matches('/').to_owned(),
            signer,
            verifier,
            http,
            clock: Arc::new(OffsetDateTime::now_utc),
        })
    }

    /// Replaces the clock (expiry checks, certificate validity of answers and notifications).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn mer_id(&self) -> &str {
        &self.mer_id
    }

    /// The `certId` sent with every request.
    pub fn cert_id(&self) -> &str {
        self.signer.cert_id()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// The fields every transaction carries, `certId`, `signMethod` and `signature` aside.
    fn common(
        &self,
        txn_type: &str,
        txn_sub_type: &str,
        biz_type: &str,
        channel_type: Option<&str>,
        order_id: &str,
        txn_time: &str,
    ) -> Fields {
        let mut f = Fields::new();
        for (k, v) in [
            ("version", VERSION),
            ("encoding", ENCODING),
            ("txnType", txn_type),
            ("txnSubType", txn_sub_type),
            ("bizType", biz_type),
            ("accessType", ACCESS_TYPE_MERCHANT),
            ("merId", self.mer_id.as_str()),
            ("orderId", order_id),
            ("txnTime", txn_time),
        ] {
            f.insert(k.to_owned(), v.to_owned());
        }
        if let Some(c) = channel_type {
            f.insert("channelType".to_owned(), c.to_owned());
        }
        f
    }

    fn sign(&self, what: &str, fields: Fields) -> Result<Fields, ChannelError> {
        self.signer.sign(fields).map_err(|e| ChannelError::invalid(format!("unionpay {what}: {e}")))
    }

    /// Sends a signed request and returns the answer, verified. Every transport failure,
    /// non-200 status, unreadable or unverifiable answer is `Unknown`: the request may have been
    /// executed, and only a later query can tell.
    async fn call(&self, what: &str, path: &str, fields: Fields) -> Result<Fields, ChannelError> {
        let signed = self.sign(what, fields)?;
        let order_id = signed.get("orderId").cloned().unwrap_or_default();
        let sent = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
            .body(protocol::encode_form(&signed))
            .send()
            .await;
        let response = sent.map_err(|e| transport_error(what, e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            tracing::warn!(what, %status, "unionpay answered a non-200 status");
            return Err(ChannelError::unknown(format!("unionpay {what}: HTTP {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| transport_error(what, e))?;
        let body = std::str::from_utf8(&bytes)
            .map_err(|_| ChannelError::unknown(format!("unionpay {what}: answer is not UTF-8")))?;
        let answer = protocol::parse_answer(body)
            .map_err(|e| ChannelError::unknown(format!("unionpay {what}: {e}")))?;
        if let Err(e) = self.verifier.verify(&answer, (self.clock)()) {
            // The code is read only to make the log useful: nothing else of it is trusted.
            let hint = describe(&answer);
            tracing::warn!(what, error = %e, answer = %hint, "unionpay answer not trusted");
            return Err(ChannelError::unknown(format!("unionpay {what}: {e} ({hint})")));
        }
        for (field, ours) in [("merId", self.mer_id.as_str()), ("orderId", order_id.as_str())] {
            match answer.get(field) {
                Some(echoed) if !echoed.is_empty() && echoed != ours => {
                    return Err(ChannelError::unknown(format!(
                        "unionpay {what}: answer is for {field} {echoed:?}, not {ours:?}"
                    )));
                }
                _ => {}
            }
        }
        tracing::debug!(what, answer = %describe(&answer), "unionpay answered");
        Ok(answer)
    }

    /// Queries one transaction by `orderId` + `txnTime`.
    async fn query_status(
        &self,
        what: &str,
        order_id: &str,
        txn_time: OffsetDateTime,
    ) -> Result<Status, ChannelError> {
        let fields = self.common(
            TXN_TYPE_QUERY,
            TXN_SUB_TYPE_NONE,
            BIZ_TYPE_NONE,
            None,
            order_id,
            &protocol::format_txn_time(txn_time),
        );
        let a = self.call(what, QUERY_TRANS_PATH, fields).await?;
        match field(&a, "respCode") {
            Some("00") => {}
            Some("34") => return Ok(Status::NotFound),
            // 03/04/05: the channel answered, and its answer is "in process, ask again": the
            // same "not yet" as an origRespCode of 03/04/05, so the payment reads as pending.
            Some("03" | "04" | "05") => return Ok(Status::InProcess),
            // Anything else: the query itself failed; the outcome is unknown.
            _ => return Err(ChannelError::unknown(format!("unionpay {what}: {}", describe(&a)))),
        }
        match field(&a, "origRespCode") {
            Some("00" | "A6") => {
                let query_id = field(&a, "queryId").ok_or_else(|| {
                    ChannelError::unknown(format!("unionpay {what}: success without queryId"))
                })?;
                let amount = field(&a, "txnAmt")
                    .ok_or_else(|| "no txnAmt".to_owned())
                    .and_then(|t| protocol::parse_txn_amt(t).map_err(|e| e.to_string()))
                    .map_err(|e| ChannelError::unknown(format!("unionpay {what}: {e}")))?;
                Ok(Status::Succeeded {
                    query_id: query_id.to_owned(),
                    amount,
                    at: trace_time(&a, txn_time),
                })
            }
            Some("03" | "04" | "05") => Ok(Status::InProcess),
            Some(code) => Ok(Status::Failed {
                code: code.to_owned(),
                message: field(&a, "origRespMsg").unwrap_or_default().to_owned(),
            }),
            None => Err(ChannelError::unknown(format!(
                "unionpay {what}: respCode 00 without origRespCode"
            ))),
        }
    }
}

/// A non-empty field of a message.
fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// `respCode` and `respMsg`, for logs and error reasons.
fn describe(fields: &Fields) -> String {
    format!(
        "respCode {} {}",
        field(fields, "respCode").unwrap_or("(none)"),
        field(fields, "respMsg").unwrap_or_default()
    )
}

/// When a transaction completed, from its `traceTime`. Informational (`paid_at`): an unreadable
/// one is dropped with a warning rather than failing the whole message.
fn trace_time(fields: &Fields, txn_time: OffsetDateTime) -> Option<OffsetDateTime> {
    let v = field(fields, "traceTime")?;
    match protocol::resolve_trace_time(v, txn_time) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "unionpay traceTime ignored");
            None
        }
    }
}

fn transport_error(what: &str, e: reqwest::Error) -> ChannelError {
    let e = e.without_url();
    if e.is_timeout() {
        tracing::warn!(what, error = %e, "unionpay call timed out");
        ChannelError::timeout(format!("unionpay {what}: timed out: {e}"))
    } else {
        tracing::warn!(what, error = %e, "unionpay call failed in transport");
        ChannelError::unknown(format!("unionpay {what}: transport: {e}"))
    }
}

/// The outcome of a transaction request's verified answer (consume, refund, cancel): `Ok` when
/// UnionPay accepted it.
fn accepted(what: &str, answer: &Fields) -> Result<(), ChannelError> {
    let code = field(answer, "respCode");
    let reason = || format!("unionpay {what}: {}", describe(answer));
    match code {
        Some("00") => Ok(()),
        // In process or unknown: query later. 12 (duplicate transaction) means an earlier send
        // with this orderId arrived: its outcome, not this answer, is the truth.
        Some("03" | "04" | "05" | "12") | None => Err(ChannelError::unknown(reason())),
        // Our message, signature, merchant status or permissions are wrong.
        Some("10" | "11" | "13" | "31" | "32") => Err(ChannelError::invalid(reason())),
        Some(other) => Err(ChannelError::declined(
            other,
            field(answer, "respMsg").unwrap_or_default().to_owned(),
        )),
    }
}

/// UnionPay's rule for `orderId`: 8-32 letters and digits.
fn check_order_id(what: &str, order_id: &ChannelOrderNo) -> Result<(), ChannelError> {
    let s = order_id.as_str();
    if (8..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(ChannelError::invalid(format!(
            "unionpay {what}: orderId {s:?} is not 8-32 letters and digits"
        )))
    }
}

/// What create left on the attempt, with defaults for an attempt whose create never returned
/// (its `txnTime` is then its payment's creation time, which create also used).
struct Original {
    txn_time: OffsetDateTime,
    biz_type: String,
    channel_type: String,
}

fn original(payment: &PaymentRef) -> Original {
    let data = |k: &str| payment.channel_data.get(k).and_then(|v| v.as_str());
    let txn_time = data("txnTime")
        .and_then(|t| protocol::parse_txn_time(t).ok())
        .unwrap_or(payment.created_at);
    Original {
        txn_time,
        biz_type: data("bizType").unwrap_or(BIZ_TYPE_GATEWAY).to_owned(),
        channel_type: data("channelType").unwrap_or(CHANNEL_TYPE_PC).to_owned(),
    }
}

/// Whether a refund goes out as a consume cancel (`txnType=31`): the full amount, sent on the
/// payment's Beijing day before [`CANCEL_BEFORE_HOUR`]. Decided from stored times only, so that
/// a re-send of the same refund is the same transaction.
fn is_cancel(req: &RefundRequest, original_txn_time: OffsetDateTime) -> bool {
    let sent = req.created_at.to_offset(protocol::BEIJING);
    req.amount == req.payment.amount
        && sent.date() == protocol::beijing_date(original_txn_time)
        && sent.hour() < CANCEL_BEFORE_HOUR
}

#[async_trait]
impl Channel for UnionpayChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Unionpay
    }

    fn supports(&self, method: PaymentMethod) -> bool {
        matches!(
            method,
            PaymentMethod::Page
                | PaymentMethod::Wap
                | PaymentMethod::App
                | PaymentMethod::Qr
                | PaymentMethod::Barcode
        )
    }

    /// `Page` and `Wap` make no server call: the signed form is what the payer's browser posts
    /// to frontTransReq.do. `App` asks appTransReq.do for a `tn`; `Qr` asks backTransReq.do
    /// for a `qrCode`. `txnTime` is the attempt's creation time; `payTimeout` its expiry.
    async fn create(&self, req: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
        let (path, sub_type, biz_type, channel_type) = match req.method {
            PaymentMethod::Page => {
                (FRONT_TRANS_PATH, TXN_SUB_TYPE_CONSUME, BIZ_TYPE_GATEWAY, CHANNEL_TYPE_PC)
            }
            PaymentMethod::Wap => {
                (FRONT_TRANS_PATH, TXN_SUB_TYPE_CONSUME, BIZ_TYPE_GATEWAY, CHANNEL_TYPE_MOBILE)
            }
            PaymentMethod::App => {
                (APP_TRANS_PATH, TXN_SUB_TYPE_CONSUME, BIZ_TYPE_GATEWAY, CHANNEL_TYPE_MOBILE)
            }
            PaymentMethod::Qr => {
                (BACK_TRANS_PATH, TXN_SUB_TYPE_QR, BIZ_TYPE_NONE, CHANNEL_TYPE_MOBILE)
            }
            other => {
                return Err(ChannelError::invalid(format!(
                    "unionpay does not support the payment method {other}"
                )));
            }
        };
        check_order_id("consume", &req.channel_order_no)?;
        if req.expires_at <= (self.clock)() {
            return Err(ChannelError::invalid(
                "unionpay: the payment expires before it is created",
            ));
        }
        let front = path == FRONT_TRANS_PATH;
        let front_url = match (front, req.return_url.as_deref().filter(|u| !u.is_empty())) {
            (true, None) => {
                return Err(ChannelError::invalid(
                    "unionpay: page and wap payments need a return_url (the frontUrl)",
                ));
            }
            (true, Some(u)) => Some(u),
            (false, _) => None,
        };
        let order_id = req.channel_order_no.as_str();
        let txn_time = protocol::format_txn_time(req.created_at);
        let mut fields = self.common(
            TXN_TYPE_CONSUME,
            sub_type,
            biz_type,
            Some(channel_type),
            order_id,
            &txn_time,
        );
        fields.insert("txnAmt".to_owned(), protocol::format_txn_amt(req.amount));
        fields.insert("currencyCode".to_owned(), CURRENCY_CNY.to_owned());
        fields.insert("backUrl".to_owned(), req.notify_url.clone());
        fields.insert("payTimeout".to_owned(), protocol::format_txn_time(req.expires_at));
        if let Some(u) = front_url {
            fields.insert("frontUrl".to_owned(), u.to_owned());
        }
        let channel_data = json!({
            "txnTime": txn_time,
            "txnSubType": sub_type,
            "bizType": biz_type,
            "channelType": channel_type,
        });
        let action = match req.method {
            PaymentMethod::App => {
                let a = self.call("app consume", path, fields).await?;
                accepted("app consume", &a)?;
                let tn = field(&a, "tn").ok_or_else(|| {
                    ChannelError::unknown("unionpay app consume: respCode 00 without tn")
                })?;
                PaymentAction::Sdk { params: json!({ "tn": tn }) }
            }
            PaymentMethod::Qr => {
                let a = self.call("qr consume", path, fields).await?;
                accepted("qr consume", &a)?;
                let code_url = field(&a, "qrCode").ok_or_else(|| {
                    ChannelError::unknown("unionpay qr consume: respCode 00 without qrCode")
                })?;
                PaymentAction::QrCode { code_url: code_url.to_owned() }
            }
            _ => PaymentAction::Form {
                method: "POST".to_owned(),
                url: self.url(path),
                fields: self.sign("consume", fields)?,
            },
        };
        tracing::info!(order_id, txn_time, method = %req.method, "unionpay payment created");
        Ok(CreatedPayment { action, channel_data })
    }

    /// `respCode=34` (no such order: the payer has not opened the form, or the query came too
    /// early) is `Pending`, never failed; so are `origRespCode` 03/04/05. The caller ends such
    /// a payment after its expiry (the `payTimeout` sent), through [`Channel::close`].
    async fn query(&self, payment: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
        let o = original(payment);
        let status =
            self.query_status("query", payment.channel_order_no.as_str(), o.txn_time).await?;
        Ok(match status {
            Status::NotFound | Status::InProcess => ChannelPayment::Pending,
            Status::Succeeded { query_id, amount, at } => {
                ChannelPayment::Succeeded { channel_trade_no: query_id, amount, paid_at: at }
            }
            Status::Failed { code, message } => ChannelPayment::Failed { code, message },
        })
    }

    /// UnionPay has no close for a gateway consume: an order ends at its `payTimeout` (the
    /// payment's expiry). Close therefore queries: paid is `already_paid`; in process is
    /// unknown; not found or failed is closed. Until `payTimeout` the payer can still pay an
    /// order closed this way, so the caller must keep watching it and accept a later success.
    async fn close(&self, payment: &PaymentRef) -> Result<(), ChannelError> {
        let o = original(payment);
        match self.query_status("close", payment.channel_order_no.as_str(), o.txn_time).await? {
            Status::NotFound | Status::Failed { .. } => Ok(()),
            Status::InProcess => {
                Err(ChannelError::unknown("unionpay close: the payment is still in process"))
            }
            Status::Succeeded { .. } => {
                Err(ChannelError::declined(ALREADY_PAID, "the payer has paid this order"))
            }
        }
    }

    /// A refund (`txnType=04`, partial or repeated), or a consume cancel (`txnType=31`) for the
    /// full amount on the payment's day (see [`is_cancel`]). Both reuse the original's
    /// `bizType` and `channelType`, name it by `origQryId`, and carry its `orderId` in
    /// `reqReserved` so that the notification can be matched to the payment. `txnTime` is the
    /// refund's creation time, so a re-send is the same transaction to UnionPay. `respCode=00`
    /// means accepted: the result comes by notification or query.
    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let p = &req.payment;
        check_order_id("refund", &req.channel_refund_no)?;
        let orig_qry_id =
            p.channel_trade_no.as_deref().filter(|q| !q.is_empty()).ok_or_else(|| {
                ChannelError::invalid("unionpay refund: the payment has no queryId (not paid?)")
            })?;
        let o = original(p);
        let (what, txn_type) = if is_cancel(req, o.txn_time) {
            ("consume cancel", TXN_TYPE_CONSUME_CANCEL)
        } else {
            ("refund", TXN_TYPE_REFUND)
        };
        let mut fields = self.common(
            txn_type,
            TXN_SUB_TYPE_NONE,
            &o.biz_type,
            Some(&o.channel_type),
            req.channel_refund_no.as_str(),
            &protocol::format_txn_time(req.created_at),
        );
        fields.insert("txnAmt".to_owned(), protocol::format_txn_amt(req.amount));
        fields.insert("currencyCode".to_owned(), CURRENCY_CNY.to_owned());
        fields.insert("origQryId".to_owned(), orig_qry_id.to_owned());
        fields.insert("backUrl".to_owned(), req.notify_url.clone());
        fields.insert("reqReserved".to_owned(), p.channel_order_no.as_str().to_owned());
        let a = self.call(what, BACK_TRANS_PATH, fields).await?;
        accepted(what, &a)?;
        tracing::info!(
            order_id = req.channel_refund_no.as_str(),
            txn_type,
            "unionpay refund accepted"
        );
        Ok(ChannelRefund::Pending { channel_refund_id: field(&a, "queryId").map(str::to_owned) })
    }

    /// Queries the refund (or cancel) by its own `orderId` + `txnTime`. Not found is `Pending`:
    /// the caller re-sends it, and UnionPay takes the re-send as the same transaction.
    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let status = self
            .query_status("refund query", req.channel_refund_no.as_str(), req.created_at)
            .await?;
        Ok(match status {
            Status::NotFound | Status::InProcess => {
                ChannelRefund::Pending { channel_refund_id: None }
            }
            Status::Succeeded { query_id, amount, at } => ChannelRefund::Succeeded {
                channel_refund_id: Some(query_id),
                succeeded_at: at,
                amount: Some(amount),
                refunded_total: None,
            },
            Status::Failed { code, message } => ChannelRefund::Failed { code, message },
        })
    }

    /// The back notification (`backUrl` POST): form-decoded once, verified like an answer, and
    /// for our `merId`. A consume (`txnType=01`) is a payment report; a refund (04) or cancel
    /// (31) a refund report, matched to its payment through `reqReserved`. Only `respCode` 00
    /// (or A6) reports a success; any other code leaves the state to a query.
    async fn parse_notification(&self, req: &InboundRequest) -> Result<Notification, ChannelError> {
        let unverified =
            |e: &dyn fmt::Display| ChannelError::unverified(format!("unionpay notification: {e}"));
        let fields = protocol::decode_form(&req.body).map_err(|e| unverified(&e))?;
        self.verifier.verify(&fields, (self.clock)()).map_err(|e| unverified(&e))?;
        if field(&fields, "merId") != Some(self.mer_id.as_str()) {
            return Err(unverified(&format!("for merId {:?}, not ours", field(&fields, "merId"))));
        }
        if let Some(code) = field(&fields, "currencyCode") {
            protocol::check_currency(code).map_err(|e| unverified(&e))?;
        }
        let order_id = field(&fields, "orderId")
            .and_then(ChannelOrderNo::from_channel)
            .ok_or_else(|| unverified(&"no usable orderId"))?;
        let txn_time = field(&fields, "txnTime")
            .ok_or_else(|| "no txnTime".to_owned())
            .and_then(|t| protocol::parse_txn_time(t).map_err(|e| e.to_string()))
            .map_err(|e| unverified(&e))?;
        let success = matches!(field(&fields, "respCode"), Some("00" | "A6"));
        let amount = || {
            field(&fields, "txnAmt")
                .ok_or_else(|| "no txnAmt".to_owned())
                .and_then(|t| protocol::parse_txn_amt(t).map_err(|e| e.to_string()))
                .map_err(|e| unverified(&e))
        };
        let query_id = || {
            field(&fields, "queryId")
                .map(str::to_owned)
                .ok_or_else(|| unverified(&"success without queryId"))
        };
        match field(&fields, "txnType") {
            Some(TXN_TYPE_CONSUME) => {
                let state = if success {
                    ChannelPayment::Succeeded {
                        channel_trade_no: query_id()?,
                        amount: amount()?,
                        paid_at: trace_time(&fields, txn_time),
                    }
                } else {
                    ChannelPayment::Pending
                };
                Ok(Notification::Payment { notify_id: None, channel_order_no: order_id, state })
            }
            Some(TXN_TYPE_REFUND | TXN_TYPE_CONSUME_CANCEL) => {
                let payment_order = field(&fields, "reqReserved")
                    .and_then(ChannelOrderNo::from_channel)
                    .ok_or_else(|| {
                        unverified(&"refund without the payment's orderId in reqReserved")
                    })?;
                let state = if success {
                    ChannelRefund::Succeeded {
                        channel_refund_id: Some(query_id()?),
                        succeeded_at: trace_time(&fields, txn_time),
                        amount: Some(amount()?),
                        refunded_total: None,
                    }
                } else {
                    ChannelRefund::Pending { channel_refund_id: None }
                };
                Ok(Notification::Refund {
                    notify_id: None,
                    channel_order_no: payment_order,
                    channel_refund_no: order_id,
                    state,
                })
            }
            other => Err(unverified(&format!("txnType {other:?} is not handled"))),
        }
    }

    fn check_auth_code(&self, auth_code: &str) -> Result<(), String> {
        barcode::check_auth_code(auth_code)
    }

    fn barcode_schedule(&self) -> Option<BarcodeSchedule> {
        Some(barcode::SCHEDULE)
    }

    async fn pay_barcode(&self, req: &CreatePayment) -> Result<BarcodePaid, ChannelError> {
        self.barcode_consume(req).await
    }

    async fn cancel_barcode(&self, payment: &PaymentRef) -> Result<BarcodeCancel, ChannelError> {
        self.barcode_reversal(payment).await
    }

    /// UnionPay re-sends on anything but HTTP 200; the demos answer `ok`.
    fn ack(&self, accepted: bool) -> NotificationAck {
        let (status, body) = if accepted { (200, NOTIFY_ACK) } else { (503, "fail") };
        NotificationAck { status, content_type: "text/plain", body: body.as_bytes().to_vec() }
    }
}
