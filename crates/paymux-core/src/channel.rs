//! The seam between the gateway and the channel adapters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::sharing::{ReceiverAccount, ReleaseRequest, Released, ShareRequest, ShareResult};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{BarcodeCancel, BarcodePaid, BarcodeSchedule, ChannelOrderNo, Money};

/// The payment channels paymux speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Wechat,
    Alipay,
    Unionpay,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] =
        [ChannelKind::Wechat, ChannelKind::Alipay, ChannelKind::Unionpay];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Wechat => "wechat",
            ChannelKind::Alipay => "alipay",
            ChannelKind::Unionpay => "unionpay",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown channel {s:?} (expected wechat, alipay or unionpay)"))
    }
}

/// How the payer pays: what the merchant asks for, whatever the channel calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// A QR code the payer scans (Alipay precreate, WeChat Native).
    Qr,
    /// A desktop cashier page the payer's browser is sent to.
    Page,
    /// A mobile-browser cashier page.
    Wap,
    /// WeChat H5: a page opened in a mobile browser outside WeChat.
    H5,
    /// Parameters for the channel's app SDK.
    App,
    /// WeChat in-app browser (official account).
    Jsapi,
    MiniProgram,
    /// The merchant scans the payer's code.
    Barcode,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Qr => "qr",
            PaymentMethod::Page => "page",
            PaymentMethod::Wap => "wap",
            PaymentMethod::H5 => "h5",
            PaymentMethod::App => "app",
            PaymentMethod::Jsapi => "jsapi",
            PaymentMethod::MiniProgram => "mini_program",
            PaymentMethod::Barcode => "barcode",
        }
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use PaymentMethod::*;
        [Qr, Page, Wap, H5, App, Jsapi, MiniProgram, Barcode]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown payment method {s:?}"))
    }
}

/// What the merchant hands the payer to pay with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PaymentAction {
    QrCode {
        code_url: String,
    },
    Redirect {
        url: String,
    },
    /// An auto-submitting form the payer's browser posts.
    Form {
        method: String,
        url: String,
        fields: BTreeMap<String, String>,
    },
    /// Parameters for a channel SDK (WeChat JSAPI/App signed parameters, Alipay's order string).
    Sdk {
        params: serde_json::Value,
    },
}

/// A payment to create at a channel: one attempt, with the number paymux chose for it.
#[derive(Clone)]
pub struct CreatePayment {
    pub channel_order_no: ChannelOrderNo,
    pub amount: Money,
    pub subject: String,
    pub method: PaymentMethod,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Where the channel sends its asynchronous notifications for this attempt.
    pub notify_url: String,
    pub return_url: Option<String>,
    pub client_ip: Option<String>,
    pub payer_openid: Option<String>,
    /// The code the payer shows (barcode payments). Never logged nor stored in full: it is good
    /// for the one pay call only (the Debug form masks it).
    pub auth_code: Option<String>,
    /// Freeze the paid funds at the channel for a later split ([`Channel::holds_funds`]):
    /// WeChat `settle_info.profit_sharing`, Alipay `extend_params.royalty_freeze`.
    pub hold: bool,
}

impl fmt::Debug for CreatePayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatePayment")
            .field("channel_order_no", &self.channel_order_no)
            .field("amount", &self.amount)
            .field("subject", &self.subject)
            .field("method", &self.method)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("notify_url", &self.notify_url)
            .field("return_url", &self.return_url)
            .field("client_ip", &self.client_ip)
            .field("payer_openid", &self.payer_openid)
            .field("auth_code", &self.auth_code.as_deref().map(crate::mask_auth_code))
            .field("hold", &self.hold)
            .finish()
    }
}

/// The channel accepted the payment: what to show the payer, and the small state the adapter
/// needs later (kept on the attempt, handed back in [`PaymentRef::channel_data`]).
#[derive(Debug, Clone)]
pub struct CreatedPayment {
    pub action: PaymentAction,
    pub channel_data: serde_json::Value,
}

/// One attempt as stored, for the calls that follow create.
#[derive(Debug, Clone)]
pub struct PaymentRef {
    pub channel_order_no: ChannelOrderNo,
    pub channel_trade_no: Option<String>,
    pub amount: Money,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub channel_data: serde_json::Value,
}

/// A payment as a channel reports it, in an answer or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPayment {
    /// Not paid yet, or the channel does not know yet.
    Pending,
    Succeeded {
        channel_trade_no: String,
        /// The amount the channel says was paid; the gateway checks it against the attempt.
        amount: Money,
        paid_at: Option<OffsetDateTime>,
    },
    Closed,
    Failed {
        code: String,
        message: String,
    },
}

/// A refund to make (or to query) at a channel.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub payment: PaymentRef,
    pub channel_refund_no: ChannelOrderNo,
    pub amount: Money,
    pub reason: Option<String>,
    pub notify_url: String,
    pub created_at: OffsetDateTime,
}

