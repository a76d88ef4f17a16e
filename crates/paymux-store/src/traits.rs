//! The store, one trait per aggregate. Each backend implements every one of them; [`Store`] is
//! all of them together, which is what the engine holds (`Arc<dyn Store>`).
//!
//! Implementations must make each method atomic.

use async_trait::async_trait;
use paymux_core::{
    AccountId, AttemptId, ChannelKind, ChannelOrderNo, EventId, MerchantId, PaymentId, ReceiverId,
    RefundId,
};
use time::OffsetDateTime;

use crate::StoreResult;
use crate::records::*;

/// Merchants and their API keys.
#[async_trait]
pub trait MerchantStore: Send + Sync {
    async fn create_merchant(&self, name: &str) -> StoreResult<MerchantId>;
    async fn merchant(&self, id: MerchantId) -> StoreResult<Option<MerchantRecord>>;
    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()>;
    /// The merchant owning the key whose SHA-256 hash is `key_hash`, and the key's mode.
    async fn merchant_for_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>>;
    /// Sets whether the merchant's duplicate payments are refunded automatically. Returns
    /// whether the merchant exists.
    async fn set_duplicate_auto_refund(&self, id: MerchantId, on: bool) -> StoreResult<bool>;
}

/// A merchant's credentials at each channel.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn put_channel_account(&self, account: &AccountRecord) -> StoreResult<()>;
    async fn channel_account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>>;
    async fn channel_accounts(&self, merchant: MerchantId) -> StoreResult<Vec<AccountRecord>>;
}

