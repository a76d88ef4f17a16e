//! The mock's memory: merchants, orders with their refunds and delivery logs, faults, and the
//! signing of answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paymux_crypto::{RsaPrivateKey, b64_encode, random_alphanumeric, random_bytes};
use paymux_mock_kit::faults::FaultSwitch;
use paymux_mock_kit::notify::Scheduler;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::protocol::{SIGNATURE_PROBE_PREFIX, SIGNATURE_TYPE, answer_message, beijing_rfc3339};
use crate::{KeyMode, KeysError, PlatformKeys, WechatMerchant, WechatMockConfig};

pub(crate) const DEFAULT_REFUND_DELAY: Duration = Duration::from_secs(1);

pub(crate) use paymux_mock_kit::sync::{lock, read, write};

pub(crate) struct MerchantEntry {
    pub(crate) merchant: WechatMerchant,
    pub(crate) mode: KeyMode,
}

pub(crate) struct Shared {
    pub(crate) config: WechatMockConfig,
    pub(crate) keys: RwLock<PlatformKeys>,
    pub(crate) merchants: RwLock<HashMap<String, Arc<MerchantEntry>>>,
    pub(crate) book: Mutex<Book>,
    pub(crate) barcode: Mutex<crate::barcode::Book>,
    pub(crate) faults: FaultSwitch<Faults>,
    pub(crate) refund_delay: Mutex<Duration>,
    pub(crate) notifier: Scheduler<crate::notify::Outgoing>,
    pub(crate) http: reqwest::Client,
    /// `GET /v3/certificates` requests that passed the signature check, in any key mode.
    pub(crate) certificate_downloads: std::sync::atomic::AtomicU64,
    /// Profit sharing: holds, split orders, receivers, balances, its settings.
    pub(crate) profit: Mutex<crate::profitsharing::Book>,
}

/// Faults injected through `POST /_sandbox/faults`; a POST replaces them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every `/v3/` answer.
    pub latency_ms: u64,
    /// Share of verified `/v3/` requests answered 500 `SYSTEM_ERROR` without doing anything.
    pub error_rate: f64,
    /// Operations (`create`, `query`, `close`, `refund`, `refund_query`, `certificates`,
    /// `profitsharing` (receivers, splits, unfreezes), `profitsharing_query`, `codepay`, `reverse`) that do their work
    /// and then never answer.
    pub timeout_after_commit: Vec<String>,
    /// Notifications are lost on the way (each send counts as a failed attempt).
    pub drop_notifications: bool,
    /// Each notification is delivered twice.
    pub duplicate_notifications: bool,
    /// Notifications are delivered out of order, deterministically: a new notification is held
    /// back; when the mock produces its next one, that newer one is sent first and the held one
    /// only once the newer one's first send has finished (each then retries on its own schedule).
    /// A notification held 1 s with no successor is sent anyway.
    pub reorder_notifications: bool,
    /// Answers and notifications carry a signature that does not verify.
    pub bad_signature: bool,
    /// Answers and notifications carry `WECHATPAY/SIGNTEST/` probe signatures.
    pub signature_probe: bool,
    /// A refund sent again with an `out_refund_no` already used is refused (400
    /// `INVALID_REQUEST`) instead of answered with that refund's state.
    pub decline_refund_resends: bool,
    /// Close answers 400 `ORDERPAID` whatever the order's state, changing nothing (WeChat's
    /// codes do not pin the order's state).
    pub close_answers_orderpaid: bool,
}

pub(crate) const OPERATIONS: [&str; 10] = [
    "create",
    "query",
    "close",
    "refund",
    "refund_query",
    "certificates",
    "profitsharing",
    "profitsharing_query",
    "codepay",
    "reverse",
];

#[derive(Debug, Default)]
pub(crate) struct Book {
    /// Keyed by (mchid, out_trade_no).
    pub(crate) orders: BTreeMap<(String, String), Order>,
}

