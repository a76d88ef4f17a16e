//! Rows as the store reads and writes them.

use paymux_core::{
    AccountId, AttemptId, AttemptStatus, ChannelKind, ChannelOrderNo, Currency, EventId, EventType,
    MerchantId, Money, PaymentId, PaymentMethod, PaymentStatus, RefundId, RefundStatus,
};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq)]
pub struct MerchantRecord {
    pub id: MerchantId,
    pub name: String,
    pub created_at: OffsetDateTime,
    /// Refund a duplicate payment (a second attempt paid) automatically; on by default.
    pub duplicate_auto_refund: bool,
}

/// Who an API key belongs to, and which mode it works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyOwner {
    pub merchant_id: MerchantId,
    /// `sk_live_` keys are live; `sk_test_` keys see only test accounts and objects.
    pub livemode: bool,
}

#[derive(Clone, PartialEq)]
pub struct NewApiKey {
    pub merchant_id: MerchantId,
    /// SHA-256 of the full key, hex.
    pub key_hash: String,
    /// The first characters of the key, for display (`sk_test_ab12...`).
    pub prefix: String,
    pub livemode: bool,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("merchant_id", &self.merchant_id)
            .field("prefix", &self.prefix)
            .field("livemode", &self.livemode)
            .finish_non_exhaustive()
    }
}

/// One merchant's credentials at one channel. `config` is the channel crate's own configuration
/// (JSON), key material included: it never reaches a log.
#[derive(Clone, PartialEq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub merchant_id: MerchantId,
    pub channel: ChannelKind,
    pub config: serde_json::Value,
    /// Live accounts move real money; test ones talk to a sandbox (the mocks or a channel's own).
    pub livemode: bool,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("channel", &self.channel)
            .field("livemode", &self.livemode)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub id: PaymentId,
    pub merchant_id: MerchantId,
    pub merchant_order_no: String,
    pub amount: Money,
    pub subject: String,
    pub status: PaymentStatus,
    pub channel: ChannelKind,
    pub method: PaymentMethod,
    pub account_id: AccountId,
    pub channel_order_no: ChannelOrderNo,
    pub channel_trade_no: Option<String>,
    pub action: Option<serde_json::Value>,
    pub amount_refunded: i64,
    pub amount_reserved: i64,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub client_ip: Option<String>,
    pub return_url: Option<String>,
    pub payer: Option<serde_json::Value>,
    pub metadata: serde_json::Value,
    pub expires_at: OffsetDateTime,
    pub paid_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// How many times the sweeper has asked the channel about it (drives its backoff).
    pub check_count: i64,
    /// The mode of its channel account.
    pub livemode: bool,
}

impl PaymentRecord {
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }
}

/// One try at one channel to pay a payment. The payment's `channel`, `method`, `account_id`,
/// `channel_order_no` and `action` are those of its latest attempt, or of the one it succeeded
/// with.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub channel: ChannelKind,
    pub method: PaymentMethod,
    pub channel_order_no: ChannelOrderNo,
    pub status: AttemptStatus,
    pub action: Option<serde_json::Value>,
    pub channel_trade_no: Option<String>,
    /// The small state the channel's adapter needs later (UnionPay's txnTime, ...).
    pub channel_data: serde_json::Value,
    /// The sweeper still asks the channel about it: it could still take money.
    pub watching: bool,
    pub created_at: OffsetDateTime,
}

/// A compare-and-set on an attempt, written with its payment's change (or alone).
#[derive(Debug, Clone)]
pub struct AttemptChange {
    pub attempt_id: AttemptId,
    pub from: AttemptStatus,
    pub to: AttemptStatus,
    /// Whether the sweeper keeps asking the channel about it.
    pub watching: bool,
    pub channel_trade_no: Option<String>,
}

