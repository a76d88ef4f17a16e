//! Escrow and profit sharing: receivers, held payments, settling them, and the ledger.
//!
//! A held payment's settlement is written with the payment, before the channel is called. Settling
//! fixes each split's amount from what is still held (`paymux_core::plan_splits`) and moves the
//! money in the ledger in the same transaction as the settlement's new state and its event.
//!
//! Where the money is held depends on the channel (docs/settlement.md). At a channel that freezes
//! the funds itself (WeChat profit sharing, Alipay royalty: `Channel::holds_funds`), the payment
//! is created with the hold and settled by the channel's share and release calls (`sharing.rs`).
//! Elsewhere (UnionPay) paymux holds it: the channel takes the payment as usual and paymux keeps it
//! as held in its ledger until it settles, in one transaction here.

use paymux_core::{
    Channel, ChannelError, ChannelKind, EventId, EventType, LedgerKind, PaymentId, PaymentStatus,
    ReceiverAccount, ReceiverId, SettlementError, SettlementStatus, SplitPlan, SplitRequest,
    SplitStatus, held_amount, plan_splits, validate_splits,
};
use paymux_store::{
    BalanceRecord, LedgerBucket, LedgerEntryRecord, LedgerFilter, LedgerImbalance,
    MERCHANT_ACCOUNT, NewEvent, PaymentRecord, ReceiverRecord, SettlementChange, SettlementRecord,
    SplitRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::endpoints::Caller;
use crate::engine::{Engine, now_ms};
use crate::error::EngineError;
use crate::objects::{EventObject, Payment, rfc3339};
use crate::payments::text;

/// The longest `auto_settle_after`: WeChat's freeze lasts at most 30 days.
const MAX_AUTO_SETTLE_AFTER: i64 = 30 * 24 * 60 * 60;

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput { field, message: message.into() }
}

fn rejected(code: &'static str, field: Option<&'static str>, message: String) -> EngineError {
    EngineError::Rejected { code, field, message }
}

/// `POST /v1/receivers`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReceiverRequest {
    /// The receiver's name (for WeChat `MERCHANT_ID` receivers: the merchant's registered name).
    #[schema(value_type = String, required = true)]
    pub name: Option<String>,
    /// The receiver's account on each channel it receives on; at least one.
    #[schema(value_type = ReceiverAccounts, required = true)]
    pub accounts: Option<ReceiverAccounts>,
}

/// A receiver's account per channel.
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverAccounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wechat: Option<ChannelReceiverAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay: Option<ChannelReceiverAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionpay: Option<ChannelReceiverAccount>,
}

/// One channel's account of a receiver: WeChat `type` `MERCHANT_ID` or `PERSONAL_OPENID` with a
/// `relation_type`; Alipay `type` `userId`, `loginName` or `openId`; UnionPay any label of the
/// account paymux's ledger pays (the payout is outside the channel).
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelReceiverAccount {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation_type: Option<String>,
}

/// WeChat's relation types, less `CUSTOM` (it needs a `custom_relation` paymux does not take).
const WECHAT_RELATIONS: [&str; 10] = [
    "SERVICE_PROVIDER",
    "STORE",
    "STAFF",
    "STORE_OWNER",
    "PARTNER",
    "HEADQUARTER",
    "BRAND",
    "DISTRIBUTOR",
    "USER",
    "SUPPLIER",
];

impl ReceiverAccounts {
    fn get(&self, channel: ChannelKind) -> Option<&ChannelReceiverAccount> {
        match channel {
            ChannelKind::Wechat => self.wechat.as_ref(),
            ChannelKind::Alipay => self.alipay.as_ref(),
            ChannelKind::Unionpay => self.unionpay.as_ref(),
        }
    }

    /// The receiver's account on `channel` as its adapter takes it; `name` is the receiver's
    /// (WeChat and Alipay check it against the account holder).
    pub(crate) fn channel_account(
        &self,
        channel: ChannelKind,
        name: &str,
    ) -> Option<ReceiverAccount> {
        let a = self.get(channel)?;
        Some(ReceiverAccount {
            kind: a.kind.clone().unwrap_or_default(),
            account: a.account.clone()?,
            name: Some(name.to_owned()),
            relation_type: a.relation_type.clone(),
        })
    }