pub(crate) type OrderKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TradeState {
    Notpay,
    /// A barcode order whose payer is entering a password.
    Userpaying,
    Success,
    Refund,
    Closed,
    Payerror,
    /// A barcode order reversed (closed unpaid, or refunded in full).
    Revoked,
}

impl TradeState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Notpay => "NOTPAY",
            Self::Userpaying => "USERPAYING",
            Self::Revoked => "REVOKED",
            Self::Success => "SUCCESS",
            Self::Refund => "REFUND",
            Self::Closed => "CLOSED",
            Self::Payerror => "PAYERROR",
        }
    }

    fn desc(self) -> &'static str {
        match self {
            Self::Notpay => "未支付",
            Self::Userpaying => "用户支付中",
            Self::Revoked => "已撤销",
            Self::Success => "支付成功",
            Self::Refund => "转入退款",
            Self::Closed => "已关闭",
            Self::Payerror => "支付失败",
        }
    }

    pub(crate) fn is_paid(self) -> bool {
        matches!(self, Self::Success | Self::Refund)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) mchid: String,
    pub(crate) appid: String,
    pub(crate) out_trade_no: String,
    pub(crate) trade_type: &'static str,
    pub(crate) description: String,
    pub(crate) attach: Option<String>,
    pub(crate) notify_url: String,
    pub(crate) total: i64,
    pub(crate) payer_openid: Option<String>,
    /// The create body as parsed JSON: a repeated create must carry the same.
    pub(crate) params: Value,
    pub(crate) answer: Value,
    pub(crate) prepay_id: String,
    pub(crate) state: TradeState,
    pub(crate) transaction_id: Option<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) success_time: Option<OffsetDateTime>,
    pub(crate) refunds: Vec<Refund>,
    pub(crate) deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundStatus {
    Processing,
    Success,
    /// The payer's card refused the money; waits for the merchant to re-drive it.
    Abnormal,
}

impl RefundStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Success => "SUCCESS",
            Self::Abnormal => "ABNORMAL",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) out_refund_no: String,
    pub(crate) refund_id: String,
    pub(crate) amount: i64,
    pub(crate) notify_url: Option<String>,
    pub(crate) status: RefundStatus,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) success_time: Option<OffsetDateTime>,
}

/// One attempt to deliver a notification.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivery {
    pub(crate) notification_id: String,
    pub(crate) event_type: String,
    pub(crate) attempt: usize,
    pub(crate) sent_at: String,
    pub(crate) url: String,
    /// The receiver's HTTP status, if it answered.
    pub(crate) status: Option<u16>,
    /// `delivered`, `refused`, `timeout`, `error` or `dropped`.
    pub(crate) outcome: String,
    /// `valid`, `bad` or `probe`.
    pub(crate) signature: &'static str,
}

impl Order {
    /// The transaction object, as queried and as notified.
    pub(crate) fn transaction(&self) -> Value {
        let mut t = json!({
            "appid": self.appid,
            "mchid": self.mchid,
            "out_trade_no": self.out_trade_no,
            "trade_state": self.state.as_str(),
            "trade_state_desc": self.state.desc(),
            "amount": {"total": self.total, "currency": "CNY", "payer_currency": "CNY"},
        });
        if let Some(attach) = &self.attach {
            t["attach"] = json!(attach);
        }
        if self.state.is_paid() {
            t["transaction_id"] = json!(self.transaction_id);
            t["trade_type"] = json!(self.trade_type);
            t["bank_type"] = json!("OTHERS");
            t["success_time"] = json!(self.success_time.map(beijing_rfc3339));
            t["payer"] = json!({"openid": self.payer_openid});
            t["amount"] = json!({
                "total": self.total,
                "payer_total": self.total,
                "currency": "CNY",
                "payer_currency": "CNY",
            });
        }
        t
    }