/// Payments and their attempts.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Writes a new payment and its first attempt, and a held payment's settlement (its
    /// auto-settle time is its first check), in one transaction (before the channel call).
    /// The sweeper looks at it first at `first_check_at` if it is still pending then. With
    /// `idempotency_key`, the merchant's in-flight claim of that key is bound to the payment in the
    /// same transaction, so a retry after a crash finds it ([`IdempotencyBegin::Recover`]).
    async fn insert_payment(
        &self,
        payment: &PaymentRecord,
        attempt: &AttemptRecord,
        settlement: Option<&SettlementRecord>,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()>;
    /// Adds an attempt to a pending payment, which then shows it (its channel, method, account
    /// and number, no action yet), in one transaction, before the channel call. Fails with
    /// [`StoreError::PaymentNotPending`](crate::StoreError::PaymentNotPending) if the payment is
    /// no longer pending. `idempotency_key` is bound to the payment as in
    /// [`PaymentStore::insert_payment`].
    async fn insert_attempt(
        &self,
        attempt: &AttemptRecord,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()>;
    /// Stores what the channel's create answered for an attempt: the payer's action and the
    /// attempt's state; the payment shows the action too while the attempt is its latest.
    ///
    /// With `answer`, the same transaction keeps it as the answer of its idempotency key, but
    /// only while that key is an in-flight claim bound to the attempt's payment (its request
    /// wrote the payment or the attempt). Returns whether the answer was kept.
    async fn record_created(
        &self,
        attempt: AttemptId,
        action: &serde_json::Value,
        channel_data: &serde_json::Value,
        answer: Option<KeptAnswer<'_>>,
    ) -> StoreResult<bool>;
    /// A payment, only if it belongs to `merchant`.
    async fn payment(
        &self,
        merchant: MerchantId,
        id: PaymentId,
    ) -> StoreResult<Option<PaymentRecord>>;
    async fn payment_by_order_no(
        &self,
        merchant: MerchantId,
        merchant_order_no: &str,
    ) -> StoreResult<Option<PaymentRecord>>;
    async fn list_payments(
        &self,
        merchant: MerchantId,
        filter: &PaymentFilter,
    ) -> StoreResult<Vec<PaymentRecord>>;
    /// The payment's attempts, oldest first.
    async fn attempts(&self, payment: PaymentId) -> StoreResult<Vec<AttemptRecord>>;
    async fn attempt_by_channel_order_no(
        &self,
        account: AccountId,
        channel_order_no: &ChannelOrderNo,
    ) -> StoreResult<Option<AttemptRecord>>;
    /// Compare-and-set: applies the change only if the payment is still in `change.from` (and
    /// its attempt, if it names one, in its own `from`). Returns whether it was applied. The
    /// event is written in the same transaction. A payment with an attempt still watched stays
    /// due for the sweeper.
    async fn transition_payment(&self, change: &PaymentTransition) -> StoreResult<bool>;
    /// Compare-and-set on an attempt alone (its payment does not move). Returns whether it was
    /// applied.
    async fn transition_attempt(&self, change: &AttemptChange) -> StoreResult<bool>;
    /// Records a duplicate payment: the attempt's change, its events, and the refund of it if
    /// one is given, in one transaction. Returns whether it was applied (the attempt was still
    /// in `change.from`).
    async fn record_duplicate(&self, duplicate: &DuplicatePaid) -> StoreResult<bool>;
    /// A payment by id alone, for background work that has no merchant at hand.
    async fn payment_by_id(&self, id: PaymentId) -> StoreResult<Option<PaymentRecord>>;
}

/// Refunds, and the reservation each holds on its payment.
#[async_trait]
pub trait RefundStore: Send + Sync {
    /// Reserves the amount on the payment and writes the refund, atomically: concurrent refunds
    /// can never take a payment's refunds past its amount. `idempotency_key` is bound to the
    /// refund as in [`PaymentStore::insert_payment`].
    async fn insert_refund(
        &self,
        refund: &RefundRecord,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()>;
    async fn refund(&self, merchant: MerchantId, id: RefundId)
    -> StoreResult<Option<RefundRecord>>;
    async fn refund_by_merchant_refund_no(
        &self,
        merchant: MerchantId,
        merchant_refund_no: &str,
    ) -> StoreResult<Option<RefundRecord>>;
    /// A merchant's refunds, newest first.
    async fn list_refunds(
        &self,
        merchant: MerchantId,
        filter: &RefundFilter,
    ) -> StoreResult<Vec<RefundRecord>>;
    async fn refund_by_channel_refund_no(
        &self,
        channel_refund_no: &ChannelOrderNo,
    ) -> StoreResult<Option<RefundRecord>>;
    /// Compare-and-set on the refund's status; on success the payment's `amount_refunded` grows
    /// (and a refund held as failed is reserved again, past the payment's amount if need be,
    /// with `over_refund_events` then), on failure its reservation is released; the events are
    /// written in the same transaction.
    async fn transition_refund(&self, change: &RefundTransition) -> StoreResult<bool>;
    /// The channel refused a re-send of this pending refund: it is never sent again.
    async fn stop_refund_resends(&self, id: RefundId, code: &str) -> StoreResult<()>;
    /// Marks a pending refund as needing action, with its event, only if it was not marked yet.
    /// Returns whether it was applied.
    async fn mark_refund_action_required(&self, change: &RefundActionRequired)
    -> StoreResult<bool>;
}

/// The outbox: events, the webhook endpoints they go to, and their deliveries.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// A merchant's events of one mode, in commit order.
    async fn events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        after: Option<EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    async fn event(&self, merchant: MerchantId, id: EventId) -> StoreResult<Option<EventRecord>>;
    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpointRecord) -> StoreResult<()>;
    /// A merchant's endpoints of one mode.
    async fn webhook_endpoints(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<WebhookEndpointRecord>>;
    async fn webhook_endpoint(
        &self,
        merchant: MerchantId,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// Replaces the current secret with `rotation.secret`; the replaced one keeps signing
    /// alongside it until `rotation.old_expires_at`, as every earlier one does until its own
    /// expiry. A rotation whose `idempotency_key` this endpoint has seen changes nothing and
    /// hands back the secret that rotation made. Returns the secret the rotation stands for, or
    /// `None` when the endpoint does not exist (or is deleted).
    async fn rotate_webhook_secret(
        &self,
        merchant: MerchantId,
        id: &str,
        rotation: &SecretRotation<'_>,
    ) -> StoreResult<Option<String>>;
    async fn delete_webhook_endpoint(&self, merchant: MerchantId, id: &str) -> StoreResult<bool>;
    async fn deliveries_for_event(
        &self,
        merchant: MerchantId,
        event: EventId,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Makes every delivery of the event due now with a fresh retry window (creating one for each
    /// subscribed endpoint that has none). Returns how many.
    async fn redeliver_event(
        &self,
        merchant: MerchantId,
        event: EventId,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// How many deliveries are still to be made, across merchants, and how old the oldest
    /// event they carry is.
    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;
}

/// Idempotency keys of the merchant API.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims an idempotency key for a request whose canonical form hashes to `request_hash`.
    /// An in-flight claim lasts until `lock_until`; responses older than `retain_after` are
    /// forgotten (the key is new again). An abandoned claim bound to the object its request wrote
    /// is not run again: it answers [`IdempotencyBegin::Recover`]. Of several callers racing on
    /// one key, exactly one is answered [`IdempotencyBegin::Started`].
    async fn idempotency_begin(
        &self,
        merchant: MerchantId,
        key: &str,
        request_hash: &str,
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        retain_after: OffsetDateTime,
    ) -> StoreResult<IdempotencyBegin>;
    /// Keeps `status` and `body` as the answer of a claimed key that has none yet. Returns
    /// whether it did: false if another answer was kept first (the first request's, or a
    /// recovered one), which stays.
    async fn idempotency_finish(
        &self,
        merchant: MerchantId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> StoreResult<bool>;
    /// Forgets idempotency keys created before `before` (past their retention). Returns how many.
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> StoreResult<u64>;
    /// Drops an in-flight claim whose request changed nothing, so the same key may run again.
    async fn idempotency_release(&self, merchant: MerchantId, key: &str) -> StoreResult<()>;
}

/// The log of channel notifications, raw, as they arrived.
#[async_trait]
pub trait InboundStore: Send + Sync {
    /// Logs a verified raw notification with what became of it. (One that changed a payment's
    /// state is logged by that transition instead, in the same transaction.)
    async fn log_inbound(&self, inbound: &InboundRecord) -> StoreResult<()>;
    /// Whether a notification with this channel id was already applied (or found unchanged).
    async fn inbound_already_applied(
        &self,
        channel: ChannelKind,
        account: AccountId,
        notify_id: &str,
    ) -> StoreResult<bool>;
}

/// The background work: payments and refunds the sweeper checks, deliveries the dispatcher
/// sends. A claim leases its rows to the caller: no other claim gets them until the lease ends,
/// and a lease that ends (its holder died) lets another instance take the row over.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Pending payments, and settled ones with an attempt still watched (a closed payment's QR
    /// code, the other attempts of a succeeded one), whose next check is due, leased to the
    /// caller until `lease_until`.
    async fn claim_due_payments(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRecord>>;
    async fn schedule_payment_check(&self, id: PaymentId, at: OffsetDateTime) -> StoreResult<()>;
    /// Nothing more to learn about this payment from its channel.
    async fn stop_payment_checks(&self, id: PaymentId) -> StoreResult<()>;
    async fn claim_due_refunds(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<RefundRecord>>;
    async fn schedule_refund_check(&self, id: RefundId, at: OffsetDateTime) -> StoreResult<()>;
    /// Extends the lease on a claimed payment to `until`, only if the caller still holds it (the
    /// lease it holds ends at `held`): a lease that ran out and was claimed by another sweeper
    /// is theirs. Returns whether the caller holds the payment now.
    async fn renew_payment_lease(
        &self,
        id: PaymentId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// The same for a claimed refund.
    async fn renew_refund_lease(
        &self,
        id: RefundId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Deliveries due now, leased to the caller until `lease_until`.
    async fn claim_due_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Extends the lease on a claimed delivery to `until`, only if the caller still holds it
    /// (its lease ends at `held`). Returns whether the caller holds the delivery now.
    async fn renew_delivery_lease(
        &self,
        delivery_id: &str,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Records one try at a claimed delivery and where the delivery goes next; ends its lease.
    async fn record_delivery_attempt(
        &self,
        delivery_id: &str,
        attempt: &DeliveryAttemptRecord,
        next: DeliveryNext,
    ) -> StoreResult<()>;
    /// How many payments and refunds are due for a check at `now` and not leased.
    async fn sweeper_backlog(&self, now: OffsetDateTime) -> StoreResult<SweeperBacklog>;
}

/// The operators' side: their tokens and admin sessions, what they did, and the views across
/// merchants the admin page shows (an operator sees every merchant's objects, of both modes).
#[async_trait]
pub trait OperatorStore: Send + Sync {
    async fn add_operator_token(&self, token: &OperatorTokenRecord) -> StoreResult<()>;
    /// The token whose SHA-256 hash is `token_hash`.
    async fn operator_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<OperatorTokenRecord>>;
    /// Opens a session; sessions expired by `session.created_at` are deleted in passing.
    async fn create_admin_session(&self, session: &AdminSessionRecord) -> StoreResult<()>;
    /// The session whose cookie hashes to `id_hash`, if it has not expired at `now`.
    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<AdminSessionRecord>>;
    /// Ends a session (sign-out).
    async fn end_admin_session(&self, id_hash: &str) -> StoreResult<()>;
    async fn record_operator_action(&self, action: &OperatorActionRecord) -> StoreResult<()>;
    /// What operators did to a payment, oldest first.
    async fn operator_actions(&self, payment: PaymentId) -> StoreResult<Vec<OperatorActionRecord>>;
    /// Payments of every merchant and both modes, newest first.
    async fn admin_payments(&self, filter: &AdminPaymentFilter) -> StoreResult<Vec<PaymentRecord>>;
    /// Every event about one object (a payment, a refund), oldest first.
    async fn object_events(&self, object_id: &str) -> StoreResult<Vec<EventRecord>>;
    /// The notifications logged about a payment, oldest first.
    async fn inbound_for_payment(&self, payment: PaymentId) -> StoreResult<Vec<InboundLogRecord>>;
    /// Payments created in `[from, to)`, counted by channel, bucket of `bucket_ms` and status.
    async fn payment_outcomes(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<OutcomeCount>>;
    /// The commonest failure codes and messages of payments created in `[from, to)`.
    async fn failure_reasons(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FailureReason>>;
}

/// Escrow and profit sharing: receivers, held payments' settlements, and the ledger.
#[async_trait]
pub trait SettlementStore: Send + Sync {
    async fn insert_receiver(&self, receiver: &ReceiverRecord) -> StoreResult<()>;
    /// A receiver of `merchant`, deleted or not (`deleted_at`).
    async fn receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
    ) -> StoreResult<Option<ReceiverRecord>>;
    /// A merchant's receivers of one mode that are not deleted, oldest first.
    async fn list_receivers(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<ReceiverRecord>>;
    /// Marks a receiver deleted (its row stays, for the splits that name it). Returns whether it
    /// existed and was not deleted yet.
    async fn delete_receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    async fn settlement(&self, payment: PaymentId) -> StoreResult<Option<SettlementRecord>>;
    /// Compare-and-set on the settlement's status (`from` may equal `to`: a change of splits
    /// only, as long as nobody changed the status meanwhile). Returns whether it was applied.
    async fn transition_settlement(&self, change: &SettlementChange) -> StoreResult<bool>;
    /// Held or settling settlements whose next check is due, leased to the caller until
    /// `lease_until` (their next check moves there, as for payments).
    async fn claim_due_settlements(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SettlementRecord>>;
    /// When the sweeper looks at this settlement next; `None`: never.
    async fn schedule_settlement_check(
        &self,
        payment: PaymentId,
        at: Option<OffsetDateTime>,
    ) -> StoreResult<()>;
    /// Writes ledger entries of one payment on their own, in one transaction.
    async fn insert_ledger_entries(
        &self,
        merchant: MerchantId,
        livemode: bool,
        entries: &[LedgerEntryRecord],
    ) -> StoreResult<()>;
    /// A merchant's ledger entries, oldest first.
    async fn ledger_entries(
        &self,
        merchant: MerchantId,
        filter: &LedgerFilter,
    ) -> StoreResult<Vec<LedgerEntryRecord>>;
    /// Each account's held and settled balance (`merchant` and each receiver; not `channel`).
    async fn balances(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<BalanceRecord>>;
    /// Every payment, across merchants, whose entries do not balance.
    async fn ledger_imbalances(&self) -> StoreResult<Vec<LedgerImbalance>>;
}

/// Whether the database answers.
#[async_trait]
pub trait Health: Send + Sync {
    /// Readiness: the database answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Everything the gateway keeps: every aggregate's trait, on one backend. Implemented for any
/// type that implements them all, so `Arc<dyn Store>` is what the engine holds.
pub trait Store:
    MerchantStore
    + AccountStore
    + PaymentStore
    + RefundStore
    + OutboxStore
    + IdempotencyStore
    + InboundStore
    + WorkQueue
    + OperatorStore
    + SettlementStore
    + Health
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> Store for T where
    T: MerchantStore
        + AccountStore
        + PaymentStore
        + RefundStore
        + OutboxStore
        + IdempotencyStore
        + InboundStore
        + WorkQueue
        + OperatorStore
        + SettlementStore
        + Health
        + Send
        + Sync
        + std::fmt::Debug
{
}