    fn validate(&self) -> Result<(), EngineError> {
        if self.wechat.is_none() && self.alipay.is_none() && self.unionpay.is_none() {
            return Err(invalid(
                "accounts",
                "accounts needs at least one of wechat, alipay, unionpay",
            ));
        }
        if let Some(w) = &self.wechat {
            text(w.account.clone(), "accounts.wechat.account", 64)?.ok_or_else(|| {
                invalid("accounts.wechat.account", "accounts.wechat.account is required")
            })?;
            match w.kind.as_deref() {
                Some("MERCHANT_ID" | "PERSONAL_OPENID") => {}
                _ => {
                    return Err(invalid(
                        "accounts.wechat.type",
                        "accounts.wechat.type must be MERCHANT_ID or PERSONAL_OPENID",
                    ));
                }
            }
            if !w.relation_type.as_deref().is_some_and(|r| WECHAT_RELATIONS.contains(&r)) {
                return Err(invalid(
                    "accounts.wechat.relation_type",
                    format!(
                        "accounts.wechat.relation_type must be one of {}",
                        WECHAT_RELATIONS.join(", ")
                    ),
                ));
            }
        }
        if let Some(a) = &self.alipay {
            text(a.account.clone(), "accounts.alipay.account", 100)?.ok_or_else(|| {
                invalid("accounts.alipay.account", "accounts.alipay.account is required")
            })?;
            if !matches!(a.kind.as_deref(), Some("userId" | "loginName" | "openId")) {
                return Err(invalid(
                    "accounts.alipay.type",
                    "accounts.alipay.type must be userId, loginName or openId",
                ));
            }
            if a.relation_type.is_some() {
                return Err(invalid(
                    "accounts.alipay.relation_type",
                    "alipay accounts take no relation_type",
                ));
            }
        }
        if let Some(u) = &self.unionpay {
            text(u.account.clone(), "accounts.unionpay.account", 64)?.ok_or_else(|| {
                invalid("accounts.unionpay.account", "accounts.unionpay.account is required")
            })?;
            if u.kind.is_some() || u.relation_type.is_some() {
                return Err(invalid("accounts.unionpay", "unionpay accounts take only account"));
            }
        }
        Ok(())
    }
}

/// A receiver as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Receiver {
    pub id: String,
    /// Always `"receiver"`.
    pub object: &'static str,
    pub name: String,
    #[schema(value_type = Object)]
    pub accounts: Value,
    /// What each channel answered when paymux registered the receiver there (empty where the
    /// channel needs no registration).
    #[schema(value_type = Object)]
    pub registrations: Value,
    pub created_at: String,
    pub livemode: bool,
}

impl From<&ReceiverRecord> for Receiver {
    fn from(r: &ReceiverRecord) -> Self {
        Self {
            id: r.id.to_string(),
            object: "receiver",
            name: r.name.clone(),
            accounts: r.accounts.clone(),
            registrations: r.registrations.clone(),
            created_at: rfc3339(r.created_at),
            livemode: r.livemode,
        }
    }
}

/// `settlement` on `POST /v1/payments`: hold the funds for splitting later.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementRequest {
    /// Must be `true`.
    #[schema(value_type = bool, required = true)]
    pub hold: Option<bool>,
    #[schema(value_type = Vec<SplitInput>, required = true)]
    pub splits: Option<Vec<SplitInput>>,
    /// Seconds after the payment is created at which the sweeper settles it if the merchant has
    /// not (1 to 30 days' worth).
    #[schema(value_type = Option<i64>)]
    pub auto_settle_after: Option<Value>,
}

/// One split: a receiver and its commission in basis points of the amount held at settlement.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitInput {
    #[schema(value_type = String, required = true)]
    pub receiver: Option<String>,
    #[schema(value_type = u32, required = true, minimum = 1, maximum = 10000)]
    pub ratio_bps: Option<Value>,
}