/// An attempt found paid after another had won: recorded with its event and, if the merchant
/// refunds duplicates automatically, the refund of it, in one transaction.
#[derive(Debug, Clone)]
pub struct DuplicatePaid {
    pub change: AttemptChange,
    pub merchant_id: MerchantId,
    pub at: OffsetDateTime,
    pub events: Vec<NewEvent>,
    /// The refund of the whole attempt, pending, to be sent after the commit (its sweeper check
    /// at `first_check_at`). It reserves nothing on the payment.
    pub refund: Option<(RefundRecord, OffsetDateTime)>,
}

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    /// Only payments of this mode.
    pub livemode: bool,
    pub merchant_order_no: Option<String>,
    pub status: Option<PaymentStatus>,
    /// Only payments created before this one (ids sort by time): the next page.
    pub before: Option<PaymentId>,
    pub limit: u32,
}

/// An event to write with a state change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub kind: EventType,
    pub object_id: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct RefundFilter {
    /// Only refunds of this mode.
    pub livemode: bool,
    /// Only the refunds of this payment.
    pub payment_id: Option<PaymentId>,
    pub merchant_refund_no: Option<String>,
    /// Only refunds created before this one (ids sort by time): the next page.
    pub before: Option<RefundId>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: EventId,
    pub merchant_id: MerchantId,
    pub kind: EventType,
    pub object_id: String,
    pub data: serde_json::Value,
    /// The mode of the object it reports.
    pub livemode: bool,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct PaymentTransition {
    pub payment_id: PaymentId,
    pub merchant_id: MerchantId,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
    pub channel_trade_no: Option<String>,
    pub paid_at: Option<OffsetDateTime>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub at: OffsetDateTime,
    pub events: Vec<NewEvent>,
    /// The attempt that moves with the payment (the one the report is about). On a success the
    /// payment then shows that attempt's channel, method and numbers.
    pub attempt: AttemptChange,
    /// The channel notification that brought this change, logged in the same transaction (one
    /// commit for the notification, the state change and its events).
    pub inbound: Option<InboundRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundRecord {
    pub id: RefundId,
    pub merchant_id: MerchantId,
    pub payment_id: PaymentId,
    pub merchant_refund_no: String,
    pub channel_refund_no: ChannelOrderNo,
    pub amount: Money,
    pub status: RefundStatus,
    pub reason: Option<String>,
    pub channel_refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: OffsetDateTime,
    pub succeeded_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub check_count: i64,
    /// The mode of its payment.
    pub livemode: bool,
    /// The channel refused a re-send of this refund with this code: it is queried, never sent
    /// again.
    pub resend_declined_code: Option<String>,
    /// When the channel said the refund needs someone to act (`refund.action_required`).
    pub action_required_at: Option<OffsetDateTime>,
    /// The duplicate attempt this refund returns, for paymux's automatic refund of a payment
    /// made twice; `None` for the merchant's refunds. Such a refund never counts against the
    /// payment's refundable amount.
    pub attempt_id: Option<AttemptId>,
}

#[derive(Debug, Clone)]
pub struct RefundTransition {
    pub refund_id: RefundId,
    pub payment_id: PaymentId,
    pub merchant_id: MerchantId,
    pub amount: i64,
    pub from: RefundStatus,
    pub to: RefundStatus,
    pub channel_refund_id: Option<String>,
    pub succeeded_at: Option<OffsetDateTime>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub at: OffsetDateTime,
    pub events: Vec<NewEvent>,
    /// Written too, in the same transaction, if this change takes the payment's non-failed
    /// refunds past its amount (a refund held as failed that succeeded after all).
    pub over_refund_events: Vec<NewEvent>,
    /// The refund of a duplicate attempt: the payment's totals do not move.
    pub of_duplicate: bool,
}

/// A pending refund the channel says needs someone to act; applied once.
#[derive(Debug, Clone)]
pub struct RefundActionRequired {
    pub refund_id: RefundId,
    pub merchant_id: MerchantId,
    pub channel_refund_id: Option<String>,
    pub at: OffsetDateTime,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub id: String,
    pub channel: ChannelKind,
    pub account_id: AccountId,
    pub notify_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: OffsetDateTime,
    /// What became of it (`applied`, `unchanged`, `mismatch: ...`), once processed.
    pub outcome: Option<String>,
    /// The payment it was about, once found.
    pub payment_id: Option<PaymentId>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new (or its earlier claim was abandoned): run the request, then finish it.
    Started,
    /// The same key and body already have a response: replay it.
    Replay { status: u16, body: Vec<u8> },
    /// The same key came with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
    /// The first request died after it wrote this object (a payment or refund) and before its
    /// answer was stored: the retry answers with the object as it is now.
    Recover { object_id: String },
}

/// The answer an idempotent request will be given, kept by the same transaction as the change
/// that makes it (see [`PaymentStore::record_created`](crate::PaymentStore::record_created)), so a
/// retry replays these very bytes even if the process dies before it sends them.
#[derive(Debug, Clone, Copy)]
pub struct KeptAnswer<'a> {
    pub merchant: MerchantId,
    pub key: &'a str,
    pub status: u16,
    pub body: &'a [u8],
}

#[derive(Clone, PartialEq)]
pub struct WebhookEndpointRecord {
    pub id: String,
    pub merchant_id: MerchantId,
    pub url: String,
    pub secret: String,
    /// `None` subscribes to every event type.
    pub events: Option<Vec<EventType>>,
    /// It receives only events of this mode.
    pub livemode: bool,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for WebhookEndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointRecord")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("livemode", &self.livemode)
            .finish_non_exhaustive()
    }
}