/// A refund as a channel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRefund {
    Pending {
        channel_refund_id: Option<String>,
    },
    Succeeded {
        channel_refund_id: Option<String>,
        succeeded_at: Option<OffsetDateTime>,
        /// The amount the channel says this refund returned, when it says; the gateway checks
        /// it against the refund.
        amount: Option<Money>,
        /// What the channel says has been refunded on the whole payment so far, when that is
        /// all it says (Alipay's `refund_fee`); the gateway checks it is consistent with the
        /// refunds it holds.
        refunded_total: Option<Money>,
    },
    /// The refund is stuck at the channel until someone acts (WeChat `ABNORMAL`: the payer's
    /// card refused the money). Not final: once re-driven at the channel it can still succeed.
    /// Re-sending the same refund does not help.
    ActionRequired {
        channel_refund_id: Option<String>,
    },
    Failed {
        code: String,
        message: String,
    },
}

/// A raw request from a channel to `/callbacks/{channel}/{account_id}`, as received.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, values as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl InboundRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A verified, decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    Payment {
        /// The channel's own id of this notification, when it has one (for deduplication).
        notify_id: Option<String>,
        channel_order_no: ChannelOrderNo,
        state: ChannelPayment,
    },
    Refund {
        notify_id: Option<String>,
        channel_order_no: ChannelOrderNo,
        channel_refund_no: ChannelOrderNo,
        state: ChannelRefund,
    },
}

impl Notification {
    pub fn notify_id(&self) -> Option<&str> {
        match self {
            Notification::Payment { notify_id, .. } | Notification::Refund { notify_id, .. } => {
                notify_id.as_deref()
            }
        }
    }

    pub fn channel_order_no(&self) -> &ChannelOrderNo {
        match self {
            Notification::Payment { channel_order_no, .. }
            | Notification::Refund { channel_order_no, .. } => channel_order_no,
        }
    }
}

/// The channel's own reply to a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAck {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Why a channel call did not succeed. With `Ok`, these are the four outcome classes the gateway's
/// correctness rests on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A definite business refusal: nothing moved.
    #[error("the channel declined: {code}: {message}")]
    Declined { code: String, message: String },
    /// Timeout, 5xx, reset after send, an unsigned or unverifiable answer, or a "not yet": the
    /// state stays pending and a later query settles it. Never report failed on this.
    #[error("the outcome at the channel is unknown: {reason}")]
    Unknown { reason: String, timed_out: bool },
    /// Our request or configuration is wrong.
    #[error("invalid request or configuration: {message}")]
    Invalid { message: String },
    /// A message from the channel (a notification) failed verification: not authentic, or not
    /// readable. Nothing may change because of it.
    #[error("the message failed verification: {reason}")]
    Unverified { reason: String },
}

impl ChannelError {
    pub fn unknown(reason: impl Into<String>) -> Self {
        ChannelError::Unknown { reason: reason.into(), timed_out: false }
    }

    pub fn timeout(reason: impl Into<String>) -> Self {
        ChannelError::Unknown { reason: reason.into(), timed_out: true }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ChannelError::Invalid { message: message.into() }
    }

    pub fn unverified(reason: impl Into<String>) -> Self {
        ChannelError::Unverified { reason: reason.into() }
    }

    pub fn declined(code: impl Into<String>, message: impl Into<String>) -> Self {
        ChannelError::Declined { code: code.into(), message: message.into() }
    }
}

/// One channel account's adapter. Keys are parsed once, when the adapter is built, and cached.
///
/// Everything channel-specific (units, time formats, status codes, ack bodies, certificates) stays
/// behind this trait.
#[async_trait]
pub trait Channel: Send + Sync + fmt::Debug {
    fn kind(&self) -> ChannelKind;

    fn supports(&self, method: PaymentMethod) -> bool;

    async fn create(&self, req: &CreatePayment) -> Result<CreatedPayment, ChannelError>;

    async fn query(&self, payment: &PaymentRef) -> Result<ChannelPayment, ChannelError>;

    /// The latest moment the channel may still take the payer's money for this attempt, as far
    /// as paymux told it (a QR code can outlive the order's own expiry). A closed payment is
    /// watched until then, plus a margin.
    fn payable_until(&self, payment: &PaymentRef) -> OffsetDateTime {
        payment.expires_at
    }

    /// Closes an unpaid payment. A channel that answers "already paid" yields
    /// `Declined { code: "already_paid" }`, and the caller queries.
    async fn close(&self, payment: &PaymentRef) -> Result<(), ChannelError>;

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError>;

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError>;

    /// Verifies and decodes a raw notification. Anything not authentic is `Unverified`.
    async fn parse_notification(&self, req: &InboundRequest) -> Result<Notification, ChannelError>;

    /// The channel's reply: accepted (durably recorded) or not (the channel will re-send).
    fn ack(&self, accepted: bool) -> NotificationAck;