/// A held payment's settlement as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Settlement {
    /// `held`, `settling`, `settled` or `failed`.
    pub status: &'static str,
    pub splits: Vec<Split>,
    pub auto_settle_at: Option<String>,
    pub settled_at: Option<String>,
}

/// One receiver's split.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Split {
    pub receiver: String,
    pub ratio_bps: u32,
    /// Fen, fixed when the settlement starts; `null` while held.
    pub amount: Option<i64>,
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
    /// Why the channel refused this split (`code: message`), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl From<&SettlementRecord> for Settlement {
    fn from(s: &SettlementRecord) -> Self {
        Self {
            status: s.status.as_str(),
            splits: s
                .splits
                .iter()
                .map(|x| Split {
                    receiver: x.receiver.to_string(),
                    ratio_bps: x.ratio_bps,
                    amount: x.amount,
                    status: x.status.as_str(),
                    failure: x.failure.clone(),
                })
                .collect(),
            auto_settle_at: s.auto_settle_at.map(rfc3339),
            settled_at: s.settled_at.map(rfc3339),
        }
    }
}

/// A held payment's settlement, checked and ready to be written with its payment.
#[derive(Debug)]
pub(crate) struct Hold {
    splits: Vec<SplitRecord>,
    auto_settle_after: Option<i64>,
}

impl Hold {
    /// The settlement row of `payment`, written in the payment's transaction.
    pub(crate) fn record(&self, payment: &PaymentRecord) -> SettlementRecord {
        SettlementRecord {
            payment_id: payment.id,
            merchant_id: payment.merchant_id,
            livemode: payment.livemode,
            status: SettlementStatus::Held,
            splits: self.splits.clone(),
            auto_settle_at: self
                .auto_settle_after
                .map(|s| payment.created_at + time::Duration::seconds(s)),
            settled_at: None,
            release_no: None,
            created_at: payment.created_at,
            updated_at: payment.created_at,
        }
    }
}

/// `GET /v1/ledger`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    pub payment_id: Option<String>,
    /// A receiver's id, or `merchant`.
    pub receiver: Option<String>,
    /// RFC 3339; entries at or after.
    pub from: Option<String>,
    /// RFC 3339; entries before.
    pub to: Option<String>,
    pub limit: Option<u32>,
}

/// A ledger entry as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    pub payment_id: String,
    /// `merchant`, a receiver's id, or `channel` (money entering or leaving through the channel).
    pub account: String,
    /// `held`, `settled` or `external`.
    pub bucket: &'static str,
    /// `paid`, `held`, `refunded`, `split`, `released`, `returned` or `duplicate_refund`.
    pub kind: &'static str,
    /// Fen, signed.
    pub amount: i64,
    pub created_at: String,
}

/// One account's balance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Balance {
    /// `merchant` or a receiver's id.
    pub account: String,
    pub held: i64,
    pub settled: i64,
}

/// The list answers of the ledger routes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
}