/// What the outbox has not delivered yet: for the operator's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    /// Deliveries still to be made (pending, whether due now or waiting for a retry).
    pub undelivered: u64,
    /// When the oldest event with an undelivered delivery was written.
    pub oldest_undelivered_at: Option<OffsetDateTime>,
}

/// What the sweeper has due: for the operator's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweeperBacklog {
    /// Payments (pending, or closed and still watched) whose next check is due.
    pub payments_due: u64,
    /// Pending refunds whose next check is due.
    pub refunds_due: u64,
}

/// A delivery the dispatcher has claimed: the event, and where and how to send it.
#[derive(Clone)]
pub struct DueDelivery {
    pub delivery_id: String,
    pub attempts: i64,
    pub window_started_at: OffsetDateTime,
    pub event: EventRecord,
    pub url: String,
    pub secret: String,
    /// Secrets replaced by rotations and still inside their overlap window, newest first: each
    /// signs alongside the current one.
    pub previous_secrets: Vec<String>,
}

/// One webhook secret rotation.
pub struct SecretRotation<'a> {
    /// The new secret.
    pub secret: &'a str,
    /// When the secret it replaces stops signing.
    pub old_expires_at: OffsetDateTime,
    /// Secrets that expired before this are forgotten.
    pub now: OffsetDateTime,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<&'a str>,
}

impl std::fmt::Debug for SecretRotation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRotation")
            .field("old_expires_at", &self.old_expires_at)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("attempts", &self.attempts)
            .field("event", &self.event.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// One try at delivering, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttemptRecord {
    pub at: OffsetDateTime,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    Delivered,
    RetryAt(OffsetDateTime),
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub status: String,
    pub attempts: Vec<DeliveryAttemptRecord>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
}