    // Barcode payments (`PaymentMethod::Barcode`; see the `barcode` module). An adapter that
    // supports the method implements all four; the defaults refuse.
    //
    // Design: the pay call is its own method rather than a branch of `create`, because its answer
    // is a payment state (paid at once, payer confirming) and not an action to show the payer.
    // The schedule is the channel's (its documented poll interval and limit); the engine owns the
    // loop, keeps it as durable work in the store (a payment's next check), and compresses it by
    // configuration. Giving up is a cancel/reverse rather than a close: it also undoes a payment
    // the payer confirmed at the last moment, and the channels ask for it.

    /// Whether `auth_code` has this channel's format. The error says what the format is.
    fn check_auth_code(&self, auth_code: &str) -> Result<(), String> {
        let _ = auth_code;
        Err(format!("{} does not take barcode payments", self.kind()))
    }

    /// How often to poll while the payer confirms, when to give up, and how often to repeat an
    /// unconfirmed cancel. `None`: no barcode payments here.
    fn barcode_schedule(&self) -> Option<BarcodeSchedule> {
        None
    }

    /// Sends the one pay call with the payer's code (`req.auth_code`). `Declined` is a definite
    /// refusal (the payment failed; nothing can be taken); `Unknown` leaves the payment to the
    /// poll-then-cancel loop. Never called twice for one payment: the code is not kept.
    async fn pay_barcode(&self, req: &CreatePayment) -> Result<BarcodePaid, ChannelError> {
        let _ = req;
        Err(ChannelError::invalid(format!("{} does not take barcode payments", self.kind())))
    }

    /// Cancels (Alipay) or reverses (WeChat, UnionPay) a barcode payment: afterwards nobody can
    /// pay it, and money already paid goes back to the payer. `Ok` only once the channel has
    /// confirmed it; `Unknown` (no answer, "retry", "payer still at the password prompt") means
    /// send it again later. Repeating a confirmed cancel is harmless.
    async fn cancel_barcode(&self, payment: &PaymentRef) -> Result<BarcodeCancel, ChannelError> {
        let _ = payment;
        Err(ChannelError::invalid(format!("{} does not take barcode payments", self.kind())))
    }

    // Profit sharing (see the `sharing` module). An adapter whose channel freezes and splits
    // funds implements all of these; the defaults say it does not, and paymux holds a held
    // payment's money in its own ledger instead.

    /// Whether a held payment's funds are frozen, and split, at this channel.
    fn holds_funds(&self) -> bool {
        false
    }

    /// The most of a payment's amount its splits may take together, in basis points (WeChat's
    /// "订单分账最大比例", Alipay's `max_ratio`, as configured for the account).
    fn max_share_bps(&self) -> u32 {
        10_000
    }

    /// Registers a receiver with the channel (WeChat add receiver, Alipay relation bind).
    /// Registering one that is already registered succeeds. `Declined`: the channel refused the
    /// account; `Unknown`: try again later.
    async fn add_receiver(&self, receiver: &ReceiverAccount) -> Result<(), ChannelError> {
        let _ = receiver;
        Err(ChannelError::invalid(format!("{} does not split payments", self.kind())))
    }

    /// Sends a share call. Sending the same request again (same `share_no`, same lines) moves
    /// nothing twice and reports the call's state. `Declined`: the whole call was refused and
    /// nothing moved; `Unknown` (no answer, throttled, "too early after the payment"): send it
    /// again later.
    async fn share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        let _ = req;
        Err(ChannelError::invalid(format!("{} does not split payments", self.kind())))
    }

    /// Reads a share call's state. A number the channel does not know (yet) is `Unknown`, never
    /// `Declined`: the caller re-sends the call with the same number.
    async fn query_share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        let _ = req;
        Err(ChannelError::invalid(format!("{} does not split payments", self.kind())))
    }

    /// Releases what is still frozen to the merchant; afterwards nothing more can be shared.
    /// Sending it again with the same `release_no` is safe and reports its state (`Done` also
    /// when the channel says nothing is left to release).
    async fn release(&self, req: &ReleaseRequest) -> Result<Released, ChannelError> {
        let _ = req;
        Err(ChannelError::invalid(format!("{} does not split payments", self.kind())))
    }
}

/// The `code` a close answers with when the channel says the order was already paid.
pub const ALREADY_PAID: &str = "already_paid";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_serialises_in_the_api_shape() {
        let a = PaymentAction::QrCode { code_url: "https://qr.example/x".into() };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"type": "qr_code", "code_url": "https://qr.example/x"})
        );
    }

    #[test]
    fn methods_and_channels_parse() {
        assert_eq!("mini_program".parse::<PaymentMethod>(), Ok(PaymentMethod::MiniProgram));
        assert!("card".parse::<PaymentMethod>().is_err());
        assert_eq!("alipay".parse::<ChannelKind>(), Ok(ChannelKind::Alipay));
        assert!("paypal".parse::<ChannelKind>().is_err());
    }
}