fn time_param(
    v: Option<String>,
    field: &'static str,
) -> Result<Option<OffsetDateTime>, EngineError> {
    v.map(|s| {
        OffsetDateTime::parse(&s, &Rfc3339)
            .map_err(|_| invalid(field, format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

impl Engine {
    /// Registers a receiver.
    pub async fn create_receiver(
        &self,
        caller: Caller,
        req: CreateReceiverRequest,
    ) -> Result<Receiver, EngineError> {
        let name =
            text(req.name, "name", 128)?.ok_or_else(|| invalid("name", "name is required"))?;
        let accounts = req.accounts.ok_or_else(|| invalid("accounts", "accounts is required"))?;
        accounts.validate()?;
        let registrations = self.register_receiver(caller, &name, &accounts).await?;
        let record = ReceiverRecord {
            id: ReceiverId::new(),
            merchant_id: caller.merchant,
            livemode: caller.livemode,
            name,
            accounts: serde_json::to_value(&accounts)
                .map_err(|source| EngineError::Encode { what: "receiver accounts", source })?,
            registrations,
            created_at: now_ms(),
            deleted_at: None,
        };
        self.store.insert_receiver(&record).await?;
        Ok(Receiver::from(&record))
    }

    /// Registers the receiver with each of the merchant's channel accounts (of the caller's mode)
    /// whose channel needs it (WeChat add receiver, Alipay relation bind), before anything is
    /// stored: a refusal is the merchant's error (`receiver_refused`) and an unknown outcome asks
    /// for a retry (registering again is harmless), with nothing created either way. Returns
    /// what each account answered, `{"wechat": {"<account id>": "registered"}}`.
    async fn register_receiver(
        &self,
        caller: Caller,
        name: &str,
        accounts: &ReceiverAccounts,
    ) -> Result<Value, EngineError> {
        let mut registrations = serde_json::Map::new();
        for account in self.store.channel_accounts(caller.merchant).await? {
            if account.livemode != caller.livemode {
                continue;
            }
            let Some(receiver) = accounts.channel_account(account.channel, name) else {
                continue;
            };
            let adapter = self.adapter(&account)?;
            if !adapter.holds_funds() {
                continue;
            }
            match adapter.add_receiver(&receiver).await {
                Ok(()) => {}
                Err(ChannelError::Declined { code, message }) => {
                    return Err(rejected(
                        "receiver_refused",
                        Some("accounts"),
                        format!("{} refused the receiver: {code}: {message}", account.channel),
                    ));
                }
                Err(source) => {
                    return Err(EngineError::ChannelCall {
                        source,
                        object: format!("receiver registration at {}", account.channel),
                    });
                }
            }
            let entry = registrations
                .entry(account.channel.as_str())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(m) = entry {
                m.insert(account.id.to_string(), json!("registered"));
            }
        }
        Ok(Value::Object(registrations))
    }

    async fn receiver_record(
        &self,
        caller: Caller,
        id: &str,
    ) -> Result<ReceiverRecord, EngineError> {
        let not_found = || EngineError::NotFound { what: "receiver" };
        let id: ReceiverId = id.parse().map_err(|_| not_found())?;
        self.store
            .receiver(caller.merchant, id)
            .await?
            .filter(|r| caller.sees(r.livemode) && r.deleted_at.is_none())
            .ok_or_else(not_found)
    }

    pub async fn receiver(&self, caller: Caller, id: &str) -> Result<Receiver, EngineError> {
        Ok(Receiver::from(&self.receiver_record(caller, id).await?))
    }

    pub async fn list_receivers(&self, caller: Caller) -> Result<List<Receiver>, EngineError> {
        let rows = self.store.list_receivers(caller.merchant, caller.livemode).await?;
        Ok(List { data: rows.iter().map(Receiver::from).collect() })
    }

    /// Deletes a receiver; the splits that name it keep it.
    pub async fn delete_receiver(&self, caller: Caller, id: &str) -> Result<Receiver, EngineError> {
        let r = self.receiver_record(caller, id).await?;
        if !self.store.delete_receiver(caller.merchant, r.id, now_ms()).await? {
            return Err(EngineError::NotFound { what: "receiver" });
        }
        Ok(Receiver::from(&r))
    }

    /// Checks a create request's `settlement` for a payment on `channel`.
    pub(crate) async fn prepare_hold(
        &self,
        caller: Caller,
        adapter: &dyn Channel,
        req: SettlementRequest,
    ) -> Result<Hold, EngineError> {
        if req.hold != Some(true) {
            return Err(invalid("settlement.hold", "settlement.hold must be true"));
        }
        let channel = adapter.kind();
        let auto_settle_after = req
            .auto_settle_after
            .map(|v| {
                v.as_i64().filter(|s| (1..=MAX_AUTO_SETTLE_AFTER).contains(s)).ok_or_else(|| {
                    invalid(
                        "settlement.auto_settle_after",
                        format!(
                            "settlement.auto_settle_after must be whole seconds from 1 to \
                             {MAX_AUTO_SETTLE_AFTER}"
                        ),
                    )
                })
            })
            .transpose()?;
        let inputs = req
            .splits
            .ok_or_else(|| invalid("settlement.splits", "settlement.splits is required"))?;
        let mut splits = Vec::with_capacity(inputs.len());
        let mut accounts_seen: Vec<String> = Vec::with_capacity(inputs.len());
        for s in inputs {
            let id = s
                .receiver
                .ok_or_else(|| invalid("settlement.splits.receiver", "receiver is required"))?;
            let ratio_bps = s
                .ratio_bps
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| (1..=10_000).contains(r))
                .ok_or_else(|| {
                    invalid(
                        "settlement.splits.ratio_bps",
                        "ratio_bps must be an integer from 1 to 10000 (basis points)",
                    )
                })?;
            let receiver = match self.receiver_record(caller, &id).await {
                Ok(r) => r,
                Err(EngineError::NotFound { .. }) => {
                    return Err(rejected(
                        "unknown_receiver",
                        Some("settlement.splits.receiver"),
                        format!("no such receiver {id:?}"),
                    ));
                }
                Err(e) => return Err(e),
            };
            let accounts: ReceiverAccounts =
                serde_json::from_value(receiver.accounts.clone()).unwrap_or_default();
            let Some(account) = accounts.get(channel).and_then(|a| a.account.clone()) else {
                return Err(rejected(
                    "receiver_without_account",
                    Some("settlement.splits.receiver"),
                    format!("receiver {id} has no {channel} account"),
                ));
            };
            // Two receivers paid into one account could not be told apart in the channel's
            // answer.
            if accounts_seen.contains(&account) {
                return Err(rejected(
                    "invalid_splits",
                    Some("settlement.splits.receiver"),
                    format!("two receivers of these splits share the {channel} account {account}"),
                ));
            }
            accounts_seen.push(account);
            splits.push(SplitRequest { receiver: receiver.id, ratio_bps });
        }
        validate_splits(&splits, channel, adapter.max_share_bps()).map_err(|e| {
            let code = match e {
                SettlementError::OverCap { .. } => "ratio_over_cap",
                _ => "invalid_splits",
            };
            rejected(code, Some("settlement.splits"), e.to_string())
        })?;
        Ok(Hold {
            splits: splits
                .into_iter()
                .map(|s| SplitRecord {
                    receiver: s.receiver,
                    ratio_bps: s.ratio_bps,
                    amount: None,
                    status: SplitStatus::Pending,
                    account: None,
                    out_order_no: None,
                    failure: None,
                })
                .collect(),
            auto_settle_after,
        })
    }

    /// Checks that a held payment can be held on `adapter`'s channel too (a new attempt there):
    /// every receiver has an account on it, and the splits fit its cap.
    pub(crate) async fn check_hold_on(
        &self,
        caller: Caller,
        adapter: &dyn Channel,
        s: &SettlementRecord,
    ) -> Result<(), EngineError> {
        let channel = adapter.kind();
        for split in &s.splits {
            let accounts = self
                .store
                .receiver(caller.merchant, split.receiver)
                .await?
                .and_then(|r| serde_json::from_value::<ReceiverAccounts>(r.accounts).ok());
            if accounts.is_none_or(|a| a.get(channel).is_none()) {
                return Err(rejected(
                    "receiver_without_account",
                    Some("channel"),
                    format!(
                        "the payment is held and its receiver {} has no {channel} account",
                        split.receiver
                    ),
                ));
            }
        }
        validate_splits(&split_requests(s), channel, adapter.max_share_bps())
            .map_err(|e| rejected("ratio_over_cap", Some("channel"), e.to_string()))
    }

    /// Settles a held payment (idempotent: a settled payment is answered as it is).
    pub async fn settle(&self, caller: Caller, id: &str) -> Result<Payment, EngineError> {
        let p = self.payment_record(caller, id).await?;
        self.settle_payment(&p).await?;
        let p = self.payment_record(caller, id).await?;
        self.payment_object(&p).await
    }

    /// Settles a held payment: at its channel when the channel holds the funds, else in paymux's
    /// ledger. A settled payment is left as it is.
    pub(crate) async fn settle_payment(&self, p: &PaymentRecord) -> Result<(), EngineError> {
        let Some(s) = self.store.settlement(p.id).await? else {
            return Err(rejected(
                "payment_not_held",
                None,
                "the payment was not created with settlement.hold".into(),
            ));
        };
        if s.status == SettlementStatus::Settled {
            return Ok(());
        }
        if p.status != PaymentStatus::Succeeded {
            return Err(rejected(
                "payment_not_paid",
                None,
                format!("the payment is {}; only a succeeded payment settles", p.status),
            ));
        }
        // `amount_reserved` counts every refund not failed; past `amount_refunded`, one is pending.
        if p.amount_reserved > p.amount_refunded {
            return Err(rejected(
                "refund_pending",
                None,
                "a refund of this payment is still pending; settle once it is final".into(),
            ));
        }
        let (adapter, attempt) = self.adapter_and_attempt(p).await?;
        if adapter.holds_funds() {
            return crate::sharing::settle_at_channel(self, p, s, &*adapter, &attempt).await;
        }
        self.settle_in_ledger(p, &s).await
    }

    /// Settles a payment on the paymux-side hold: the splits and the release are ledger
    /// movements, written with the settlement's new state and its event in one transaction.
    async fn settle_in_ledger(
        &self,
        p: &PaymentRecord,
        s: &SettlementRecord,
    ) -> Result<(), EngineError> {
        let plan = plan(p, s);
        let at = strictly_after(s.updated_at);
        let mut entries = Vec::new();
        let mut splits = Vec::with_capacity(s.splits.len());
        for (split, amount) in s.splits.iter().zip(&plan.amounts) {
            entries.extend(receiver_entries(p.id, split.receiver, *amount, at));
            splits.push(SplitRecord {
                amount: Some(*amount),
                status: SplitStatus::Succeeded,
                ..split.clone()
            });
        }
        entries.extend(release_entries(p.id, plan.merchant, at));
        let settled = SettlementRecord {
            status: SettlementStatus::Settled,
            splits: splits.clone(),
            settled_at: Some(at),
            updated_at: at,
            ..s.clone()
        };
        let (kind, data) =
            settlement_event(self, p, &settled, EventType::SettlementSucceeded).await?;
        let change = SettlementChange {
            payment_id: p.id,
            merchant_id: p.merchant_id,
            from: s.status,
            from_updated_at: s.updated_at,
            to: SettlementStatus::Settled,
            release_no: None,
            expect_refunds: Some((p.amount_reserved, p.amount_refunded)),
            splits,
            settled_at: Some(at),
            next_check_at: None,
            entries,
            events: vec![NewEvent { id: EventId::new(), kind, object_id: p.id.to_string(), data }],
            at,
        };
        // Lost a race with another settle: whoever won settled it.
        self.store.transition_settlement(&change).await?;
        Ok(())
    }

    /// The sweeper's look at a settlement whose `auto_settle_at` came: settles it once its
    /// payment has succeeded; waits while the payment is pending or a refund of it is; stops for a
    /// payment that will never be paid.
    pub(crate) async fn auto_settle(&self, s: &SettlementRecord, retry_in: time::Duration) {
        let again = |why: &str| {
            tracing::info!(payment = %s.payment_id, why, "auto-settle postponed");
            Some(now_ms() + retry_in)
        };
        let next = match self.store.payment_by_id(s.payment_id).await {
            Ok(Some(p)) if p.status == PaymentStatus::Succeeded => {
                match self.settle_payment(&p).await {
                    // A settled settlement is off the queue (its transition cleared the check).
                    Ok(()) => return,
                    Err(e) => again(&e.to_string()),
                }
            }
            Ok(Some(p)) if p.status == PaymentStatus::Pending => again("payment pending"),
            Ok(Some(_)) | Ok(None) => None,
            Err(e) => again(&e.to_string()),
        };
        if let Err(e) = self.store.schedule_settlement_check(s.payment_id, next).await {
            tracing::warn!(payment = %s.payment_id, error = %e, "could not schedule the settlement check");
        }
    }

    pub async fn ledger(
        &self,
        caller: Caller,
        q: LedgerQuery,
    ) -> Result<List<LedgerEntry>, EngineError> {
        let payment_id = q
            .payment_id
            .map(|s| s.parse::<PaymentId>())
            .transpose()
            .map_err(|_| invalid("payment_id", "payment_id must be a payment id (pay_...)"))?;
        let filter = LedgerFilter {
            livemode: caller.livemode,
            payment_id,
            account: q.receiver,
            from: time_param(q.from, "from")?,
            to: time_param(q.to, "to")?,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
        };
        let rows = self.store.ledger_entries(caller.merchant, &filter).await?;
        Ok(List {
            data: rows
                .iter()
                .map(|e| LedgerEntry {
                    id: e.id.clone(),
                    payment_id: e.payment_id.to_string(),
                    account: e.account.clone(),
                    bucket: e.bucket.as_str(),
                    kind: e.kind.as_str(),
                    amount: e.amount,
                    created_at: rfc3339(e.created_at),
                })
                .collect(),
        })
    }

    pub async fn balances(&self, caller: Caller) -> Result<List<Balance>, EngineError> {
        let rows: Vec<BalanceRecord> =
            self.store.balances(caller.merchant, caller.livemode).await?;
        Ok(List {
            data: rows
                .into_iter()
                .map(|b| Balance { account: b.account, held: b.held, settled: b.settled })
                .collect(),
        })
    }

    /// Every payment whose ledger entries do not balance (`paymux ledger check`).
    pub async fn ledger_imbalances(&self) -> Result<Vec<LedgerImbalance>, EngineError> {
        Ok(self.store.ledger_imbalances().await?)
    }
}

/// The splits of a settlement as the arithmetic takes them.
fn split_requests(s: &SettlementRecord) -> Vec<SplitRequest> {
    s.splits.iter().map(|x| SplitRequest { receiver: x.receiver, ratio_bps: x.ratio_bps }).collect()
}

/// What each split of `s` gets of what `p` still holds (its amount less the refunds so far), and
/// the merchant's remainder.
pub(crate) fn plan(p: &PaymentRecord, s: &SettlementRecord) -> SplitPlan {
    plan_splits(held_amount(p.amount.minor(), p.amount_refunded), &split_requests(s))
}

/// A receiver's share leaving the merchant's held balance for the receiver's settled one.
pub(crate) fn receiver_entries(
    payment: PaymentId,
    receiver: ReceiverId,
    amount: i64,
    at: OffsetDateTime,
) -> Vec<LedgerEntryRecord> {
    if amount <= 0 {
        return Vec::new();
    }
    let to = receiver.to_string();
    vec![
        LedgerEntryRecord::new(
            payment,
            MERCHANT_ACCOUNT,
            LedgerBucket::Held,
            LedgerKind::Split,
            -amount,
            at,
        ),
        LedgerEntryRecord::new(payment, to, LedgerBucket::Settled, LedgerKind::Split, amount, at),
    ]
}

/// The rest of a held payment released to the merchant: from its held balance to its settled one.
pub(crate) fn release_entries(
    payment: PaymentId,
    amount: i64,
    at: OffsetDateTime,
) -> Vec<LedgerEntryRecord> {
    if amount <= 0 {
        return Vec::new();
    }
    vec![
        LedgerEntryRecord::new(
            payment,
            MERCHANT_ACCOUNT,
            LedgerBucket::Held,
            LedgerKind::Released,
            -amount,
            at,
        ),
        LedgerEntryRecord::new(
            payment,
            MERCHANT_ACCOUNT,
            LedgerBucket::Settled,
            LedgerKind::Released,
            amount,
            at,
        ),
    ]
}

/// A settlement event's type and data: the payment with the settlement as it now is.
pub(crate) async fn settlement_event(
    engine: &Engine,
    p: &PaymentRecord,
    s: &SettlementRecord,
    kind: EventType,
) -> Result<(EventType, Value), EngineError> {
    let attempts = engine.store.attempts(p.id).await?;
    let mut data = EventObject::payment(p, &attempts).to_value();
    data["settlement"] = serde_json::to_value(Settlement::from(s))
        .map_err(|source| EngineError::Encode { what: "settlement", source })?;
    Ok((kind, data))
}

/// The time of a settlement change made now, strictly after the last one (`before`): changes
/// are compared on it.
pub(crate) fn strictly_after(before: OffsetDateTime) -> OffsetDateTime {
    now_ms().max(before + time::Duration::milliseconds(1))
}