/// An operator's token as kept: the SHA-256 of the token, never the token (shown once, when
/// made). Operators sign in to the admin page with it.
#[derive(Clone, PartialEq)]
pub struct OperatorTokenRecord {
    /// `opt_...`: who did what, in the operator actions, without the secret.
    pub id: String,
    /// SHA-256 of the full token, hex.
    pub token_hash: String,
    /// What the token is for (`sandbox`, a person's name).
    pub label: String,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for OperatorTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorTokenRecord")
            .field("id", &self.id)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A signed-in admin session, found by the SHA-256 of its cookie (the cookie is not kept).
#[derive(Clone, PartialEq)]
pub struct AdminSessionRecord {
    pub id_hash: String,
    /// The operator token it was opened with.
    pub token_id: String,
    pub created_at: OffsetDateTime,
    /// It is not found after this.
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for AdminSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSessionRecord")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Something an operator did to a payment from the admin page, and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorActionRecord {
    /// `opa_...`.
    pub id: String,
    /// The operator token that did it.
    pub token_id: String,
    /// `sync`, `close`, `redeliver`.
    pub action: String,
    pub payment_id: PaymentId,
    /// What within the payment it acted on, if not the payment itself (an event id).
    pub target: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// What came of it, in words (the payment's status after, the error).
    pub detail: String,
    pub at: OffsetDateTime,
}

/// The operator's search over every merchant's payments, newest first.
#[derive(Debug, Clone, Default)]
pub struct AdminPaymentFilter {
    pub status: Option<PaymentStatus>,
    pub channel: Option<ChannelKind>,
    pub method: Option<PaymentMethod>,
    pub merchant_order_no: Option<String>,
    /// Created at or after this.
    pub created_from: Option<OffsetDateTime>,
    /// Created before this.
    pub created_to: Option<OffsetDateTime>,
    /// Only payments created before this one (ids sort by time): the next page.
    pub before: Option<PaymentId>,
    pub limit: u32,
}

/// A channel notification as logged, raw, with what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundLogRecord {
    pub id: String,
    pub channel: ChannelKind,
    pub account_id: AccountId,
    pub notify_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub outcome: Option<String>,
    pub received_at: OffsetDateTime,
}

/// How many payments of one channel, created in one time bucket, are in one status now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    pub channel: ChannelKind,
    /// The bucket's index from the start of the range (`(created_at - from) / bucket`).
    pub bucket: i64,
    pub status: PaymentStatus,
    pub count: u64,
}

/// How often a channel failed payments with one code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReason {
    pub channel: ChannelKind,
    pub code: String,
    pub message: String,
    pub count: u64,
}

/// A merchant's receiver of profit-sharing splits.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverRecord {
    pub id: paymux_core::ReceiverId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub name: String,
    /// The receiver's account per channel, as the merchant gave it (`{"wechat": {...}}`).
    pub accounts: serde_json::Value,
    /// What each channel answered when paymux registered the receiver there.
    pub registrations: serde_json::Value,
    pub created_at: OffsetDateTime,
    /// Set when the merchant deleted it: it can no longer be named in new splits, and the splits
    /// already made still pay it.
    pub deleted_at: Option<OffsetDateTime>,
}

/// One receiver's part of a settlement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitRecord {
    pub receiver: paymux_core::ReceiverId,
    pub ratio_bps: u32,
    /// Fixed when the settlement starts (`settling`); `None` while held.
    pub amount: Option<i64>,
    pub status: paymux_core::SplitStatus,
    /// The receiver's account at the channel, fixed when the split is first sent: a call sent
    /// again under the same number carries exactly the same lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<paymux_core::ReceiverAccount>,
    /// paymux's number of the share call that carries this split at a channel that holds the
    /// funds (WeChat `out_order_no`, Alipay `out_request_no`), written before the call: sending
    /// the call again reuses it, so a receiver is never paid twice; a retry after a refusal gets
    /// a new one.
    pub out_order_no: Option<String>,
    pub failure: Option<String>,
}

/// A held payment's settlement.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlementRecord {
    pub payment_id: PaymentId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub status: paymux_core::SettlementStatus,
    pub splits: Vec<SplitRecord>,
    /// When the sweeper settles it if the merchant has not.
    pub auto_settle_at: Option<OffsetDateTime>,
    pub settled_at: Option<OffsetDateTime>,
    /// paymux's number for releasing the rest to the merchant, at a channel that holds the funds:
    /// chosen when settling starts and kept across retries, so the release happens once.
    pub release_no: Option<String>,
    pub created_at: OffsetDateTime,
    /// Changes are compared against it ([`SettlementChange::from_updated_at`]), so two writers
    /// that read the same settlement cannot both apply a change.
    pub updated_at: OffsetDateTime,
}