    pub(crate) fn refund_object(&self, r: &Refund) -> Value {
        let mut v = json!({
            "refund_id": r.refund_id,
            "out_refund_no": r.out_refund_no,
            "transaction_id": self.transaction_id,
            "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": beijing_rfc3339(r.create_time),
            "status": r.status.as_str(),
            "funds_account": "AVAILABLE",
            "amount": {
                "total": self.total,
                "refund": r.amount,
                "payer_total": self.total,
                "payer_refund": r.amount,
                "settlement_total": self.total,
                "settlement_refund": r.amount,
                "discount_refund": 0,
                "currency": "CNY",
            },
            "promotion_detail": [],
        });
        if let Some(t) = r.success_time {
            v["success_time"] = json!(beijing_rfc3339(t));
        }
        v
    }

    /// The REFUND.* notification plaintext: not the refund object (`refund_status`, no `status`).
    pub(crate) fn refund_notification(&self, r: &Refund) -> Value {
        json!({
            "mchid": self.mchid,
            "transaction_id": self.transaction_id,
            "out_trade_no": self.out_trade_no,
            "refund_id": r.refund_id,
            "out_refund_no": r.out_refund_no,
            "refund_status": r.status.as_str(),
            "success_time": r.success_time.map(beijing_rfc3339),
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": self.total,
                "refund": r.amount,
                "payer_total": self.total,
                "payer_refund": r.amount,
            },
        })
    }

    pub(crate) fn refunded(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    /// What the control API shows.
    pub(crate) fn view(&self) -> Value {
        json!({
            "mchid": self.mchid,
            "appid": self.appid,
            "out_trade_no": self.out_trade_no,
            "trade_type": self.trade_type,
            "trade_state": self.state.as_str(),
            "description": self.description,
            "total": self.total,
            "notify_url": self.notify_url,
            "prepay_id": self.prepay_id,
            "transaction_id": self.transaction_id,
            "created_at": beijing_rfc3339(self.created_at),
            "success_time": self.success_time.map(beijing_rfc3339),
            "refunded": self.refunded(),
            "refunds": self.refunds.iter().map(|r| self.refund_object(r)).collect::<Vec<_>>(),
            "deliveries": self.deliveries,
        })
    }
}

/// Which key signs an answer or a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    Platform,
    PublicKey,
}

impl Signer {
    /// WeChat signs with the public key when the request's `Wechatpay-Serial` names it, else
    /// with a platform certificate; a merchant's mode limits what it can verify.
    pub(crate) fn for_answer(mode: KeyMode, wechatpay_serial: Option<&str>) -> Self {
        let asks_public = wechatpay_serial.is_some_and(|s| s.trim().starts_with("PUB_KEY_ID_"));
        match mode {
            KeyMode::PlatformCertificate => Self::Platform,
            KeyMode::PublicKey => Self::PublicKey,
            KeyMode::Both if asks_public => Self::PublicKey,
            KeyMode::Both => Self::Platform,
        }
    }

    pub(crate) fn for_notification(mode: KeyMode) -> Self {
        match mode {
            KeyMode::PlatformCertificate => Self::Platform,
            KeyMode::PublicKey | KeyMode::Both => Self::PublicKey,
        }
    }
}

/// The four `Wechatpay-*` signature values plus the signature type.
pub(crate) struct SignatureHeaders {
    pub(crate) timestamp: String,
    pub(crate) nonce: String,
    pub(crate) signature: String,
    pub(crate) serial: String,
    /// `valid`, `bad` or `probe`, for the delivery log.
    pub(crate) kind: &'static str,
}

