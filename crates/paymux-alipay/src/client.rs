//! [`AlipayChannel`]: the [`Channel`] adapter over HTTP.
//!
//! Transport follows the official SDKs: a POST to the gateway with the signed common parameters
//! URL-encoded in the query string and `biz_content` in a form body. Every answer is trusted only
//! after its node verifies with Alipay's public key; anything else leaves the outcome unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, BarcodePaid, BarcodeSchedule, Channel, ChannelError, ChannelKind,
    ChannelOrderNo, ChannelPayment, ChannelRefund, CreatePayment, CreatedPayment, InboundRequest,
    Notification, NotificationAck, PaymentAction, PaymentMethod, PaymentRef, ReceiverAccount,
    RefundRequest, ReleaseRequest, Released, ShareRequest, ShareResult,
};
use paymux_crypto::{Certificate, RsaPrivateKey, RsaPublicKey};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::json;
use time::OffsetDateTime;

use crate::AlipayAccountConfig;

mod barcode;
mod sharing;
use crate::protocol::response::{
    CloseAnswer, PrecreateAnswer, QueryAnswer, RefundAnswer, RefundQueryAnswer,
};
use crate::protocol::{
    self, Answer, FORM_CONTENT_TYPE, METHOD_APP_PAY, METHOD_CLOSE, METHOD_PAGE_PAY,
    METHOD_PRECREATE, METHOD_QUERY, METHOD_REFUND, METHOD_REFUND_QUERY, METHOD_WAP_PAY,
    NOTIFY_SUCCESS, Params, ResultCode, SignedRequest,
};

/// The source of "now" for request timestamps and expiry checks; injectable for tests.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

const SUBJECT_MAX_CHARS: usize = 256;
const REFUND_REASON_MAX_CHARS: usize = 256;

/// One Alipay application's adapter. Keys are parsed once, in [`AlipayChannel::new`].
#[derive(Clone)]
pub struct AlipayChannel {
    app_id: String,
    seller_id: Option<String>,
    gateway_url: String,
    private_key: RsaPrivateKey,
    alipay_public_key: RsaPublicKey,
    cert_mode: Option<CertMode>,
    max_share_bps: u32,
    http: reqwest::Client,
    clock: Clock,
}

/// Certificate mode: the SNs sent with every request, and the one answers should carry.
#[derive(Debug, Clone)]
struct CertMode {
    app_cert_sn: String,
    alipay_root_cert_sn: String,
    alipay_cert_sn: String,
}

impl CertMode {
    fn from_config(
        config: &AlipayAccountConfig,
        private_key: &RsaPrivateKey,
    ) -> Result<Option<Self>, ChannelError> {
        let (app_cert, root) = match (&config.app_cert, &config.alipay_root_cert) {
            (None, None) => return Ok(None),
            (Some(app), Some(root)) => (app, root),
            _ => {
                return Err(ChannelError::invalid(
                    "alipay: certificate mode needs both app_cert and alipay_root_cert",
                ));
            }
        };
        let invalid = |what: &str, e: &dyn fmt::Display| {
            ChannelError::invalid(format!("alipay: {what}: {e}"))
        };
        let app = Certificate::from_pem(app_cert).map_err(|e| invalid("app_cert", &e))?;
        if app.public_key().ok() != Some(&private_key.public_key()) {
            return Err(ChannelError::invalid(
                "alipay: app_cert does not hold the public half of app_private_key",
            ));
        }
        Ok(Some(Self {
            app_cert_sn: protocol::cert_sn(app_cert).map_err(|e| invalid("app_cert", &e))?,
            alipay_root_cert_sn: protocol::root_cert_sn(root)
                .map_err(|e| invalid("alipay_root_cert", &e))?,
            alipay_cert_sn: protocol::cert_sn(&config.alipay_public_key).map_err(|e| {
                invalid("alipay_public_key (a certificate in certificate mode)", &e)
            })?,
        }))
    }
}

impl fmt::Debug for AlipayChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayChannel")
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .field("gateway_url", &self.gateway_url)
            .field("private_key", &self.private_key)
            .finish_non_exhaustive()
    }
}