/// Which balance of an account a ledger entry moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerBucket {
    /// Money held for a payment, not yet settled.
    Held,
    /// Money settled to the account.
    Settled,
    /// Money outside paymux's books: the payer's side of a payment or a refund.
    External,
}

impl LedgerBucket {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerBucket::Held => "held",
            LedgerBucket::Settled => "settled",
            LedgerBucket::External => "external",
        }
    }
}

impl std::str::FromStr for LedgerBucket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "held" => Ok(LedgerBucket::Held),
            "settled" => Ok(LedgerBucket::Settled),
            "external" => Ok(LedgerBucket::External),
            other => Err(format!("unknown ledger bucket {other:?}")),
        }
    }
}

/// The account of the money entering or leaving through the channel (the payer's side).
pub const CHANNEL_ACCOUNT: &str = "channel";
/// The merchant's own account in the ledger.
pub const MERCHANT_ACCOUNT: &str = "merchant";

/// A movement of money: `amount` fen (signed) on `account`'s `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntryRecord {
    pub id: String,
    pub payment_id: PaymentId,
    pub account: String,
    pub bucket: LedgerBucket,
    pub kind: paymux_core::LedgerKind,
    pub amount: i64,
    pub created_at: OffsetDateTime,
}

impl LedgerEntryRecord {
    /// A new entry, its id time-ordered.
    pub fn new(
        payment_id: PaymentId,
        account: impl Into<String>,
        bucket: LedgerBucket,
        kind: paymux_core::LedgerKind,
        amount: i64,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: format!("le_{}", uuid::Uuid::now_v7().simple()),
            payment_id,
            account: account.into(),
            bucket,
            kind,
            amount,
            created_at: at,
        }
    }
}

/// Which ledger entries to list: all optional filters, newest last.
#[derive(Debug, Clone, Default)]
pub struct LedgerFilter {
    pub livemode: bool,
    pub payment_id: Option<PaymentId>,
    pub account: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub limit: u32,
}

/// One account's balances, fen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRecord {
    pub account: String,
    pub held: i64,
    pub settled: i64,
}

/// A payment whose ledger does not balance: its entries do not sum to zero, or what they say was
/// paid is not the payment's amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerImbalance {
    pub payment_id: PaymentId,
    pub amount: i64,
    pub paid: i64,
    pub sum: i64,
}

/// A compare-and-set change of a settlement: applied only if it is still `from`; the splits are
/// replaced, and the ledger entries and events written, in the same transaction.
#[derive(Debug, Clone)]
pub struct SettlementChange {
    pub payment_id: PaymentId,
    pub merchant_id: MerchantId,
    pub from: paymux_core::SettlementStatus,
    /// The `updated_at` of the settlement the change was computed from: applied only if nothing
    /// changed it since. `at` must be later than it.
    pub from_updated_at: OffsetDateTime,
    pub to: paymux_core::SettlementStatus,
    /// Set the release number (only ever from none to one).
    pub release_no: Option<String>,
    /// Applied only if the payment's `(amount_reserved, amount_refunded)` are still these: the
    /// amounts were planned on them, and a refund reserved since would change what is held.
    /// The payment's row is locked for the check, as a refund's reservation locks it.
    pub expect_refunds: Option<(i64, i64)>,
    pub splits: Vec<SplitRecord>,
    pub settled_at: Option<OffsetDateTime>,
    /// When the sweeper looks next; `None` stops its checks.
    pub next_check_at: Option<OffsetDateTime>,
    pub entries: Vec<LedgerEntryRecord>,
    pub events: Vec<NewEvent>,
    pub at: OffsetDateTime,
}