impl SignatureHeaders {
    pub(crate) fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("wechatpay-timestamp", &self.timestamp),
            ("wechatpay-nonce", &self.nonce),
            ("wechatpay-signature", &self.signature),
            ("wechatpay-serial", &self.serial),
            ("wechatpay-signature-type", SIGNATURE_TYPE),
        ]
    }
}

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        self.faults.get()
    }

    pub(crate) fn merchant(&self, mchid: &str) -> Option<Arc<MerchantEntry>> {
        read(&self.merchants).get(mchid).cloned()
    }

    pub(crate) fn rotate(&self) -> Result<String, KeysError> {
        // Issue outside the lock: RSA key generation is slow and signing must not wait on it.
        let mut next = read(&self.keys).clone();
        let serial = next.rotate()?;
        *write(&self.keys) = next;
        tracing::info!(serial = %serial, "platform certificate rotated");
        Ok(serial)
    }

    pub(crate) fn sign(&self, signer: Signer, body: &[u8]) -> Result<SignatureHeaders, ApiError> {
        let (serial, key): (String, RsaPrivateKey) = {
            let keys = read(&self.keys);
            match signer {
                Signer::Platform => (keys.platform_serial(), keys.current().key.clone()),
                Signer::PublicKey => (keys.public_key_id.clone(), keys.public_key_private.clone()),
            }
        };
        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let nonce = random_alphanumeric(32);
        let faults = self.faults();
        let (signature, kind) = if faults.signature_probe {
            (format!("{SIGNATURE_PROBE_PREFIX}{}", b64_encode(&random_bytes::<64>())), "probe")
        } else {
            let mut sig = key
                .sign(&answer_message(&timestamp, &nonce, body))
                .map_err(|_| ApiError::system("signing failed"))?;
            if faults.bad_signature {
                if let Some(last) = sig.last_mut() {
                    *last ^= 0x5a;
                }
                (b64_encode(&sig), "bad")
            } else {
                (b64_encode(&sig), "valid")
            }
        };
        Ok(SignatureHeaders { timestamp, nonce, signature, serial, kind })
    }

    /// A signed answer: the body's exact bytes, all five signature headers, `Request-ID`.
    pub(crate) fn signed(
        &self,
        signer: Signer,
        status: StatusCode,
        body: Vec<u8>,
    ) -> Result<Response, ApiError> {
        let sig = self.sign(signer, &body)?;
        let mut headers = HeaderMap::new();
        for (name, value) in sig.pairs() {
            headers.insert(HeaderName::from_static(name), header_value(value)?);
        }
        headers.insert(HeaderName::from_static("request-id"), header_value(&request_id())?);
        if !body.is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok((status, headers, body).into_response())
    }
}

fn header_value(v: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(v).map_err(|_| ApiError::system("header value"))
}

pub(crate) fn request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string().to_ascii_uppercase()
}

/// A WeChat error answer: `{"code","message"}` with its HTTP status. Never signed (SDKs read
/// error answers unverified).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// WeChat's `detail` object, on the errors that carry one.
    pub(crate) detail: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: None }
    }

    pub(crate) fn with_detail(self, detail: Value) -> Self {
        Self { detail: Some(detail), ..self }
    }

    pub(crate) fn sign(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
    }

    pub(crate) fn param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub(crate) fn system(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(detail) = self.detail {
            body["detail"] = detail;
        }
        let body = body.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(id) = HeaderValue::from_str(&request_id()) {
            headers.insert(HeaderName::from_static("request-id"), id);
        }
        (self.status, headers, body).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answer_key_follows_the_request_serial_within_the_mode() {
        let id = Some("PUB_KEY_ID_0114");
        assert_eq!(Signer::for_answer(KeyMode::Both, id), Signer::PublicKey);
        assert_eq!(Signer::for_answer(KeyMode::Both, Some("5DEA10EF")), Signer::Platform);
        assert_eq!(Signer::for_answer(KeyMode::Both, None), Signer::Platform);
        assert_eq!(Signer::for_answer(KeyMode::PlatformCertificate, id), Signer::Platform);
        assert_eq!(Signer::for_answer(KeyMode::PublicKey, None), Signer::PublicKey);
        assert_eq!(Signer::for_notification(KeyMode::Both), Signer::PublicKey);
    }
}