impl AlipayChannel {
    /// Parses the keys and builds the HTTP client once. `timeout` bounds each whole call; a call
    /// that runs out of it is reported as `Unknown { timed_out: true }`.
    pub fn new(config: &AlipayAccountConfig, timeout: Duration) -> Result<Self, ChannelError> {
        if config.app_id.is_empty() {
            return Err(ChannelError::invalid("alipay: app_id is empty"));
        }
        let private_key = RsaPrivateKey::load(&config.app_private_key)
            .map_err(|e| ChannelError::invalid(format!("alipay: app_private_key: {e}")))?;
        let alipay_public_key = RsaPublicKey::load(&config.alipay_public_key)
            .map_err(|e| ChannelError::invalid(format!("alipay: alipay_public_key: {e}")))?;
        let gateway = reqwest::Url::parse(&config.gateway_url)
            .map_err(|e| ChannelError::invalid(format!("alipay: gateway_url: {e}")))?;
        if !matches!(gateway.scheme(), "http" | "https") {
            return Err(ChannelError::invalid("alipay: gateway_url must be http(s)"));
        }
        // Parameters in the configured URL would travel unsigned, and a gateway that verifies
        // every parameter it receives would refuse every request.
        if gateway.query().is_some() {
            return Err(ChannelError::invalid("alipay: gateway_url must not carry a query"));
        }
        let cert_mode = CertMode::from_config(config, &private_key)?;
        let max_share_bps = sharing::max_share_bps(config.max_share_bps)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ChannelError::invalid(format!("alipay: HTTP client: {e}")))?;
        Ok(Self {
            app_id: config.app_id.clone(),
            seller_id: config.seller_id.clone().filter(|s| !s.is_empty()),
            gateway_url: config.gateway_url.clone(),
            private_key,
            alipay_public_key,
            cert_mode,
            max_share_bps,
            http,
            clock: Arc::new(OffsetDateTime::now_utc),
        })
    }

    /// Replaces the clock (request timestamps, the expiry check of create).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Signs a request: the common parameters, `biz_content`, and any non-empty extras.
    fn sign(
        &self,
        method: &str,
        biz_content: &serde_json::Value,
        extras: &[(&str, Option<&str>)],
    ) -> Result<SignedRequest, ChannelError> {
        let mut params: Params = protocol::common_params(&self.app_id, method, (self.clock)());
        params.insert("biz_content".to_owned(), biz_content.to_string());
        if let Some(cert) = &self.cert_mode {
            params.insert("app_cert_sn".to_owned(), cert.app_cert_sn.clone());
            params.insert("alipay_root_cert_sn".to_owned(), cert.alipay_root_cert_sn.clone());
        }
        for (name, value) in extras {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                params.insert((*name).to_owned(), v.to_owned());
            }
        }
        SignedRequest::sign(params, &self.private_key)
            .map_err(|e| ChannelError::invalid(format!("alipay: {method}: {e}")))
    }

    /// The gateway URL with the signed common parameters as its query.
    fn url_with(&self, query: &str) -> String {
        format!("{}?{query}", self.gateway_url)
    }

    /// Sends a signed request and returns its answer node, verified. Every transport failure,
    /// non-200 status, unsigned or unverifiable answer is `Unknown`: the request may have been
    /// executed, and only a later query can tell.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        request: &SignedRequest,
    ) -> Result<Answer<T>, ChannelError> {
        let sent = self
            .http
            .post(self.url_with(&request.common_query()))
            .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
            .body(request.form_body())
            .send()
            .await;
        let response = sent.map_err(|e| transport_error(method, e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            tracing::warn!(method, %status, "alipay answered a non-200 status");
            return Err(ChannelError::unknown(format!("alipay {method}: HTTP {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| transport_error(method, e))?;
        let body = std::str::from_utf8(&bytes)
            .map_err(|_| ChannelError::unknown(format!("alipay {method}: answer is not UTF-8")))?;
        let raw = protocol::split_answer(body, method)
            .map_err(|e| ChannelError::unknown(format!("alipay {method}: {e}")))?;
        if let Err(e) = raw.verify(&self.alipay_public_key) {
            // Read the untrusted code only to make the log and the reason useful.
            let hint = raw
                .decode::<IgnoredAny>()
                .map(|a| describe(&a.result))
                .unwrap_or_else(|_| "unreadable node".to_owned());
            let sn = raw.alipay_cert_sn.as_deref();
            if let Some(cert) =
                self.cert_mode.as_ref().filter(|c| sn != Some(c.alipay_cert_sn.as_str()))
            {
                // Alipay may have rotated its certificate: the operator must install the new one.
                tracing::warn!(method, answer_sn = ?sn, our_sn = %cert.alipay_cert_sn,
                    "alipay answer names another Alipay certificate");
            }
            tracing::warn!(method, error = %e, answer = %hint, "alipay answer not trusted");
            return Err(ChannelError::unknown(format!("alipay {method}: {e} ({hint})")));
        }
        let answer: Answer<T> = raw.decode().map_err(|e| {
            ChannelError::unknown(format!("alipay {method}: signed answer unreadable: {e}"))
        })?;
        tracing::debug!(method, answer = %describe(&answer.result), "alipay answered");
        Ok(answer)
    }
}

/// `code` and, when present, `sub_code` and `sub_msg`, for logs and error reasons.
fn describe(r: &ResultCode) -> String {
    let mut s = r.code.clone();
    for part in [&r.msg, &r.sub_code, &r.sub_msg].into_iter().flatten() {
        s.push(' ');
        s.push_str(part);
    }
    s
}

fn transport_error(method: &str, e: reqwest::Error) -> ChannelError {
    let e = e.without_url();
    if e.is_timeout() {
        tracing::warn!(method, error = %e, "alipay call timed out");
        ChannelError::timeout(format!("alipay {method}: timed out: {e}"))
    } else {
        tracing::warn!(method, error = %e, "alipay call failed in transport");
        ChannelError::unknown(format!("alipay {method}: transport: {e}"))
    }
}

/// The `sub_code` of a signed `40004 Business Failed`, the one case where it decides the outcome.
fn business_sub_code(r: &ResultCode) -> Option<&str> {
    (r.code == "40004").then_some(r.sub_code.as_deref()).flatten()
}

/// The outcome of any code but `10000` that the calling operation did not handle itself.
fn failure(method: &str, r: &ResultCode) -> ChannelError {
    let what = describe(r);
    match (r.code.as_str(), r.sub_code.as_deref()) {
        ("40004", Some("ACQ.SYSTEM_ERROR")) => {
            ChannelError::unknown(format!("alipay {method}: {what}"))
        }
        ("40004", sub) => ChannelError::declined(
            sub.unwrap_or("40004"),
            r.sub_msg.clone().or_else(|| r.msg.clone()).unwrap_or_default(),
        ),
        // Our request, key or permissions are wrong: retrying the same thing will not help.
        ("40001" | "40002" | "20001" | "40006", _) => {
            ChannelError::invalid(format!("alipay {method}: {what}"))
        }
        // 20000 (service unavailable), 10003 (waiting for the payer) and any code this adapter
        // does not know: the outcome is not known.
        _ => ChannelError::unknown(format!("alipay {method}: {what}")),
    }
}

/// An optional time from an answer or notification. Times are informational (`paid_at`), so an
/// unreadable one is dropped with a warning rather than failing the whole message.
fn optional_time(field: &str, value: Option<&str>) -> Option<OffsetDateTime> {
    let v = value.filter(|v| !v.is_empty())?;
    match protocol::parse_beijing(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(field, error = %e, "alipay time ignored");
            None
        }
    }
}

/// `refund_fee`: what has been refunded on the trade so far, all refunds together.
fn refunded_total(refund_fee: Option<&str>) -> Result<Option<paymux_core::Money>, String> {
    refund_fee
        .filter(|v| !v.is_empty())
        .map(|v| protocol::yuan_to_money(v).map_err(|e| format!("refund_fee: {e}")))
        .transpose()
}

/// An answer that echoes a different order than the one asked about is not ours to trust.
fn check_echo(
    method: &str,
    field: &str,
    echoed: Option<&str>,
    ours: &str,
) -> Result<(), ChannelError> {
    match echoed {
        Some(e) if !e.is_empty() && e != ours => Err(ChannelError::unknown(format!(
            "alipay {method}: answer is for {field} {e:?}, not {ours:?}"
        ))),
        _ => Ok(()),
    }
}

fn payment_from_status(
    method: &str,
    status: Option<&str>,
    trade_no: Option<&str>,
    total_amount: Option<&str>,
    paid_at: Option<OffsetDateTime>,
) -> Result<ChannelPayment, String> {
    match status {
        Some("WAIT_BUYER_PAY") => Ok(ChannelPayment::Pending),
        Some("TRADE_SUCCESS" | "TRADE_FINISHED") => {
            let channel_trade_no = trade_no
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("alipay {method}: paid but no trade_no"))?
                .to_owned();
            let amount = total_amount
                .ok_or_else(|| format!("alipay {method}: paid but no total_amount"))
                .and_then(|a| {
                    protocol::yuan_to_money(a).map_err(|e| format!("alipay {method}: {e}"))
                })?;
            Ok(ChannelPayment::Succeeded { channel_trade_no, amount, paid_at })
        }
        Some("TRADE_CLOSED") => Ok(ChannelPayment::Closed),
        other => Err(format!("alipay {method}: unknown trade_status {other:?}")),
    }
}

fn check_subject(subject: &str) -> Result<(), ChannelError> {
    let chars = subject.chars().count();
    if chars == 0 || chars > SUBJECT_MAX_CHARS {
        return Err(ChannelError::invalid(format!(
            "alipay: subject must be 1-{SUBJECT_MAX_CHARS} characters, got {chars}"
        )));
    }
    Ok(())
}

#[async_trait]
impl Channel for AlipayChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Alipay
    }

    fn supports(&self, method: PaymentMethod) -> bool {
        matches!(
            method,
            PaymentMethod::Qr
                | PaymentMethod::Page
                | PaymentMethod::Wap
                | PaymentMethod::App
                | PaymentMethod::Barcode
        )
    }

    /// `Qr` is a server call (precreate). `Page`, `Wap` and `App` make no server call: Alipay
    /// executes those requests when the payer's browser or app submits them, so the signed
    /// request itself is what the payer receives. Its `timestamp` is signed now; Alipay's
    /// tolerance for old timestamps is undocumented, so hand it to the payer right away.
    async fn create(&self, req: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
        let (method, product_code) = match req.method {
            PaymentMethod::Qr => (METHOD_PRECREATE, "FACE_TO_FACE_PAYMENT"),
            PaymentMethod::Page => (METHOD_PAGE_PAY, "FAST_INSTANT_TRADE_PAY"),
            PaymentMethod::Wap => (METHOD_WAP_PAY, "QUICK_WAP_WAY"),
            PaymentMethod::App => (METHOD_APP_PAY, "QUICK_MSECURITY_PAY"),
            other => {
                return Err(ChannelError::invalid(format!(
                    "alipay does not support the payment method {other}"
                )));
            }
        };
        check_subject(&req.subject)?;
        let now = (self.clock)();
        if req.expires_at <= now {
            return Err(ChannelError::invalid("alipay: the payment expires before it is created"));
        }
        let out_trade_no = req.channel_order_no.as_str();
        // time_expire (absolute) rather than timeout_express (relative): it needs no rounding to
        // whole minutes and does not drift with the moment the payer opens the cashier.
        let mut biz = json!({
            "out_trade_no": out_trade_no,
            "total_amount": protocol::money_to_yuan(req.amount),
            "subject": req.subject,
            "product_code": product_code,
            "time_expire": protocol::format_beijing(req.expires_at),
        });
        sharing::add_hold(&mut biz, req.hold);
        let mut channel_data = json!({ "method": method });
        if req.method == PaymentMethod::Qr {
            // time_expire bounds the trade, which exists only once the code is scanned; the
            // unscanned code has its own life (2 h by default), so it gets the payment's too.
            let (express, lasts) = protocol::timeout_express(now, req.expires_at);
            biz["qr_code_timeout_express"] = json!(express);
            channel_data["qr_code_expires_at"] = json!((now + lasts).unix_timestamp());
        }
        let return_url = match req.method {
            PaymentMethod::Page | PaymentMethod::Wap => req.return_url.as_deref(),
            _ => None,
        };
        let signed = self.sign(
            method,
            &biz,
            &[("notify_url", Some(req.notify_url.as_str())), ("return_url", return_url)],
        )?;
        let action = match req.method {
            PaymentMethod::Qr => {
                let answer: Answer<PrecreateAnswer> = self.call(method, &signed).await?;
                if answer.result.code != "10000" {
                    return Err(failure(method, &answer.result));
                }
                check_echo(
                    method,
                    "out_trade_no",
                    answer.body.out_trade_no.as_deref(),
                    out_trade_no,
                )?;
                let code_url = answer.body.qr_code.filter(|q| !q.is_empty()).ok_or_else(|| {
                    ChannelError::unknown(format!("alipay {method}: success without qr_code"))
                })?;
                PaymentAction::QrCode { code_url }
            }
            PaymentMethod::App => {
                PaymentAction::Sdk { params: json!({ "order_string": signed.full_query() }) }
            }
            _ => {
                let fields: BTreeMap<String, String> = signed
                    .biz_content()
                    .map(|b| ("biz_content".to_owned(), b.to_owned()))
                    .into_iter()
                    .collect();
                PaymentAction::Form {
                    method: "POST".to_owned(),
                    url: self.url_with(&signed.common_query()),
                    fields,
                }
            }
        };
        tracing::info!(method, out_trade_no, "alipay payment created");
        Ok(CreatedPayment { action, channel_data })
    }

    /// `ACQ.TRADE_NOT_EXIST` is `Pending`: the buyer has not scanned the code or opened the
    /// cashier, so Alipay has no trade yet. It stays so after `expires_at` too; ending such a
    /// payment is the caller's decision, through [`Channel::close`].
    async fn query(&self, payment: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
        let out_trade_no = payment.channel_order_no.as_str();
        let signed = self.sign(METHOD_QUERY, &json!({ "out_trade_no": out_trade_no }), &[])?;
        let answer: Answer<QueryAnswer> = self.call(METHOD_QUERY, &signed).await?;
        if answer.result.code != "10000" {
            // The buyer has not scanned or opened the cashier yet: Alipay has no trade.
            if business_sub_code(&answer.result) == Some("ACQ.TRADE_NOT_EXIST") {
                return Ok(ChannelPayment::Pending);
            }
            return Err(failure(METHOD_QUERY, &answer.result));
        }
        let b = &answer.body;
        check_echo(METHOD_QUERY, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
        payment_from_status(
            METHOD_QUERY,
            b.trade_status.as_deref(),
            b.trade_no.as_deref(),
            b.total_amount.as_deref(),
            optional_time("send_pay_date", b.send_pay_date.as_deref()),
        )
        .map_err(ChannelError::unknown)
    }

    /// A precreate code lives until the `qr_code_timeout_express` sent with it, which can end up
    /// to a minute after the payment's expiry (whole minutes). When the create's answer was
    /// lost, its timeout is worked out again from the payment's own times, with a minute more
    /// for the moment it was signed.
    fn payable_until(&self, payment: &PaymentRef) -> OffsetDateTime {
        let recorded = payment
            .channel_data
            .get("qr_code_expires_at")
            .and_then(serde_json::Value::as_i64)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        let code_ends = recorded.unwrap_or_else(|| {
            let (_, lasts) = protocol::timeout_express(payment.created_at, payment.expires_at);
            payment.created_at + lasts + time::Duration::minutes(1)
        });
        code_ends.max(payment.expires_at)
    }

    /// `ACQ.TRADE_NOT_EXIST` counts as closed: the buyer never scanned the QR code or opened the
    /// cashier, so Alipay holds no trade to close. Risk: until the `time_expire` sent at create,
    /// the payer can still open that cashier or scan that code and pay. A payment closed this
    /// way can therefore still be reported paid later (query or notification); the caller must
    /// accept that report and refund or reconcile, not ignore it.
    async fn close(&self, payment: &PaymentRef) -> Result<(), ChannelError> {
        let out_trade_no = payment.channel_order_no.as_str();
        let signed = self.sign(METHOD_CLOSE, &json!({ "out_trade_no": out_trade_no }), &[])?;
        let answer: Answer<CloseAnswer> = self.call(METHOD_CLOSE, &signed).await?;
        if answer.result.code == "10000" {
            return check_echo(
                METHOD_CLOSE,
                "out_trade_no",
                answer.body.out_trade_no.as_deref(),
                out_trade_no,
            );
        }
        match business_sub_code(&answer.result) {
            Some("ACQ.TRADE_NOT_EXIST") => {
                tracing::info!(out_trade_no, "alipay close: no trade yet, treated as closed");
                Ok(())
            }
            Some("ACQ.TRADE_HAS_CLOSE") => Ok(()),
            Some("ACQ.TRADE_HAS_SUCCESS") => Err(ChannelError::declined(
                ALREADY_PAID,
                answer.result.sub_msg.clone().unwrap_or_else(|| "already paid".to_owned()),
            )),
            _ => Err(failure(METHOD_CLOSE, &answer.result)),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let out_trade_no = req.payment.channel_order_no.as_str();
        let mut biz = json!({
            "out_trade_no": out_trade_no,
            "out_request_no": req.channel_refund_no.as_str(),
            "refund_amount": protocol::money_to_yuan(req.amount),
        });
        if let Some(reason) = req.reason.as_deref().filter(|r| !r.is_empty()) {
            if reason.chars().count() > REFUND_REASON_MAX_CHARS {
                return Err(ChannelError::invalid(format!(
                    "alipay: refund reason is longer than {REFUND_REASON_MAX_CHARS} characters"
                )));
            }
            biz["refund_reason"] = json!(reason);
        }
        let signed = self.sign(METHOD_REFUND, &biz, &[])?;
        let answer: Answer<RefundAnswer> = self.call(METHOD_REFUND, &signed).await?;
        if answer.result.code != "10000" {
            return Err(failure(METHOD_REFUND, &answer.result));
        }
        let b = &answer.body;
        check_echo(METHOD_REFUND, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
        // fund_change=N is not a failure: a repeat with the same out_request_no answers N. Only
        // the refund query can confirm it.
        Ok(if b.fund_change.as_deref() == Some("Y") {
            ChannelRefund::Succeeded {
                channel_refund_id: None,
                succeeded_at: optional_time("gmt_refund_pay", b.gmt_refund_pay.as_deref()),
                amount: None,
                // refund_fee is cumulative over the trade's refunds, not this refund's amount.
                refunded_total: refunded_total(b.refund_fee.as_deref())
                    .map_err(|e| ChannelError::unknown(format!("alipay {METHOD_REFUND}: {e}")))?,
            }
        } else {
            ChannelRefund::Pending { channel_refund_id: None }
        })
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let out_trade_no = req.payment.channel_order_no.as_str();
        let out_request_no = req.channel_refund_no.as_str();
        let biz = json!({
            "out_trade_no": out_trade_no,
            "out_request_no": out_request_no,
            "query_options": ["gmt_refund_pay"],
        });
        let signed = self.sign(METHOD_REFUND_QUERY, &biz, &[])?;
        let answer: Answer<RefundQueryAnswer> = self.call(METHOD_REFUND_QUERY, &signed).await?;
        if answer.result.code != "10000" {
            return Err(failure(METHOD_REFUND_QUERY, &answer.result));
        }
        let b = &answer.body;
        check_echo(METHOD_REFUND_QUERY, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
        check_echo(
            METHOD_REFUND_QUERY,
            "out_request_no",
            b.out_request_no.as_deref(),
            out_request_no,
        )?;
        if b.refund_status.as_deref() != Some("REFUND_SUCCESS") {
            // Absent: not received yet, or failed. Re-sending the refund with the same
            // out_request_no settles which; this query alone cannot.
            return Ok(ChannelRefund::Pending { channel_refund_id: None });
        }
        if let Some(amount) = b.refund_amount.as_deref() {
            let fen = protocol::yuan_to_fen(amount)
                .map_err(|e| ChannelError::unknown(format!("alipay {METHOD_REFUND_QUERY}: {e}")))?;
            if fen != req.amount.minor() {
                tracing::error!(out_request_no, amount, "alipay refunded another amount");
                return Err(ChannelError::unknown(format!(
                    "alipay {METHOD_REFUND_QUERY}: refunded {amount}, not {}",
                    protocol::money_to_yuan(req.amount)
                )));
            }
        }
        Ok(ChannelRefund::Succeeded {
            channel_refund_id: None,
            succeeded_at: optional_time("gmt_refund_pay", b.gmt_refund_pay.as_deref()),
            // Checked against the request above when present.
            amount: None,
            refunded_total: None,
        })
    }

    /// A refund-triggered notification (one carrying `out_biz_no`, the refund's
    /// `out_request_no`) is reported as that refund's success, whatever its `trade_status`
    /// (TRADE_SUCCESS after a partial refund, TRADE_CLOSED after a full one): the payment itself
    /// stays succeeded.
    async fn parse_notification(&self, req: &InboundRequest) -> Result<Notification, ChannelError> {
        let fields = protocol::decode_form(&req.body)
            .map_err(|e| ChannelError::unverified(format!("alipay notification: {e}")))?;
        protocol::verify_notification(&fields, &self.alipay_public_key)
            .map_err(|e| ChannelError::unverified(format!("alipay notification: {e}")))?;
        let field = |name: &str| fields.get(name).map(String::as_str).filter(|v| !v.is_empty());
        if field("app_id") != Some(self.app_id.as_str()) {
            return Err(ChannelError::unverified(format!(
                "alipay notification: for app_id {:?}, not ours",
                field("app_id")
            )));
        }
        if let Some(seller) = &self.seller_id
            && field("seller_id") != Some(seller.as_str())
        {
            return Err(ChannelError::unverified("alipay notification: for another seller_id"));
        }
        let channel_order_no =
            field("out_trade_no").and_then(ChannelOrderNo::from_channel).ok_or_else(|| {
                ChannelError::unverified("alipay notification: no usable out_trade_no")
            })?;
        let notify_id = field("notify_id").map(str::to_owned);
        if let Some(out_biz_no) = field("out_biz_no") {
            let channel_refund_no = ChannelOrderNo::from_channel(out_biz_no).ok_or_else(|| {
                ChannelError::unverified("alipay notification: unusable out_biz_no")
            })?;
            return Ok(Notification::Refund {
                notify_id,
                channel_order_no,
                channel_refund_no,
                state: ChannelRefund::Succeeded {
                    channel_refund_id: None,
                    succeeded_at: optional_time("gmt_refund", field("gmt_refund")),
                    // refund_fee is cumulative; a notification cannot tell this refund's amount.
                    amount: None,
                    refunded_total: refunded_total(field("refund_fee")).map_err(|e| {
                        ChannelError::unverified(format!("alipay notification: {e}"))
                    })?,
                },
            });
        }
        let state = payment_from_status(
            "notification",
            field("trade_status"),
            field("trade_no"),
            field("total_amount"),
            optional_time("gmt_payment", field("gmt_payment")),
        )
        .map_err(ChannelError::unverified)?;
        Ok(Notification::Payment { notify_id, channel_order_no, state })
    }

    fn check_auth_code(&self, auth_code: &str) -> Result<(), String> {
        barcode::check_auth_code(auth_code)
    }

    fn barcode_schedule(&self) -> Option<BarcodeSchedule> {
        Some(barcode::SCHEDULE)
    }

    async fn pay_barcode(&self, req: &CreatePayment) -> Result<BarcodePaid, ChannelError> {
        self.barcode_pay(req).await
    }

    async fn cancel_barcode(&self, payment: &PaymentRef) -> Result<BarcodeCancel, ChannelError> {
        self.barcode_cancel(payment).await
    }

    /// 商家分账: a held payment is created with `royalty_freeze`, and Alipay keeps its funds
    /// frozen until they are split or released (see the `sharing` module).
    fn holds_funds(&self) -> bool {
        true
    }

    /// The account's `max_share_bps`, 3000 (30 %) when not configured.
    fn max_share_bps(&self) -> u32 {
        self.max_share_bps
    }

    async fn add_receiver(&self, receiver: &ReceiverAccount) -> Result<(), ChannelError> {
        self.bind_receiver(receiver).await
    }

    async fn share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.settle(req).await
    }

    async fn query_share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.settle_query(req).await
    }

    async fn release(&self, req: &ReleaseRequest) -> Result<Released, ChannelError> {
        self.settle_finish(req).await
    }

    /// Alipay re-sends until it reads exactly `success`. The refusal is `fail` with status 200:
    /// any body but `success` makes it retry, whatever the status.
    fn ack(&self, accepted: bool) -> NotificationAck {
        let body = if accepted { NOTIFY_SUCCESS } else { "fail" };
        NotificationAck { status: 200, content_type: "text/plain", body: body.as_bytes().to_vec() }
    }
}
